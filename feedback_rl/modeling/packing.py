"""Padding-free forwards (``train.padding_free``): a batch's sequences laid end to end in packed rows,
position ids restarting at 0 for each sequence, no attention mask; the results are put back in the
padded ``[B, T]`` layout, so no caller sees the difference.

Keeping the sequences apart is transformers' job, done from the position ids when no attention mask is
given (both 5.19 and 5.24):

- ``sdpa``, ``eager``, ``flex_attention``: ``masking_utils.create_causal_mask`` finds each restart of the
  position ids (``find_packed_sequence_indices``) and builds a block-diagonal causal mask per row;
- ``flash_attention_2``/``_3`` (and kernel-hub flash kernels): ``_is_packed_sequence`` sends a single row
  (batch size 1 only) to the varlen kernel with ``cu_seqlens`` taken from the position ids: no mask at all.

Row layout, per implementation: flash kernels get one row holding the whole batch (varlen cost is linear
in the row; several rows would not be seen as packed at all). The others get rows filled first-fit
decreasing, each at most ``ROW_LENGTHS`` (2) times the batch's longest sequence: their mask, and the
attention behind it, covers the whole row, so each token's attention costs as much as the row is wide.
On the GRPO chat batch (32 sequences of 58-119 tokens, 17% padding), counting flops, one row of 3,171
tokens would cost ~1.6x the padded batch (attention ~2,300 flops per token per layer per position of the row,
against ~7.1 MFLOP of SmolLM2's linear layers per token per layer); rows of at most 2 x 119 tokens hold
3,332 positions (95% filled, against 3,808 padded): ~0.91x; rows of 1x give 0.97x, 4x 0.97x, 512 tokens
1.06x (more row padding, wider attention). Measured: benchmarks/bench_padding_free.py, docs/benchmarks.md.

Whether a model really keeps sequences apart this way is probed once per model class and attention
implementation (custom modelling code may build a plain causal mask; a kernel may ignore position ids):
a few short sequences cut from the first batch are run packed and padded, with autocast off, and must
agree. A model that fails stays on the padded path (a warning says so once); it is never left to
attend across sequences.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

# under a masked (quadratic) attention a row holds at most this many times the batch's longest sequence
ROW_LENGTHS = 2

_ON = contextvars.ContextVar("padding_free", default=False)
# (model class, config class, attention implementation) -> whether packed rows keep its sequences apart
# (the config class tells apart two models behind one wrapper class: DDP, peft)
_SUPPORTED: dict[tuple[type, type, str], bool] = {}

# fn(model, input_ids, attention_mask or None, position_ids) -> per-position outputs [rows, length, ...]
Forward = Callable[[torch.nn.Module, torch.Tensor, "torch.Tensor | None", torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def padding_free(on: bool = True) -> Iterator[None]:
    """Within this block, forwards through :mod:`batching` (and the value heads) run packed where the model
    supports it. The engine enters it around the optimizer's forward passes when ``train.padding_free``."""
    token = _ON.set(on)
    try:
        yield
    finally:
        _ON.reset(token)


def _config(model: torch.nn.Module) -> Any:
    """The model's transformers config, looking through wrappers that have none (DDP's ``module``)."""
    while getattr(model, "config", None) is None and hasattr(model, "module"):
        model = model.module
    return getattr(model, "config", None)


def attention_implementation(model: torch.nn.Module) -> str:
    return str(getattr(_config(model), "_attn_implementation", None))


def one_row(implementation: str) -> bool:
    """Flash kernels: varlen attention over one row (transformers treats only batch size 1 as packed)."""
    return "flash" in implementation


@dataclass
class Rows:
    """Packed rows of a ``[B, T]`` batch. ``index`` is each row position's flat index ``b*T + t`` in the
    padded batch, ``-1`` for the row padding at a row's end (its own one-token sequences, position 0)."""

    input_ids: torch.Tensor     # [R, L]
    position_ids: torch.Tensor  # [R, L]
    index: torch.Tensor         # [R, L]
    shape: tuple[int, int]      # (B, T)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """A padded ``[B, T]`` tensor laid out like the rows (row padding: 0 / False)."""
        real = self.index >= 0
        return torch.where(real, x.reshape(-1)[self.index.clamp(min=0)], torch.zeros((), dtype=x.dtype, device=x.device))

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """Per-position ``values`` ``[R, L, ...]`` back in the padded layout ``[B, T, ...]``, zeros at padding."""
        real = self.index >= 0
        flat = values.new_zeros((self.shape[0] * self.shape[1], *values.shape[2:]))
        flat = flat.index_copy(0, self.index[real], values[real])
        return flat.view(*self.shape, *values.shape[2:])

    def order(self, keep: torch.Tensor) -> torch.Tensor:
        """The permutation that puts outputs at the rows' ``keep`` positions (``[N]``, row-major over the rows)
        in the padded batch's row-major order: what ``padded[keep]`` would give."""
        return self.index[keep].argsort()


def layout(lengths: list[int], budget: int | None) -> list[list[int]]:
    """The sequences (their indices) of each row: all in one when ``budget`` is None, else first-fit
    decreasing into rows of at most ``budget`` tokens (a longer sequence gets a row of its own)."""
    if budget is None:
        return [[i for i, n in enumerate(lengths) if n]]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted((i for i, n in enumerate(lengths) if n), key=lambda i: -lengths[i]):
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(budget - lengths[i])
    return rows


def pack_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, budget: int | None) -> Rows:
    """The real tokens of each sequence (where the attention mask is 1), packed into rows."""
    mask = attention_mask.bool()
    B, T = mask.shape
    lengths = mask.sum(-1).tolist()
    rows = layout(lengths, budget)
    width = max(sum(lengths[i] for i in row) for row in rows)
    where = [mask[i].nonzero().squeeze(-1) + i * T for i in range(B)]
    index = torch.full((len(rows), width), -1, dtype=torch.long, device=mask.device)
    pos = torch.zeros((len(rows), width), dtype=torch.long, device=mask.device)
    for r, row in enumerate(rows):
        flat = torch.cat([where[i] for i in row])
        index[r, : len(flat)] = flat
        pos[r, : len(flat)] = torch.cat([torch.arange(lengths[i], device=mask.device) for i in row])
    ids = torch.where(index >= 0, input_ids.reshape(-1)[index.clamp(min=0)], torch.zeros_like(index))
    return Rows(ids, pos, index, (B, T))


def rows_for(model: torch.nn.Module, fn: Forward, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Rows | None:
    """The packed rows to run ``fn(model, ...)`` on, or None for the padded path: padding-free is off, the
    model cannot keep packed sequences apart (probed on first use), or the batch has no padding."""
    if not _ON.get():
        return None
    impl = attention_implementation(model)
    key = (type(model), type(_config(model)), impl)
    if key not in _SUPPORTED:  # before looking at the batch: every process probes at the same call
        _SUPPORTED[key] = probe(model, fn, input_ids.device, impl)
        if not _SUPPORTED[key]:
            warnings.warn(f"train.padding_free: {type(model).__name__} with attention '{impl}' lets packed sequences "
                          "attend to each other; its forwards stay padded", stacklevel=2)
    if not _SUPPORTED[key] or bool(attention_mask.all()) or not bool(attention_mask.any()):
        return None
    return pack_rows(input_ids, attention_mask, None if one_row(impl) else budget(attention_mask))


def budget(attention_mask: torch.Tensor) -> int:
    """The longest row a masked attention gets: ``ROW_LENGTHS`` times the batch's longest sequence."""
    return ROW_LENGTHS * int(attention_mask.sum(-1).max())


PROBE_LENGTHS = (5, 3, 4)  # rows of 8 tokens: [5, 3] and [4 + row padding]; flash: one row of 12
# the largest difference allowed, as a fraction of the outputs' range: float32 rounding is ~1e-6 of it,
# 16-bit ~1e-2; a sequence that sees its neighbour's tokens moves by several percent of it or more
PROBE_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
PROBE_TOLERANCE_16BIT = 5e-2


def probe(model: torch.nn.Module, fn: Forward, device: torch.device, impl: str) -> bool:
    """Whether three short sequences give the same outputs packed as padded. Their token ids (1 to 11, in
    every vocabulary) do not depend on the batch, so every process runs the same probe."""
    T = max(PROBE_LENGTHS)
    ids = torch.zeros((len(PROBE_LENGTHS), T), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(PROBE_LENGTHS):
        ids[i, :n] = 1 + (torch.arange(n, device=device) * 7 + 3 * i) % 11
        mask[i, :n] = 1
    rows = pack_rows(ids, mask, None if one_row(impl) else T + min(PROBE_LENGTHS))
    with torch.no_grad(), torch.autocast(device.type, enabled=False), _eval(model):
        try:
            padded = fn(model, ids, mask, (mask.cumsum(-1) - 1).clamp(min=0))
            packed = rows.scatter(fn(model, rows.input_ids, None, rows.position_ids))
        except (TypeError, ValueError, RuntimeError, IndexError):
            return False  # a forward that refuses packed rows (or no attention mask) stays padded
    tolerance = PROBE_TOLERANCE.get(padded.dtype, PROBE_TOLERANCE_16BIT)
    real = mask.bool()
    padded, packed = padded[real].double(), packed[real].double()
    spread = float(padded.max() - padded.min()) or 1.0
    return bool((padded - packed).abs().max() <= tolerance * spread)


@contextlib.contextmanager
def _eval(model: torch.nn.Module) -> Iterator[None]:
    """The probe without dropout: the model in eval mode, each module's own mode restored after. A shared
    value head holds the policy's trunk without registering it: its ``base_model`` is switched too."""
    trunk = getattr(model, "base_model", None)
    modules = {id(m): m for part in (model, trunk) if isinstance(part, torch.nn.Module) for m in part.modules()}
    modes = [(m, m.training) for m in modules.values()]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
