"""``frl plan RECIPE``: the peak memory of each stage, estimated from the recipe alone.

No weights load: the model's config is read (``builtin:tiny-gpt2`` from ``model.tiny``, a folder or
hub id with ``AutoConfig``, a ``.gguf`` file's header through the ``gguf`` package) and the model is
built on the meta device, which allocates nothing, to count its parameters exactly. Each stage's
optimizer is built from its validated options and asked for its ``roles()`` and what it trains.

Formulas (bytes; w = bytes per weight of ``model.dtype``: 4 for float32, 2 for bfloat16/float16;
P = policy parameters, Q = parameters of the trunk plus a one-output head (critic, reward model),
h = hidden size, L = layers, V = vocabulary, B = sequences per forward, T = tokens per sequence):

- policy weights ``P*w``; reference ``P*w`` when asked for, ``0`` with LoRA (the adapters are
  switched off to read it); critic and reward model ``Q*w``; critic:shared ``(h+1)*w``;
- LoRA adapter: ``r*(in+out)`` parameters per targeted matrix, kept in float32 (peft upcasts
  adapters by default), and then the only trainable parameters of the policy;
- gradients: one tensor per trainable parameter, in its dtype; AdamW: two more
  (``torch.optim.AdamW`` keeps ``exp_avg`` and ``exp_avg_sq`` like the parameter);
- activations ``B*T*h*L*30*w`` per trained trunk: a GPT-2 block keeps about 30 h-wide tensors
  per token for its backward (measured with saved-tensor hooks: layer-norm inputs, q/k/v, attention
  output, residuals, and the 4h MLP whose tanh-GELU is six saved elementwise steps); SDPA attention
  stores no T*T scores;
- logits ``B*K*V*(w+8)`` when the policy trains: the model's logits, their float32 log-softmax
  kept for the backward, and its gradient (usually the largest term for a small model); K is the
  completion's tokens (``max_new_tokens`` online, T offline as a bound): the LM head runs on
  completion targets only (``sequence_logprobs``);
- ``train.precision`` bf16/fp16: the weights, gradients and AdamW states stay in ``model.dtype``;
  activations and logits are kept in 16 bits (``a=2`` in place of ``w``: autocast saves the
  matmuls' 16-bit inputs), plus autocast's 16-bit copy of each trained weight ``trainable*2``;
- B: online stages ``batch_size*num_generations`` (divided by an optimizer's ``num_minibatches``),
  offline ``batch_size`` rows, twice that for pairs (chosen + rejected) and binary feedback (KTO's
  mismatched KL batch); T: the longest tokenized prompt (first 1,000 rows of ``data.train``) plus
  ``max_new_tokens`` online, or the longest row offline, capped by ``max_length`` and the context;
- ``rollout.overlap``: the worker's copy of the policy ``P*w`` (adapters included), unless the backend
  keeps weights of its own (vLLM, whose memory is its own setting);
- ``train.padding_free``: the same bound (a batch whose every sequence is at its longest has no padding to
  drop); the packed rows' block-diagonal masks (rows of at most twice the longest sequence) are small beside the activations;
- ``--num-processes N --zero Z``: each process sees ``ceil(B/N)`` sequences; ZeRO-2 divides
  gradients and AdamW states by N, ZeRO-3 also every weight (policy, reference, critic, adapter).

A stage's peak is the sum of its rows: the training step, when weights, gradients, optimizer
states and activations are all alive. Generation's KV cache (``2*B*T*h*L*w``) comes at another time
and is smaller than the activations. Not counted: the CUDA context and allocator slack (~0.5-1 GiB
on a GPU), Python and the imported libraries (~0.5 GiB of host RAM).

Exit codes: 0 with a ``warning:`` line when the peak exceeds the memory found (an estimate, and the
machine you plan on is often not the one you train on); ``--strict`` makes that exit 1. A bad
recipe exits 2.
"""
from __future__ import annotations

import importlib.util
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from feedback_rl.errors import RunStopped, UserError
from feedback_rl.modeling.loading import context_length

ACT_FACTOR = 30          # h-wide tensors a block keeps per token for the backward (see above)
LOGIT_FP32_COPIES = 2    # float32 log-softmax and its gradient, besides the model's own logits
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LORA_BYTES = 4           # peft keeps adapter weights in float32
MAX_ROWS = 1000          # rows of data.train read to find the longest sequence


@dataclass
class ModelShape:
    params: int                 # the causal LM, tied weights counted once
    scalar_params: int          # trunk + one-output head (critic, reward model)
    hidden: int
    layers: int
    vocab: int
    context: int
    matrices: dict[str, tuple[int, int]]  # module name -> (in, out) of every linear layer
    tokenizer: Any = None


@dataclass
class Row:
    role: str
    params: int
    bytes: int
    formula: str


@dataclass
class StagePlan:
    name: str
    optimizer: str
    seqs: int
    seq_len: int
    rows: list[Row] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(r.bytes for r in self.rows)


# --------------------------------------------------------------------------- the model, on meta

def _tiny_config(spec: Any):
    # the same config feedback_rl/modeling/tiny.py builds, without building the model on disk
    from transformers import GPT2Config

    from feedback_rl.modeling.tiny import CHARS, SPECIALS
    return GPT2Config(vocab_size=len(SPECIALS) + len(CHARS), **spec.tiny.model_dump(),
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)


def read_config(recipe: Any):
    """The model's HF config: no weights are read."""
    from transformers import AutoConfig

    from feedback_rl.modeling.loading import quiet_transformers, resolve_path
    spec = recipe.model
    if spec.path == "builtin:tiny-gpt2":
        return _tiny_config(spec)
    where, kwargs = resolve_path(spec, recipe.base_dir, Path(tempfile.gettempdir()), recipe.seed)
    if "gguf_file" in kwargs and importlib.util.find_spec("gguf") is None:  # transformers reads the header with it
        raise UserError(f"model.path: '{spec.path}' is a GGUF file; reading its header needs the gguf "
                        "package (pip install gguf), or point model.path at a folder with config.json")
    quiet_transformers()
    try:
        return AutoConfig.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        raise UserError(f"model.path: cannot read the config of '{spec.path}': {str(e).splitlines()[0]}") from None


def model_shape(config: Any) -> ModelShape:
    """Counts parameters exactly on the meta device (no memory is allocated)."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.pytorch_utils import Conv1D
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
        scalar_config = copy.deepcopy(config)
        scalar_config.num_labels = 1
        scalar = AutoModelForSequenceClassification.from_config(scalar_config)
    matrices = {}
    for name, m in lm.named_modules():
        if isinstance(m, torch.nn.Linear):
            matrices[name] = (m.in_features, m.out_features)
        elif isinstance(m, Conv1D):  # GPT-2's linear layers store the weight as (in, out)
            matrices[name] = tuple(m.weight.shape)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    context = context_length(text) or 2048
    return ModelShape(params=sum(p.numel() for p in lm.parameters()),
                      scalar_params=sum(p.numel() for p in scalar.parameters()),
                      hidden=text.hidden_size, layers=text.num_hidden_layers, vocab=text.vocab_size,
                      context=context, matrices=matrices)


def lora_params(lora: Any, matrices: dict[str, tuple[int, int]]) -> int:
    """``r*(in+out)`` per targeted matrix. Targets as feedback_rl/modeling/lora.py picks them: a list of module
    names (the last part of the dotted name), ``all-linear`` (every linear layer but the output head),
    or none given: the attention and MLP projections the model has."""
    r = _get(lora, "r")
    targets = _get(lora, "target_modules")
    last = {name: name.rsplit(".", 1)[-1] for name in matrices}
    if targets is None:
        from feedback_rl.modeling.lora import DEFAULT_TARGETS
        targets = [t for t in DEFAULT_TARGETS if t in last.values()] or "all-linear"
    if targets == "all-linear":
        hit = [n for n in matrices if last[n] != "lm_head"]
    elif isinstance(targets, str):  # a regex, as peft reads a string
        hit = [n for n in matrices if re.fullmatch(targets, n)]
    else:
        hit = [n for n in matrices if last[n] in targets]
    return sum(r * sum(matrices[n]) for n in hit)


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


# --------------------------------------------------------------------------- the stages

class _Tag:
    """Stands for a model when asking an optimizer which roles it trains."""

    def __init__(self, role: str):
        self.role = role


def _trained(optimizer: Any, roles: set[str]) -> set[str]:
    from feedback_rl.base import Models
    critic = _Tag("critic") if "critic" in roles else _Tag("critic:shared") if "critic:shared" in roles else None
    models = Models(policy=_Tag("policy"), tokenizer=None, reference=None, critic=critic,
                    reward_model=_Tag("reward_model") if "reward_model" in roles else None)
    return {m.role for m in optimizer.trainable(models) if isinstance(m, _Tag)}


def _count_tokens(shape: ModelShape, text: str) -> int:
    # the tiny model's tokenizer is one token per character; otherwise characters bound tokens
    return len(shape.tokenizer(text, add_special_tokens=False)["input_ids"]) if shape.tokenizer else len(text)


def _sequence(recipe: Any, i: int, optimizer: Any, shape: ModelShape,
              prompt_tokens: int | None) -> tuple[int, int]:
    """(B, T) of the stage's training forward: the feedback shape says how many sequences a step's items
    train on, the optimizer how many of them one forward holds and how long they may be."""
    from feedback_rl.rows import dataset as datasets
    from feedback_rl.config.shapes import SHAPES, row_columns
    stage = recipe.stages[i]
    kind = SHAPES[optimizer.feedback]
    online = bool(stage.rewards.sources) and optimizer.feedback != "demonstrations"
    rows = list(datasets.load(stage.data.train, recipe.base_dir))[:MAX_ROWS] if stage.data.train is not None else []
    if online:
        seqs = optimizer.rows_per_forward(stage.train.batch_size * stage.rollout.num_generations)
        longest = prompt_tokens if prompt_tokens is not None else \
            max((_count_tokens(shape, r["prompt"]) for r in rows), default=0)
        length = longest + stage.rollout.max_new_tokens
    else:
        seqs = optimizer.rows_per_forward(stage.train.batch_size * kind.sequences_per_item)
        texts = [k for k in row_columns(optimizer.feedback, False) if k != "prompt"]
        length = max((_count_tokens(shape, r.get("prompt", "")) + 1 + max(
            (_count_tokens(shape, r[k]) for k in texts if isinstance(r.get(k), str)), default=0)
            for r in rows), default=stage.rollout.max_new_tokens)
        if prompt_tokens is not None:
            length = max(length, prompt_tokens)
    max_length = optimizer.max_length()
    return seqs, min(length, max_length or length, shape.context)


def plan_stage(recipe: Any, reg: Any, i: int, shape: ModelShape, num_processes: int = 1, zero: int = 0,
               prompt_tokens: int | None = None) -> StagePlan:
    from feedback_rl.base import PluginContext
    from feedback_rl.loop.rollout import sampling_params
    stage = recipe.stages[i]
    opt_cls = reg.get("optimizers", stage.optimizer.type)
    options = recipe.options("stage", i, "optimizer")
    with tempfile.TemporaryDirectory(prefix="frl-plan-") as tmp:
        ctx = PluginContext(name=stage.optimizer.type, run_dir=Path(tmp), stage=stage.name, seed=recipe.seed,
                            recipe_dir=recipe.base_dir, sampling=sampling_params(stage.rollout))
        optimizer = opt_cls(options, ctx)
        roles = set(optimizer.roles())
        trained = _trained(optimizer, roles)
    w = DTYPE_BYTES[recipe.model.dtype]
    n = num_processes
    lora = getattr(recipe.model, "lora", None)
    seqs, length = _sequence(recipe, i, optimizer, shape, prompt_tokens)
    seqs = math.ceil(seqs / n)
    plan = StagePlan(stage.name, stage.optimizer.type, seqs, length)
    wdiv = n if zero == 3 else 1    # ZeRO-3 shards weights
    sdiv = n if zero >= 2 else 1    # ZeRO-2 and 3 shard gradients and optimizer states
    shard = f"/{n}" if n > 1 else ""

    def weights(role: str, params: int, nbytes: int, formula: str) -> None:
        plan.rows.append(Row(role, params, params * nbytes // wdiv, formula + (shard if wdiv > 1 else "")))

    weights("policy", shape.params, w, f"P*{w}")
    adapter = lora_params(lora, shape.matrices) if lora is not None else 0
    if lora is not None:
        weights("lora adapter", adapter, LORA_BYTES, f"r*(in+out)*{LORA_BYTES}")
    if "reference" in roles:
        if lora is not None:
            plan.rows.append(Row("reference", 0, 0, "0: the policy with adapters off"))
        else:
            weights("reference", shape.params, w, f"P*{w}")
    if stage.rollout.overlap and not reg.get("backends", stage.rollout.backend).holds_weights:
        weights("rollout copy", shape.params + adapter, w, f"P*{w}" + (" (+ adapter)" if adapter else ""))
    h = shape.hidden
    for role in ("critic", "critic:shared", "reward_model"):
        if role in roles:
            params = h + 1 if role == "critic:shared" else shape.scalar_params
            weights(role, params, w, f"(h+1)*{w}" if role == "critic:shared" else f"Q*{w}")

    # trainable parameters and their bytes each
    train: list[tuple[int, int]] = []
    if "policy" in trained:
        train.append((adapter, LORA_BYTES) if lora is not None else (shape.params, w))
    for role in trained - {"policy"}:
        train.append((h + 1 if role == "critic:shared" else shape.scalar_params, w))
    n_train = sum(p for p, _ in train)
    grad = sum(p * b for p, b in train)
    state_shard = shard if sdiv > 1 else ""
    plan.rows.append(Row("gradients", n_train, grad // sdiv, "trainable*bytes" + state_shard))
    plan.rows.append(Row("AdamW states", 2 * n_train, 2 * grad // sdiv, "2*trainable*bytes" + state_shard))
    half = stage.train.precision != "fp32"
    a = 2 if half else w   # bytes per saved activation: autocast keeps the matmuls' 16-bit inputs
    if half:
        plan.rows.append(Row("autocast copies", n_train, n_train * 2 // wdiv, "trainable*2" + (shard if wdiv > 1 else "")))

    # every trained trunk keeps activations; critic:shared runs the policy's trunk a second time
    trunks = len(trained & {"policy", "critic", "reward_model"}) + ("critic:shared" in trained)
    act = seqs * length * h * shape.layers * ACT_FACTOR * a * trunks
    plan.rows.append(Row("activations", 0, act, f"B*T*h*L*{ACT_FACTOR}*{a}" + (f"*{trunks}" if trunks > 1 else "")))
    if "policy" in trained:
        online = bool(stage.rewards.sources) and opt_cls.feedback != "demonstrations"
        kept = min(stage.rollout.max_new_tokens, length) if online else length
        logits = seqs * kept * shape.vocab * (a + 4 * LOGIT_FP32_COPIES)
        plan.rows.append(Row("logits", 0, logits, f"B*K*V*{a + 4 * LOGIT_FP32_COPIES}, K={kept}"))
    return plan


def plan_recipe(recipe: Any, reg: Any, num_processes: int = 1, zero: int = 0,
                prompt_tokens: int | None = None) -> tuple[ModelShape, list[StagePlan]]:
    if num_processes < 1:
        raise UserError("--num-processes: must be 1 or more")
    shape = model_shape(read_config(recipe))
    if recipe.model.path == "builtin:tiny-gpt2":
        from feedback_rl.modeling.tiny import char_tokenizer
        shape.tokenizer = char_tokenizer()
    plans = [plan_stage(recipe, reg, i, shape, num_processes, zero, prompt_tokens) for i in range(len(recipe.stages))]
    return shape, plans


# --------------------------------------------------------------------------- memory found, output

def available_memory() -> tuple[int | None, str]:
    """Free memory of CUDA device 0, else the host's MemAvailable; (None, why) when neither is known."""
    try:
        import torch
        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info()
            return free, f"free on {torch.cuda.get_device_name(0)}"
    except Exception:  # a broken driver: fall back to the host
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "host RAM available (/proc/meminfo MemAvailable)"
    except OSError:
        pass
    return None, "unknown (no CUDA device, no /proc/meminfo)"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return ""


def count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def format_plan(recipe: Any, shape: ModelShape, plans: list[StagePlan], num_processes: int, zero: int) -> list[str]:
    out = [f"model: {recipe.model.path} ({recipe.model.dtype}): P={count(shape.params)} parameters, "
           f"Q={count(shape.scalar_params)} (trunk + scalar head), h={shape.hidden}, L={shape.layers}, "
           f"V={shape.vocab}, context {shape.context}"]
    if num_processes > 1 or zero:
        out.append(f"per process: {num_processes} process(es), ZeRO-{zero}")
    for p, stage in zip(plans, recipe.stages):
        out.append(f"== stage '{p.name}' ({p.optimizer}): B={p.seqs} sequences x T={p.seq_len} tokens")
        if stage.train.padding_free:
            out.append("  train.padding_free: the forwards run on packed rows without padding; B*T stays the bound "
                       "(every sequence at its longest), a typical step holds fewer tokens")
        table = [("role", "parameters", "bytes", "formula")] + \
                [(r.role, count(r.params) if r.params else "-", human(r.bytes), r.formula) for r in p.rows] + \
                [("total", "", human(p.total), "")]
        widths = [max(len(row[c]) for row in table) for c in range(4)]
        for row in table:
            out.append("  " + "  ".join(cell.ljust(wd) for cell, wd in zip(row, widths)).rstrip())
    peak = max(plans, key=lambda p: p.total)
    out.append(f"peak: stage '{peak.name}', {human(peak.total)}" + (" per process" if num_processes > 1 else ""))
    return out


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe key.")
@click.option("--num-processes", default=1, show_default=True, help="Processes the batch is split over.")
@click.option("--zero", type=click.Choice(["0", "2", "3"]), default="0", show_default=True,
              help="ZeRO stage: 2 shards gradients and optimizer states, 3 also weights.")
@click.option("--prompt-tokens", type=int, default=None, help="Prompt length to plan for (default: the "
              "longest prompt in data.train).")
@click.option("--strict", is_flag=True, help="Exit 1 when the peak exceeds the memory found.")
def plan(recipe: str, overrides: tuple[str, ...], num_processes: int, zero: str, prompt_tokens: int | None,
         strict: bool) -> None:
    """Estimate each stage's peak memory from RECIPE, without loading weights."""
    from feedback_rl.run import preflight
    checked = preflight.load(recipe, list(overrides))
    rec = checked.recipe
    shape, plans = plan_recipe(rec, checked.registry, num_processes, int(zero), prompt_tokens)
    for line in format_plan(rec, shape, plans, num_processes, int(zero)):
        click.echo(line)
    peak = max(p.total for p in plans)
    avail, where = available_memory()
    click.echo(f"available: {human(avail) if avail is not None else '?'} ({where})")
    if avail is not None and peak > avail:
        msg = f"the peak estimate {human(peak)} exceeds the {human(avail)} available"
        click.echo(f"warning: {msg}", err=True)
        if strict:
            raise RunStopped(msg)
