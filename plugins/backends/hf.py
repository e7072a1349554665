"""The default generation backend: HF ``generate`` on left-padded token ids.

Behaviour log-probs come from the processed scores (after temperature, top-k, top-p), i.e. the
distribution the tokens were actually sampled from.
"""
from __future__ import annotations

import torch

from feedback_rl import Backend, Generation, PluginOptions, SamplingParams, hookimpl


class HFBackend(Backend):
    name = "hf"

    class Options(PluginOptions):
        pass

    def generate(self, model, tokenizer, prompt_ids: list[list[int]], sampling: SamplingParams) -> list[Generation]:
        device = next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        attn = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for i, p in enumerate(prompt_ids):  # left padding: every prompt ends where generation starts
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attn[i, width - len(p):] = 1
        stops = list(sampling.stop_token_ids) or [tokenizer.eos_token_id]
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad, eos_token_id=stops,
                      return_dict_in_generate=True, output_scores=True)
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k or None)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                                   enabled=sampling.seed is not None):
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), **kwargs)
        new = out.sequences[:, width:]
        logps = None
        if out.scores and new.shape[1]:
            scores = torch.stack(out.scores, dim=1).float()   # [B, T, V]
            logps = torch.log_softmax(scores, -1).gather(-1, new.unsqueeze(-1)).squeeze(-1).cpu()
        # the core cuts each completion at its first stop token (HF pads finished rows after it)
        return [Generation(list(p), new[i].tolist(), logps[i] if logps is not None else None, truncated=False)
                for i, p in enumerate(prompt_ids)]


@hookimpl
def frl_register_backends(register):
    register(HFBackend)
