"""Conversations and chat templates: every prompt and offline example is rendered and tokenized here, once.

Rows come in TRL's two formats. Standard: ``prompt`` (and ``completion``, ``chosen``...) are strings,
used raw. Conversational: they are lists of ``{role, content}`` turns, rendered with the tokenizer's chat
template (the recipe's ``model.chat_template`` overrides or supplies one).

An offline example is one token sequence, ``prompt_ids + completion_ids``, with a ``completion_mask``
that is 1 on the tokens the assistant wrote (its content and its end-of-turn token) and 0 on everything
else: user, system and tool turns, and the template's scaffolding. Turn boundaries are found by rendering
the conversation up to each assistant turn, so any template works that renders earlier turns the same
way whatever follows them ("prefix-stable"); one that does not is refused with a clear error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedback_rl.errors import UserError
from feedback_rl.modeling.tool_offer import offer_schemas, row_tools

Turn = dict[str, Any]
Prompt = str | list[Turn]

ROLES = ("system", "user", "assistant", "tool")
CONVERSATIONAL_FIELDS = ("prompt", "completion", "chosen", "rejected", "messages")


@dataclass
class Encoded:
    """One example as tokens: what the model reads (``prompt_ids``) and what it is trained to write."""

    prompt_ids: list[int]
    completion_ids: list[int]
    completion_mask: list[int]   # 1 per completion token that trains
    prompt_text: str             # the prompt as rendered (what the model was prompted with)
    conversational: bool = field(default=False)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def is_conversation(value: Any) -> bool:
    """TRL's conversational format: a list of turns (checked by :func:`turns`)."""
    return isinstance(value, list)


def turns(value: Any, what: str = "the conversation") -> list[Turn]:
    """The turns of a conversation, checked: each a mapping with a string ``role`` and ``content``.

    ``content`` may also be OpenAI's content parts (``[{type: text, text: ...}]``): their text is joined.
    Other keys of a turn (``name``, ``tool_calls``...) are kept for the template.
    """
    if not isinstance(value, list):
        raise UserError(f"{what} must be a list of {{role, content}} turns, got {type(value).__name__}")
    if not value:
        raise UserError(f"{what} is an empty list of turns")
    out = []
    for k, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise UserError(f"{what}: turn {k} must be a mapping with 'role' and 'content', got {type(turn).__name__}")
        for key in ("role", "content"):
            if key not in turn:
                raise UserError(f"{what}: turn {k} has no '{key}' (each turn needs 'role' and 'content')")
        if not isinstance(turn["role"], str) or not turn["role"]:
            raise UserError(f"{what}: turn {k}: 'role' must be a non-empty string (e.g. {', '.join(ROLES)})")
        out.append({**turn, "content": _content(turn["content"], f"{what}: turn {k}")})
    return out


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise UserError(f"{where}: 'content' must be a string (or a list of {{type: text, text}} parts), "
                    f"got {type(content).__name__}")


def with_system(conversation: list[Turn], system_prompt: str | None) -> list[Turn]:
    """``system_prompt`` as a first system turn, unless the conversation starts with one already."""
    if not system_prompt or (conversation and conversation[0]["role"] == "system"):
        return conversation
    return [{"role": "system", "content": system_prompt}] + conversation


def prompt_turns(prompt: Prompt, system_prompt: str | None = None) -> list[Turn]:
    """The prompt as turns: a plain string is one user turn."""
    conv = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else turns(prompt, "prompt")
    return with_system(conv, system_prompt)


def prompt_text(prompt: Prompt, system_prompt: str | None = None) -> str:
    """The prompt as readable text (judges, logs, the labeling app), free of template markup: a plain
    string as it is, a single user turn as its content, longer conversations as ``role: content`` lines."""
    if isinstance(prompt, str) and not system_prompt:
        return prompt
    conv = prompt_turns(prompt, system_prompt)
    if len(conv) == 1 and conv[0]["role"] == "user":
        return conv[0]["content"]
    return "\n".join(f"{t['role']}: {t['content']}" for t in conv)


# --------------------------------------------------------------------------- rendering

def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "the model")


def no_template_message(tokenizer: Any) -> str:
    return (f"the tokenizer of '{_name(tokenizer)}' has no chat template: set model.chat_template "
            "(a Jinja template, or a file holding one) or write the rows as plain strings")


def render(tokenizer: Any, conversation: list[Turn], generation: bool = False, continue_final: bool = True,
           tools: list[dict] | None = None) -> str:
    """The conversation through the chat template. With ``generation``, ready for the model to answer:
    the assistant's header follows (``add_generation_prompt``), or, when the last turn is the
    assistant's, that turn is left open for the model to continue (TRL does the same). ``tools``: the
    JSON schemas passed to a template that renders them (an episode's tools)."""
    if not has_template(tokenizer):
        raise UserError(no_template_message(tokenizer))
    kwargs: dict[str, Any] = {"tools": tools} if tools else {}
    if generation:
        if continue_final and conversation and conversation[-1]["role"] == "assistant":
            kwargs["continue_final_message"] = True
        else:
            kwargs["add_generation_prompt"] = True
    try:
        return tokenizer.apply_chat_template(conversation, tokenize=False, **kwargs)
    except Exception as e:  # noqa: BLE001 - a template's own raise_exception() or a Jinja error: the user's input
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"the chat template of '{_name(tokenizer)}' rejected the conversation: {msg}") from None


def render_prompt(tokenizer: Any, prompt: Prompt, system_prompt: str | None = None,
                  tools: list[dict] | str | None = None) -> str:
    """The text the model is prompted with. A plain string is used raw (TRL's standard format); turns are
    rendered with the chat template and the assistant's header. A system prompt, or ``tools`` (a row's
    ``tools`` column, read by ``row_tools`` and offered as ``tool_offer.py`` says), needs turns."""
    if isinstance(prompt, str):
        if system_prompt or tools:
            what = "rollout.system_prompt" if system_prompt else "the row's tools"
            raise UserError(f"{what} applies to conversations, but the prompt is a plain string "
                            "(write it as turns: [{role: user, content: ...}])")
        return prompt
    conv, schemas, _ = offer_schemas(tokenizer, with_system(turns(prompt, "prompt"), system_prompt), row_tools(tools))
    return render(tokenizer, conv, generation=True, tools=schemas)


def ids(tokenizer: Any, text: str) -> list[int]:
    """Text to token ids with no special tokens added: a rendered template carries its own (BOS included),
    and a plain-string prompt is used raw."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer: Any, prompt: Prompt, system_prompt: str | None = None,
                  tools: list[dict] | str | None = None) -> list[int]:
    """The token ids the model is prompted with: :func:`render_prompt`'s text, tokenized once (the same ids
    ``apply_chat_template(tokenize=True)`` gives; a test holds them equal)."""
    return ids(tokenizer, render_prompt(tokenizer, prompt, system_prompt, tools))


# --------------------------------------------------------------------------- offline examples

def encode_example(tokenizer: Any, prompt: Prompt | None, completion: str | list[Turn],
                   system_prompt: str | None = None, add_eos: bool = True,
                   tools: list[dict] | str | None = None) -> Encoded:
    """An offline example as tokens.

    - plain strings: the prompt's tokens, then the completion's, then EOS (``add_eos``); all trained;
    - ``prompt`` as turns and ``completion`` as turns (or a string: one assistant turn): the prompt rendered
      for generation, then the completion's turns; only the assistant's tokens train;
    - ``prompt=None`` and ``completion`` a whole conversation (SFT ``messages``): everything before the
      first assistant turn is the prompt; every assistant turn trains, nothing else does.

    An assistant turn trains up to and including its end-of-turn EOS; the template's scaffolding after the
    last assistant turn is dropped. Where the template ends a turn with no EOS, ``add_eos`` appends one to
    a conversation that ends with the assistant, so the model learns to stop.

    ``tools`` (the row's function schemas) are offered as a prompt's are (``tool_offer.py``): the template's
    tools branch, or the Hermes description in the system turn, which then does not train.
    """
    if isinstance(prompt, str) and isinstance(completion, str):
        if system_prompt or tools:
            render_prompt(tokenizer, prompt, system_prompt, tools)  # raises: these need turns
        c = ids(tokenizer, completion)
        if add_eos and tokenizer.eos_token_id is not None:
            c.append(tokenizer.eos_token_id)
        return Encoded(ids(tokenizer, prompt), c, [1] * len(c), prompt)
    if isinstance(prompt, str):
        raise UserError("the prompt is a plain string but the completion is turns: write both as turns")
    head = [] if prompt is None else turns(prompt, "prompt")
    tail = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else \
        turns(completion, "the completion" if prompt is not None else "messages")
    conv, schemas, _ = offer_schemas(tokenizer, with_system(head + tail, system_prompt), row_tools(tools))
    first = len(conv) - len(tail)
    trained = [k for k in range(first, len(conv)) if conv[k]["role"] == "assistant"]
    if not trained:
        raise UserError("the conversation has no assistant turn to train on")
    return _encode_turns(tokenizer, conv, trained, add_eos, schemas)


def _encode_turns(tokenizer: Any, conv: list[Turn], trained: list[int], add_eos: bool,
                  tools: list[dict] | None) -> Encoded:
    full_text = render(tokenizer, conv, tools=tools)
    # character boundaries: where each trained assistant turn starts (after its header) and ends
    cuts = []
    for k in trained:
        opened = render(tokenizer, conv[:k], generation=True, continue_final=False, tools=tools) if k \
            else _empty_prompt(tokenizer, tools)
        for text, part in ((opened, "start"),
                           (render(tokenizer, conv[: k + 1], tools=tools), "end")):
            if not full_text.startswith(text):
                raise UserError(f"the chat template of '{_name(tokenizer)}' is not prefix-stable: the conversation "
                                f"rendered up to the {part} of turn {k} is not the beginning of the whole "
                                "conversation (a template that rewrites earlier turns cannot be trained turn by "
                                "turn): set model.chat_template to one that renders each turn the same way")
            cuts.append(len(text))
    if cuts != sorted(cuts):
        raise UserError(f"the chat template of '{_name(tokenizer)}' renders the turns out of order")
    full = ids(tokenizer, full_text)
    bounds = [_token_prefix(tokenizer, full_text[:c], full) for c in cuts]
    if None in bounds:
        # a token straddles a turn boundary (a BPE merge across it): tokenize piece by piece instead, so the
        # prompt's ids are exactly what generation is prompted with
        full, bounds = [], []
        for a, b in zip([0] + cuts, cuts):
            full += ids(tokenizer, full_text[a:b])
            bounds.append(len(full))
    stops = _stop_ids(tokenizer)
    spans = []
    for start, end in zip(bounds[::2], bounds[1::2]):
        last_stop = max((j for j in range(start, end) if full[j] in stops), default=None)
        spans.append((start, end if last_stop is None else last_stop + 1))
    split, stop = spans[0][0], spans[-1][1]
    mask = [0] * (stop - split)
    for start, end in spans:
        mask[start - split: end - split] = [1] * (end - start)
    completion = full[split:stop]
    ends_open = conv[-1]["role"] == "assistant" and not any(t in stops for t in full[spans[-1][0]: stop])
    if add_eos and ends_open and tokenizer.eos_token_id is not None:
        completion.append(tokenizer.eos_token_id)
        mask.append(1)
    return Encoded(full[:split], completion, mask, full_text[:cuts[0]], conversational=True)


def _empty_prompt(tokenizer: Any, tools: list[dict] | None = None) -> str:
    """The generation prompt of an empty conversation (a conversation that opens with the assistant)."""
    try:
        return render(tokenizer, [], generation=True, tools=tools)
    except UserError:
        return ""


def _token_prefix(tokenizer: Any, text: str, full: list[int]) -> int | None:
    """len(ids(text)) when those ids begin ``full``, else None."""
    head = ids(tokenizer, text)
    return len(head) if full[: len(head)] == head else None


def _stop_ids(tokenizer: Any) -> set[int]:
    return {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()


def extract_prompt(chosen: list[Turn], rejected: list[Turn]) -> tuple[list[Turn], list[Turn], list[Turn]]:
    """TRL's implicit prompt: ``chosen`` and ``rejected`` as whole conversations share their first turns;
    those are the prompt. Returns (prompt, chosen's rest, rejected's rest)."""
    chosen, rejected = turns(chosen, "chosen"), turns(rejected, "rejected")
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    if n == len(chosen) or n == len(rejected):
        raise UserError("chosen and rejected must differ after their shared prompt turns")
    return chosen[:n], chosen[n:], rejected[n:]


# --------------------------------------------------------------------------- checking a dataset

def check_rows(rows: Any, tokenizer: Any, context_length: int | None, max_new_tokens: int | None = None,
               system_prompt: str | None = None) -> None:
    """Every row renders and fits, checked with the tokenizer alone (before any model loads); the first
    bad row is one :class:`UserError` line naming ``file:line``.

    Checks each turn's shape; that a conversational row has a chat template to render it; that SFT
    ``messages`` hold an assistant turn; that an offline conversation (``messages``, or ``prompt`` with
    ``completion``/``chosen``/``rejected``) fits in ``context_length`` tokens; and, when ``max_new_tokens``
    is given (the rows are prompts to generate from), that each prompt leaves room for that many tokens.
    ``rows`` is a :class:`feedback_rl.Dataset` (``origin`` and ``lines`` name the place).
    """
    origin = getattr(rows, "origin", "the dataset")
    lines = getattr(rows, "lines", None) or range(1, len(rows) + 1)
    for row, line in zip(rows, lines):
        try:
            _check_row(row, tokenizer, context_length, max_new_tokens, system_prompt)
        except UserError as e:
            raise UserError(f"{origin}:{line}: {e}") from None


def _check_row(row: dict, tokenizer: Any, context: int | None, max_new_tokens: int | None,
               system_prompt: str | None) -> None:
    present = [f for f in CONVERSATIONAL_FIELDS if f in row]
    for f in present:
        if not isinstance(row[f], (str, list)) and not (f == "prompt" and row[f] is None):
            raise UserError(f"field '{f}' must be a string or a list of {{role, content}} turns, "
                            f"got {type(row[f]).__name__}")
        if is_conversation(row[f]):
            turns(row[f], f"field '{f}'")
    tools = row_tools(row.get("tools"))   # a bad tools column is named before anything renders
    conversational = [f for f in present if is_conversation(row[f])]
    if conversational and not has_template(tokenizer):
        raise UserError(f"field '{conversational[0]}' is a conversation, but {no_template_message(tokenizer)}")
    prompt = row.get("prompt")
    if max_new_tokens is not None and prompt is not None:
        n = len(encode_prompt(tokenizer, prompt, system_prompt, tools))
        if context and n + max_new_tokens > context:
            raise UserError(f"prompt is {n} tokens; with max_new_tokens {max_new_tokens} it exceeds the model's "
                            f"context of {context}")
    if "messages" in row:
        if not any(t["role"] == "assistant" for t in turns(row["messages"], "field 'messages'")):
            raise UserError("field 'messages' has no assistant turn: SFT trains on the assistant's turns only")
        _fits(encode_example(tokenizer, None, row["messages"], system_prompt, tools=tools), "messages", context)
    for f in ("completion", "chosen", "rejected"):
        if f not in row:
            continue
        p, c = prompt, row[f]
        if p is None and f != "completion" and all(is_conversation(row.get(k)) for k in ("chosen", "rejected")):
            p, chosen, rejected = extract_prompt(row["chosen"], row["rejected"])
            c = chosen if f == "chosen" else rejected
        if p is None:
            continue  # the optimizer's column check names the missing prompt
        _fits(encode_example(tokenizer, p, c, system_prompt, tools=tools), f, context)


def _fits(enc: Encoded, what: str, context: int | None) -> None:
    if not context:
        return
    if enc.conversational and len(enc) > context:
        raise UserError(f"the conversation ('{what}') is {len(enc)} tokens, longer than the model's context "
                        f"of {context}")
    if len(enc.prompt_ids) > context:  # a plain-string completion is cut to fit; its prompt cannot be
        raise UserError(f"prompt is {len(enc.prompt_ids)} tokens, longer than the model's context of {context}")


# --------------------------------------------------------------------------- templates in recipes

def template_path(value: str, base_dir: Path) -> Path | None:
    """Where ``model.chat_template`` points: None when the value is a template itself (it holds ``{{`` or
    ``{%``), else a file path, relative to the recipe."""
    if "{{" in value or "{%" in value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def read_template(value: str, base_dir: Path) -> str:
    """``model.chat_template``'s text (inline, or read from its file), its Jinja syntax checked."""
    path = template_path(value, base_dir)
    if path is None:
        text, where = value, "model.chat_template"
    elif not path.is_file():
        raise UserError(f"model.chat_template: file not found: {path}")
    else:
        text, where = path.read_text(encoding="utf-8"), f"model.chat_template ({path})"
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:  # another transformers: the template is checked when it first renders
        return text
    try:
        _compile_jinja_template(text)
    except Exception as e:  # noqa: BLE001 - jinja2.TemplateSyntaxError and friends
        line = getattr(e, "lineno", None)
        raise UserError(f"{where}: invalid Jinja template{f' (line {line})' if line else ''}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return text
