"""Generation with vLLM on a CUDA GPU, colocated with training in the same process.

The engine is built on the first ``generate`` from the policy itself (its config and tokenizer in a
temporary folder, weights pushed from memory), so a policy trained by an earlier stage, a LoRA
adapter or a DDP-wrapped model all reach vLLM the same way. ``sync_weights`` pushes the policy's
current weights after every update; the rollouts a later ``generate`` returns are on-policy.

Behaviour log-probs are vLLM's ``processed_logprobs``: after temperature (and top-k/top-p), the
distribution the tokens were sampled from, like the HF backend's. vLLM's kernels still differ a
little from the trainer's: GRPO and PPO log ``rollout/logprob_mismatch`` and can correct for it with
``is_cap`` (truncated importance sampling).

vLLM is imported lazily: the plugin registers without it and says what is missing when used.
"""
from __future__ import annotations

import gc
import os
import re
import shutil
import tempfile
from typing import Literal

import torch
from pydantic import Field

from feedback_rl import Backend, Generation, PluginOptions, SamplingParams, UserError, hookimpl, merged_state_dict

NEEDS = "the vllm backend needs `pip install feedback_rl[vllm]` and a CUDA GPU"


def hf_weights(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The policy's weights under the names of a plain HF checkpoint: a DDP/accelerate wrapper
    unwrapped, a LoRA adapter folded in without touching the model (merging in place and back
    would drift the frozen base by rounding error at every sync)."""
    model = getattr(model, "module", model)
    if not hasattr(model, "get_base_model"):
        return [(name, p.detach()) for name, p in model.named_parameters()]
    # the core's one merge of LoRA weights
    base = model.get_base_model()
    merged = merged_state_dict(base)
    names = [re.sub(r"(^|\.)base_layer\.", r"\1", n) for n, _ in base.named_parameters() if "lora_" not in n]
    return [(n, merged[n]) for n in names]


class VLLMBackend(Backend):
    name = "vllm"

    class Options(PluginOptions):
        gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0, description="share of the GPU's memory "
                                              "vLLM takes (weights + KV cache); training needs the rest")
        dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
            "auto", description="vLLM's weights and activations (auto: half precision for a float32 model)")
        max_model_len: int | None = Field(None, ge=1, description="longest prompt + completion (default: the model's)")
        enforce_eager: bool = Field(False, description="no CUDA graphs: starts faster, generates slower")
        tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans")
        enable_sleep_mode: bool = Field(False, description="free vLLM's weights and KV cache while training "
                                        "(pushed back before each generation)")
        max_num_seqs: int | None = Field(None, ge=1, description="sequences vLLM batches at once")
        seed: int | None = Field(None, description="vLLM's sampling seed (default: the stage's seed)")

    def __init__(self, options, context):
        super().__init__(options, context)
        self.llm = None
        self.version = 0          # the policy version whose weights vLLM holds
        self._sleeping = False
        self._dir: str | None = None

    # ------------------------------------------------------------------ the engine
    def _engine(self, model: torch.nn.Module, tokenizer):
        if self.llm is not None:
            return self.llm
        try:
            import vllm
        except ImportError:
            raise UserError(NEEDS) from None
        if not torch.cuda.is_available():
            raise UserError(NEEDS)
        # the engine core runs in this process, so sync_weights reaches the model without copies
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        o = self.options
        base = getattr(model, "module", model)
        base = base.get_base_model() if hasattr(base, "get_base_model") else base
        self._dir = tempfile.mkdtemp(prefix="frl-vllm-")
        base.config.save_pretrained(self._dir)
        tokenizer.save_pretrained(self._dir)
        seed = o.seed if o.seed is not None else (self.context.seed if self.context is not None else 0)
        kwargs = dict(model=self._dir, tokenizer=self._dir, dtype=o.dtype, seed=seed,
                      gpu_memory_utilization=o.gpu_memory_utilization, enforce_eager=o.enforce_eager,
                      tensor_parallel_size=o.tensor_parallel_size, enable_sleep_mode=o.enable_sleep_mode,
                      # random weights at build, replaced at once by the policy's: one path for every model kind
                      load_format="dummy",
                      # log-probs after temperature/top-k/top-p: what the tokens were sampled from
                      logprobs_mode="processed_logprobs",
                      # sampling is what the recipe says, not the checkpoint's generation_config defaults
                      generation_config="vllm")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # under accelerate/torchrun each rank's engine joins the launcher's process group and
            # its rank's GPU (as TRL's colocate mode does); ranks sample with their own seeds
            kwargs["distributed_executor_backend"] = "external_launcher"
            kwargs["seed"] = seed + int(os.environ.get("RANK", "0"))
        if o.max_model_len is not None:
            kwargs["max_model_len"] = o.max_model_len
        if o.max_num_seqs is not None:
            kwargs["max_num_seqs"] = o.max_num_seqs
        self.llm = vllm.LLM(**kwargs)
        self._push(model)
        return self.llm

    def _push(self, model: torch.nn.Module) -> None:
        weights = hf_weights(model)
        # vLLM's per-model load_weights maps HF names (and GPT-2's Conv1D transposes) to its layers
        self.llm.apply_model(lambda m: m.load_weights(weights))
        self.llm.reset_prefix_cache()   # cached prompt KV was computed by the old weights

    # ------------------------------------------------------------------ the Backend API
    def generate(self, model, tokenizer, prompt_ids: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        llm = self._engine(model, tokenizer)
        from vllm import SamplingParams as VLLMSampling
        if self._sleeping:   # level-2 sleep dropped the weights: push the current ones back
            llm.wake_up(tags=["weights"])
            self._push(model)
            llm.wake_up(tags=["kv_cache"])
            self._sleeping = False
        stops = list(sampling.stop_token_ids) or [tokenizer.eos_token_id]
        common = dict(n=1, max_tokens=sampling.max_new_tokens, logprobs=0, detokenize=False, stop_token_ids=stops)
        if sampling.greedy:
            params = VLLMSampling(temperature=0.0, **common)
        else:
            params = VLLMSampling(temperature=sampling.temperature, top_p=sampling.top_p,
                                  top_k=sampling.top_k if sampling.top_k > 0 else -1, **common)
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling_params=params,
                               use_tqdm=False)
        gens = []
        for ids, out in zip(prompt_ids, outputs):
            done = out.outputs[0]
            new = list(done.token_ids)   # the core cuts at the first stop token
            lp = None
            if done.logprobs is not None:
                lp = torch.tensor([done.logprobs[k][t].logprob for k, t in enumerate(new)], dtype=torch.float32)
            gens.append(Generation(list(ids), new, lp, truncated=False))
        if self.options.enable_sleep_mode:
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
            torch.cuda.empty_cache()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@hookimpl
def frl_register_backends(register):
    register(VLLMBackend)
