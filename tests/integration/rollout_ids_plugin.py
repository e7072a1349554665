"""A test plugin (installed through a dist-info on PYTHONPATH) that writes every rollout's token ids, mask and
behaviour log-probs, as the loop hands them to scoring, to $FRL_ROLLOUT_IDS (one JSON line each)."""
import json
import os

import feedback_rl


@feedback_rl.hookimpl
def frl_rollouts_generated(stage, step, rollouts):
    with open(os.environ["FRL_ROLLOUT_IDS"], "a") as f:
        for r in rollouts:
            f.write(json.dumps({"step": step, "uid": r.uid, "group": r.group, "prompt_ids": r.prompt_ids,
                                "completion_ids": r.completion_ids, "mask": r.completion_mask,
                                "logprobs": None if r.logprobs is None else r.logprobs.tolist(),
                                "episode": r.episode}) + "\n")
