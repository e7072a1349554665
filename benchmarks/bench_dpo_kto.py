"""DPO and KTO steps of feedback_rl against TRL's DPOTrainer / KTOTrainer, side by side.

Same tiny GPT-2 (same weights), same rows, same batch, same optimizer (torch AdamW). One step =
loss (policy and reference forwards) + backward + clip + AdamW step; the two sides alternate step by
step so load on the machine hits both alike. TRL's batches come from its own dataset processing
and collator, taken in order (no shuffling), so batch k holds the same rows on both sides; the
step-0 losses must then agree. The HF Trainer loop around TRL's loss is not timed.

Needs TRL (a benchmark-only dependency, not the project's):
    .venv/bin/pip install trl torch==2.13.0
Run:
    .venv/bin/python benchmarks/bench_dpo_kto.py [--steps 20] [--batch 16]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from feedback_rl import Models, PluginContext, SamplingParams
from feedback_rl.data import feedback_from_rows
from feedback_rl.rows.synthetic import sort_labeled, sort_pairs
from feedback_rl.modeling.tiny import build_tiny_gpt2
from frl_plugins.optimizers.dpo import DPO
from frl_plugins.optimizers.kto import KTO


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def frozen(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def nudged(model, seed=0, scale=0.05):
    """The policy moved away from the reference the same way on both sides, so the step-0 losses
    compare real margins (at policy == reference every pair's loss is the same constant)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def step(opt, params, loss):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


class Ours:
    def __init__(self, cls, options, path, feedback_batches):
        policy, tok = load(path)
        reference = frozen(policy)
        policy = nudged(policy).train()
        self.models = Models(policy=policy, tokenizer=tok, reference=reference)
        ctx = PluginContext(name=cls.name, run_dir=Path("."), stage="bench", warn=lambda m: None,
                            sampling=SamplingParams())
        self.opt_plugin = cls(cls.Options(**options), ctx)
        self.params = list(policy.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.batches = feedback_batches

    def step(self, k):
        prepared = self.opt_plugin.prepare(self.batches[k], self.models)   # reference forward, no grad
        loss, _ = self.opt_plugin.loss(prepared, self.models)
        step(self.opt, self.params, loss)
        return loss.item()


class TRLSide:
    def __init__(self, kind, options, path, rows, batch, workdir):
        from datasets import Dataset
        policy, tok = load(path)
        ref = frozen(policy)
        policy = nudged(policy)
        common = dict(output_dir=str(workdir / kind), per_device_train_batch_size=batch, report_to=[],
                      use_cpu=True, learning_rate=1e-4, max_steps=1, logging_steps=1, save_strategy="no",
                      dataset_num_proc=None, **options)
        # TRL 1.x defaults to bf16 autocast and gradient checkpointing; this project computes in float32
        # without checkpointing: same arithmetic on both sides (bench_trl.py does the same)
        common.setdefault("bf16", False)
        common.setdefault("gradient_checkpointing", False)
        if kind == "dpo":
            from trl import DPOConfig, DPOTrainer
            args = DPOConfig(**common)
            self.trainer = DPOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok,
                                      train_dataset=Dataset.from_list(rows))
        else:
            from trl import KTOConfig, KTOTrainer
            args = KTOConfig(**common)
            self.trainer = KTOTrainer(model=policy, ref_model=ref, args=args, processing_class=tok,
                                      train_dataset=Dataset.from_list(rows))
        self.model = self.trainer.model
        self.model.train()
        data, collate = self.trainer.train_dataset, self.trainer.data_collator
        self.batches = [collate([data[i] for i in range(k, k + batch)]) for k in range(0, len(data) - batch + 1, batch)]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)

    def step(self, k):
        loss = self.trainer.compute_loss(self.model, self.batches[k])
        step(self.opt, self.params, loss)
        return loss.item()


def compare(name, ours, trl, steps):
    t_ours, t_trl, l_ours, l_trl = [], [], [], []
    for k in range(steps):
        for side, times, losses in ((ours, t_ours, l_ours), (trl, t_trl, l_trl)):
            t0 = time.perf_counter()
            losses.append(side.step(k))
            times.append(time.perf_counter() - t0)
    # the first step warms caches on both sides: not timed
    m_ours, m_trl = statistics.median(t_ours[1:]), statistics.median(t_trl[1:])
    print(f"{name:<14} ours {m_ours * 1e3:8.1f} ms  trl {m_trl * 1e3:8.1f} ms  ratio ours/trl {m_ours / m_trl:5.2f}  "
          f"step-0 loss ours {l_ours[0]:.6f} trl {l_trl[0]:.6f}  |diff| {abs(l_ours[0] - l_trl[0]):.1e}")
    return abs(l_ours[0] - l_trl[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets
    import trl
    datasets.disable_progress_bars()
    print(f"torch {torch.__version__}, trl {trl.__version__}; tiny-gpt2, batch {a.batch}, {a.steps} steps, "
          f"{a.threads} threads; sort task (prompt 9-11 tokens, completion 3-5 + EOS)")
    n = a.steps * a.batch
    pairs = sort_pairs("train", n, 500, 0)
    labeled = sort_labeled("train", n, 500, 0)
    chunks = lambda rows: [rows[k:k + a.batch] for k in range(0, n, a.batch)]  # noqa: E731
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = build_tiny_gpt2(work / "tiny", seed=0)
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(path)   # the core encodes the rows once, as a run does
        pair_fb = [feedback_from_rows("pairs", c, tok) for c in chunks(pairs)]
        bin_fb = [feedback_from_rows("binary", c, tok) for c in chunks(labeled)]
        trl_pairs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in pairs]
        trl_labeled = [{k: r[k] for k in ("prompt", "completion", "label")} for r in labeled]
        for loss in ("sigmoid", "ipo", "hinge"):
            ours = Ours(DPO, {"beta": 0.1, "loss": loss}, path, pair_fb)
            theirs = TRLSide("dpo", {"beta": 0.1, "loss_type": [loss]}, path, trl_pairs, a.batch, work)
            worst = max(worst, compare(f"dpo/{loss}", ours, theirs, a.steps))
        ours = Ours(KTO, {"beta": 0.1}, path, bin_fb)
        theirs = TRLSide("kto", {"beta": 0.1, "train_sampling_strategy": "sequential"}, path, trl_labeled,
                         a.batch, work)
        worst = max(worst, compare("kto", ours, theirs, a.steps))
    print(f"largest step-0 loss difference: {worst:.1e}")


if __name__ == "__main__":
    main()
