"""The default generation backend: transformers models on left-padded token ids.

``engine: loop`` (the default) is the backend's own decode loop over a ``DynamicCache``, built for
GRPO's groups: each distinct prompt is prefilled once and its cache shared by the rows that repeat it;
a row leaves the batch as soon as it emits a stop token, so decode runs on live rows only; tokens are
drawn by inverse-CDF sampling (one uniform per row) and only the sampled token's log-prob is kept.
``engine: generate`` calls ``model.generate``; the loop falls back to it, with one warning, when the
model's generation config asks for a processor the loop does not implement (a repetition penalty, ...).

Either way the behaviour log-probs are the log-softmax of the processed scores (after temperature,
top-k, top-p, exactly transformers' warpers) at the sampled token: the distribution actually sampled.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Literal

import torch
from pydantic import Field

from feedback_rl import Backend, Generation, PluginOptions, SamplingParams, hookimpl
from feedback_rl.tokens import pad_id, position_ids

# generation-config fields whose processors only model.generate applies, with the value that
# leaves the distribution alone (None is neutral for every one)
NEUTRAL = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
           "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "force_words_ids": None, "min_length": 0,
           "min_new_tokens": 0, "typical_p": 1.0, "min_p": None, "top_h": None, "epsilon_cutoff": 0.0,
           "eta_cutoff": 0.0, "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
           "forced_bos_token_id": None, "forced_eos_token_id": None, "exponential_decay_length_penalty": None,
           "guidance_scale": 1.0, "watermarking_config": None, "num_beams": 1, "num_return_sequences": 1,
           "penalty_alpha": None, "dola_layers": None}

_FORWARD_PARAMS: dict[type, frozenset[str]] = {}


class HFBackend(Backend):
    name = "hf"

    class Options(PluginOptions):
        engine: Literal["loop", "generate"] = Field(
            "loop", description="loop: the backend's own decode loop (one prefill per distinct prompt, finished "
                                "rows leave the batch); generate: transformers' model.generate")

    def __init__(self, options: PluginOptions, context=None):
        super().__init__(options, context)
        self._warned: set[str] = set()

    def generate(self, model, tokenizer, prompt_ids: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        stops = list(sampling.stop_token_ids) or [tokenizer.eos_token_id]
        if self.options.engine == "loop":
            why = loop_refusal(model)
            if why is None:
                return decode(model, prompt_ids, sampling, stops, pad_id(tokenizer))
            self._warn_once(f"hf backend: {why}; generating with model.generate instead of the decode loop")
        return hf_generate(model, prompt_ids, sampling, stops, pad_id(tokenizer))

    def _warn_once(self, message: str) -> None:
        if message in self._warned:
            return
        self._warned.add(message)
        warn = getattr(self.context, "warn", None)
        warn(message) if warn is not None else warnings.warn(message, stacklevel=3)


def left_pad(prompts: list, pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, left-padded: every prompt ends where generation starts."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        attn[i, width - len(p):] = 1
    return ids.to(device), attn.to(device)


def hf_generate(model, prompt_ids, sampling: SamplingParams, stops: list[int], pad: int) -> list[Generation]:
    """``model.generate`` with the processed scores kept; the core cuts each completion at its first stop."""
    ids, attn = left_pad(prompt_ids, pad, next(model.parameters()).device)
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad, eos_token_id=stops,
                  return_dict_in_generate=True, output_scores=True)
    if sampling.greedy:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                      top_k=sampling.top_k or None)
    device = ids.device
    # model.generate samples from the global generator: a seeded call seeds it for its duration
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=sampling.seed is not None):
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        out = model.generate(input_ids=ids, attention_mask=attn, **kwargs)
    new = out.sequences[:, ids.shape[1]:]
    logps = None
    if out.scores and new.shape[1]:
        scores = torch.stack(out.scores, dim=1).float()   # [B, T, V]
        logps = torch.log_softmax(scores, -1).gather(-1, new.unsqueeze(-1)).squeeze(-1).cpu()
    return [Generation(list(p), new[i].tolist(), logps[i] if logps is not None else None, truncated=False)
            for i, p in enumerate(prompt_ids)]


def inner_model(model):
    """The transformers model under a DDP or peft wrapper (whose forward takes ``**kwargs``)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


def forward_params(model) -> frozenset[str]:
    """The keywords the model class's forward takes (transformers 5.24 names the KV cache ``cache``, 5.19
    ``past_key_values``); read once per class."""
    kind = type(model)
    if kind not in _FORWARD_PARAMS:
        _FORWARD_PARAMS[kind] = frozenset(inspect.signature(kind.forward).parameters)
    return _FORWARD_PARAMS[kind]


def loop_refusal(model) -> str | None:
    """Why the decode loop would not sample what ``model.generate`` samples for this model; None when it would."""
    inner = inner_model(model)
    config = getattr(inner, "config", None)
    params = forward_params(inner)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return f"{type(inner).__name__} is not a decoder-only transformers model"
    if "use_cache" not in params or not {"cache", "past_key_values"} & params:
        return f"{type(inner).__name__}'s forward takes no KV cache"
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return "a prompt-learning peft adapter feeds virtual tokens the loop does not"
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer
    layers = DynamicCache(config=config.get_text_config(decoder=True)).layers
    if not all(isinstance(layer, DynamicLayer) for layer in layers):
        return f"{type(inner).__name__} keeps a cache other than key/value tensors"
    gen = getattr(inner, "generation_config", None)
    asked = [f"{k}={getattr(gen, k)!r}" for k, neutral in NEUTRAL.items()
             if getattr(gen, k, None) not in (None, neutral, [], {})]
    if asked:
        return f"the model's generation_config asks for {', '.join(asked)}"
    return None


def warpers(sampling: SamplingParams) -> list:
    """transformers' own temperature, top-k and top-p warpers, in ``generate``'s order."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
    if sampling.greedy:
        return []
    out = []
    if sampling.temperature != 1.0:
        out.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        out.append(TopKLogitsWarper(top_k=sampling.top_k))
    if sampling.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=sampling.top_p))
    return out


def sample_inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of ``probs`` (``[B, V]``, non-negative, rows need not sum to 1): the first
    index whose cumulative mass exceeds a uniform draw. One uniform per row; a zero-probability
    token has an empty interval, so it is never drawn."""
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, dtype=cdf.dtype, device=cdf.device, generator=generator) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # rounding never reaches the end
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def pick(logits: torch.Tensor, processors: list, greedy: bool, inverse_cdf: bool = True,
         generator: torch.Generator | None = None):
    """The next token of each row and its log-prob under the processed distribution, float32.

    The log-prob is the log of the softmax at that token (one pass over the vocabulary fewer than a
    log-softmax, the same value to float rounding)."""
    with torch.autocast(device_type=logits.device.type, enabled=False):
        scores = logits.float()
        for warp in processors:
            scores = warp(None, scores)   # these warpers read the scores only
        probs = torch.softmax(scores, -1)
        if greedy:
            tok = scores.argmax(-1)
        elif inverse_cdf:
            tok = sample_inverse_cdf(probs, generator)
        else:
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return tok, probs.gather(-1, tok.unsqueeze(-1)).squeeze(-1).log()


def prefill(model, prompt_ids: list[list[int]], pad: int, share: bool = True):
    """Run the prompts through the model once: logits of each row's next token ``[N, V]``, the
    ``DynamicCache``, the attention mask and the forward's cache keywords. With ``share`` each
    distinct prompt (wherever its copies sit) is computed once and its cache row repeated for every copy."""
    from transformers import DynamicCache
    device = next(model.parameters()).device
    inner = inner_model(model)
    params = forward_params(inner)
    cache = DynamicCache(config=inner.config.get_text_config(decoder=True))
    kw = {"cache" if "cache" in params else "past_key_values": cache, "use_cache": True}
    first: dict[tuple, int] = {}
    row_of = [first.setdefault(tuple(p), len(first)) for p in prompt_ids]
    ids, attn = left_pad(list(first) if share else prompt_ids, pad, device)
    head = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    out = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn), **kw, **head)
    logits = out.logits[:, -1]
    if share and len(first) < len(prompt_ids):
        index = torch.tensor(row_of, device=device)
        cache.batch_select_indices(index)
        logits, attn = logits[index], attn[index]
    return logits, cache, attn, kw


@torch.no_grad()
def decode(model, prompt_ids: list[list[int]], sampling: SamplingParams, stops: list[int], pad: int, *,
           share_prefill: bool = True, drop_finished: bool = True, inverse_cdf: bool = True) -> list[Generation]:
    """The decode loop. Each completion ends with its stop token or at ``max_new_tokens``.

    The keywords switch each saving off, for the benchmark's breakdown: ``share_prefill`` (one
    prefill per distinct prompt), ``drop_finished`` (finished rows leave the batch),
    ``inverse_cdf`` (else ``torch.multinomial``)."""
    n, steps = len(prompt_ids), sampling.max_new_tokens
    if steps <= 0:
        return [Generation(list(p), [], None, truncated=False) for p in prompt_ids]
    logits, cache, attn, kw = prefill(model, prompt_ids, pad, share_prefill)
    device = logits.device
    tokens = torch.full((n, steps), pad, dtype=torch.long, device=device)
    logps = torch.zeros((n, steps), dtype=torch.float32, device=device)
    lengths = torch.full((n,), steps, dtype=torch.long, device=device)
    stopped = torch.zeros(n, dtype=torch.bool, device=device)
    live = torch.arange(n, device=device)          # the output rows still in the batch
    stop_ids = torch.tensor(stops, device=device)
    processors = warpers(sampling)
    # a seeded call draws from a generator of its own: the trainer's use of the global one (in another
    # thread, under rollout.overlap) cannot change what it samples
    generator = None if sampling.seed is None else torch.Generator(device).manual_seed(sampling.seed)
    for t in range(steps):
        tok, lp = pick(logits, processors, sampling.greedy, inverse_cdf, generator)
        tokens[live, t], logps[live, t] = tok, lp
        hit = torch.isin(tok, stop_ids) & ~stopped[live]
        lengths[live[hit]] = t + 1
        stopped[live[hit]] = True
        if t == steps - 1 or bool(stopped.all()):
            break
        if drop_finished and bool(hit.any()):
            keep = (~hit).nonzero().squeeze(-1)
            live, tok, attn = live[keep], tok[keep], attn[keep]
            cache.batch_select_indices(keep)
        attn = torch.cat([attn, attn.new_ones((len(live), 1))], dim=-1)
        out = model(input_ids=tok.unsqueeze(-1), attention_mask=attn, position_ids=attn.sum(-1, keepdim=True) - 1,
                    **kw)
        logits = out.logits[:, -1]
    tokens, logps, lengths = tokens.cpu(), logps.cpu(), lengths.tolist()
    return [Generation(list(p), tokens[i, :lengths[i]].tolist(), logps[i, :lengths[i]].clone(),
                       truncated=False)
            for i, p in enumerate(prompt_ids)]


@hookimpl
def frl_register_backends(register):
    register(HFBackend)
