"""Generation for ``frl serve``: concurrent requests batched into one HF ``generate`` call, streamed per token.

A queue collects requests for ``wait_ms`` (or until ``max_batch`` rows), groups them by sampling setting,
and runs each group through ``model.generate`` in a worker thread. Two small hooks do the serving: a forward
hook keeps each step's log-softmax (the model's raw distribution, as vLLM reports it), and a stopping
criterion hands every new token to its row, which decodes it, applies stop strings and ``max_tokens``, and
sends the new text to the waiting request. Sampling follows the request; settings of the model's
generation_config the API has no name for (a repetition penalty) apply as well, as in vLLM.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from feedback_rl.models import stop_token_ids
from feedback_rl.server import Ask, Job, Piece, Text, Tok, chat_prompt, ApiError


class HFJob(Job):
    """One request: its rows (one per choice) and the queue their pieces arrive on."""

    def __init__(self, prompts: list[tuple[str, list[int]]], ask: Ask, text: Text, stop_ids: list[int]):
        super().__init__(prompts, ask)
        self.rows = [Row(self, p * ask.n + j, ids, prompt, text, stop_ids)
                     for p, (prompt, ids) in enumerate(prompts) for j in range(ask.n)]

    def cancel(self) -> None:
        super().cancel()
        for row in self.rows:
            row.cancelled = True


class Row:
    """One choice: the tokens generated so far, their text, and how much of it the client has."""

    def __init__(self, job: HFJob, index: int, prompt_ids: list[int], prompt: str, text: Text, stop_ids: list[int]):
        self.job, self.index, self.prompt_ids, self.prompt = job, index, prompt_ids, prompt
        self.text_of, self.stop_ids = text, set(stop_ids)
        self.ids: list[int] = []
        self.text, self.sent = "", 0
        self.pending: list[Tok] = []   # tokens whose text the client has not been sent yet
        self.base = len(prompt) if job.ask.echo else 0   # text offsets count the echoed prompt
        self.hold = max((len(s) for s in job.ask.stop), default=1) - 1
        self.done = self.cancelled = False

    @property
    def ask(self) -> Ask:
        return self.job.ask

    def add(self, token: int, logprob: float | None, top: list[tuple[int, float]] | None) -> None:
        """A new token: decode, cut at a stop, and send whatever text can no longer change."""
        if self.cancelled:
            self.done = True
            return
        self.ids.append(token)
        finish = None
        if token in self.stop_ids:
            finish = "stop"
        else:
            before = len(self.text)
            self.text = self.text_of.decode(self.ids)
            if self.ask.top_logprobs is not None:
                self.pending.append(self._tok(token, logprob, top, self.base + before))
            cuts = [i for i in (self.text.find(s, max(0, before - len(s) + 1)) for s in self.ask.stop) if i >= 0]
            if cuts:
                self.text, finish = self.text[: min(cuts)], "stop"
            elif len(self.ids) >= self.ask.max_tokens:
                finish = "length"
        if finish:
            self.finish(finish)
            return
        safe = len(self.text.rstrip("\ufffd")) - self.hold   # an unfinished character or stop string waits
        if safe > self.sent:
            self._send(safe)

    def finish(self, reason: str) -> None:
        self.done = True
        self._send(len(self.text), reason)

    def _send(self, upto: int, finish: str | None = None) -> None:
        toks = None
        if self.ask.top_logprobs is not None:
            toks = [t for t in self.pending if t.offset - self.base < upto]
            self.pending = [] if finish else self.pending[len(toks):]
        ids = list(self.ids) if finish and self.ask.return_token_ids else None   # with the stop token, as vLLM
        self.job.emit(Piece(self.index, self.text[self.sent: upto], toks, finish, len(self.ids) if finish else 0, ids))
        self.sent = upto

    def _tok(self, token: int, logprob: float | None, top: list[tuple[int, float]] | None, offset: int) -> Tok:
        k = self.ask.top_logprobs
        alts = None if top is None else [(self.text_of.decode([i], False), lp) for i, lp in top[:k]]
        return Tok(self.text_of.decode([token], False), logprob, alts, offset)

    def echo(self, model: Any) -> None:
        """Send the prompt as the reply's first text; with log-probs, each prompt token's (the first has none)."""
        toks = None
        if self.ask.top_logprobs is not None:
            ids = torch.tensor([self.prompt_ids], device=_device(model))
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            chosen = logp.gather(1, ids[0, 1:, None])[:, 0].tolist()
            k = self.ask.top_logprobs
            top = _top(logp, k)
            toks, offset = [], 0
            for i, token in enumerate(self.prompt_ids):
                tok = self._tok(token, chosen[i - 1] if i else None, top[i - 1] if i else None, offset)
                toks.append(tok if i else Tok(tok.text, None, None, 0))
                offset += len(tok.text)
        self.job.emit(Piece(self.index, self.prompt, toks))


def _top(logp: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
    """The ``k`` likeliest (id, log-prob) of each row of ``logp``."""
    if not k:
        return [[] for _ in range(logp.shape[0])]
    vals, idx = logp.topk(k, -1)
    return [list(zip(i, v)) for i, v in zip(idx.tolist(), vals.tolist())]


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


class _Record:
    """Keeps each forward pass's next-token log-softmax: the model's raw distribution, before ``generate``
    applies temperature, top-p or the model's own generation settings (vLLM's default log-probs too)."""

    def __init__(self, model: Any):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a LoRA model's own
        self.logp: torch.Tensor | None = None
        self.handle = inner.register_forward_hook(self._keep)

    def _keep(self, module: Any, args: Any, output: Any) -> None:
        self.logp = torch.log_softmax(output.logits[:, -1].float(), -1)

    def close(self) -> None:
        self.handle.remove()


class _Deliver(StoppingCriteria):
    """Hands each new token to its row; a row is done at a stop id, a stop string or its ``max_tokens``."""

    def __init__(self, rows: list[Row], record: _Record | None):
        self.rows, self.record = rows, record
        self.k = max((r.ask.top_logprobs or 0) for r in rows)

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        new = input_ids[:, -1]
        chosen = top = None
        if self.record is not None and self.record.logp is not None:
            chosen = self.record.logp.gather(1, new[:, None])[:, 0].tolist()
            top = _top(self.record.logp, self.k)
        for b, (row, token) in enumerate(zip(self.rows, new.tolist())):
            if not row.done:
                row.add(token, chosen[b] if chosen else None, top[b] if top else None)
        return torch.tensor([r.done for r in self.rows], dtype=torch.bool, device=input_ids.device)


class Batcher:
    """Collects concurrent requests and runs each sampling setting's rows through one generate call (the
    server's :class:`~feedback_rl.server.Engine`: tools offered as training offers them, no token-in route, no
    sessions)."""

    tools, token_in = True, False

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 16, wait_ms: float = 5.0):
        self.model, self.text = model, Text(tokenizer)
        self.stop_ids = stop_token_ids(tokenizer, model)   # where training's rollouts stop too
        self.pad_id = next((i for i in (tokenizer.pad_token_id, *self.stop_ids) if i is not None), 0)
        self.max_batch, self.wait_s = max_batch, wait_ms / 1000
        self.queue: asyncio.Queue[HFJob] = asyncio.Queue()
        self.stats = {"requests": 0, "batches": 0, "max_batch": 0, "generated_tokens": 0}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    def admit(self, ask: Ask, session: str | None) -> None:
        pass   # parse_ask refused what HF generate cannot do

    def chat_prompt(self, turns: list[dict], tools: list[dict], session: str | None, encode: Any
                    ) -> tuple[str, list[int]]:
        try:
            text = chat_prompt(self.text.tokenizer, turns, tools)
        except Exception as e:  # noqa: BLE001 - a template's own check (e.g. roles must alternate) refused them
            raise ApiError(400, f"messages: the model's chat template refused them: {type(e).__name__}: {e}",
                           param="messages", code="invalid_value") from None
        return text, encode(text, "messages")

    async def submit(self, prompts: list[tuple[str, list[int]]], ask: Ask, session: str | None = None) -> HFJob:
        """Queue a request: ``prompts`` are (text, token ids); its pieces arrive on ``job.pieces()``."""
        job = HFJob(prompts, ask, self.text, self.stop_ids)
        self.stats["requests"] += 1
        await self.queue.put(job)
        return job

    async def _run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            deadline = time.monotonic() + self.wait_s
            while sum(len(j.rows) for j in jobs) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple, list[Row]] = {}
            for job in jobs:
                a = job.ask
                # a seeded request runs alone, so its seed alone decides its samples
                key = (a.greedy, a.temperature, a.top_p, None if a.seed is None else (a.seed, id(job)))
                groups.setdefault(key, []).extend(job.rows)
            for rows in groups.values():
                for start in range(0, len(rows), self.max_batch):
                    part = rows[start: start + self.max_batch]
                    try:
                        await asyncio.to_thread(self._generate, part)
                    except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                        for job in {id(r.job): r.job for r in part}.values():
                            job.emit(e)
                    self.stats["generated_tokens"] += sum(len(r.ids) for r in part)

    @torch.no_grad()
    def _generate(self, rows: list[Row]) -> None:
        self.stats["batches"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(rows))
        was_training = self.model.training
        self.model.eval()
        try:
            for row in rows:
                if row.ask.echo:
                    row.echo(self.model)
            live = [r for r in rows if not r.cancelled and r.ask.max_tokens > 0]
            for row in rows:
                if row not in live:
                    row.finish("length")
            if live:
                self._sample(live)
        finally:
            self.model.train(was_training)
        for row in rows:
            if not row.done:   # generate stopped at the group's longest max_tokens
                row.finish("length")

    def _sample(self, rows: list[Row]) -> None:
        ask, width = rows[0].ask, max(len(r.prompt_ids) for r in rows)
        ids = [[self.pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows]
        mask = [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows]
        device = _device(self.model)
        sampling = {} if ask.greedy else {"temperature": ask.temperature, "top_p": ask.top_p}
        config = GenerationConfig(max_new_tokens=max(r.ask.max_tokens for r in rows), do_sample=not ask.greedy,
                                  top_k=0, eos_token_id=self.stop_ids or None, pad_token_id=self.pad_id, **sampling)
        record = _Record(self.model) if any(r.ask.top_logprobs is not None for r in rows) else None
        if ask.seed is not None:
            torch.manual_seed(ask.seed)
        try:
            self.model.generate(input_ids=torch.tensor(ids, device=device),
                                attention_mask=torch.tensor(mask, device=device), generation_config=config,
                                stopping_criteria=StoppingCriteriaList([_Deliver(rows, record)]))
        finally:
            if record is not None:
                record.close()
