"""The default generation backend: HF ``generate`` with left padding.

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

    def generate(self, model, tokenizer, prompts: list[str], sampling: SamplingParams) -> list[Generation]:
        tokenizer.padding_side = "left"
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        device = next(model.parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad, eos_token_id=eos,
                      return_dict_in_generate=True, output_scores=True)
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p,
                          top_k=sampling.top_k or None)
        out = model.generate(**enc, **kwargs)
        width = enc["input_ids"].shape[1]
        new = out.sequences[:, width:]
        scores = torch.stack(out.scores, dim=1).float() if out.scores else None   # [B, T, V]
        logps = None
        if scores is not None and new.shape[1]:
            logps = torch.log_softmax(scores, -1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        gens = []
        for i in range(len(prompts)):
            prompt_ids = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
            ids = new[i].tolist()
            ended = eos in ids
            n = ids.index(eos) + 1 if ended else len(ids)
            lp = logps[i, :n].cpu() if logps is not None else None
            gens.append(Generation(prompt_ids, ids[:n], lp, truncated=not ended))
        return gens


@hookimpl
def frl_register_backends(register):
    register(HFBackend)
