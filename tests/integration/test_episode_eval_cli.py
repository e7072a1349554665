"""Through `frl train`: the held-out eval of a stage with an environment plays episodes, and logs what they earned
(`eval/env`) and how they went (`eval/env/...`), before and after the stage. The episodes' turns are written by
the scripted backend of test_episodes_train.py (a tool call, then the tool's result, one more in every other
answer), so the figures are known exactly."""
from __future__ import annotations

from test_episodes_train import frl_train, scripted_plugin


def test_eval_of_a_calculator_stage_plays_episodes_and_logs_their_score_and_metrics(tmp_path):
    env = scripted_plugin(tmp_path)
    _, metrics, logged = frl_train("calculator-grpo.yaml", tmp_path, "stages.grpo.train.steps=1",
                                   "stages.grpo.rollout.backend=scripted_tool",
                                   "stages.grpo.data.eval={calculator: 3, size: 6, seed: 1}",
                                   "stages.grpo.eval.batch_size=4", env=env)
    evals = [m for m in metrics if "eval/reward" in m]
    assert [m["step"] for m in evals] == [0, 1]
    for m in evals:
        # every episode: the call, the tool's result, an answer that is right in every other episode
        assert m["eval/env/tool_call_rate"] == 1.0 and m["eval/env/tool_calls/ok"] == 1.0
        assert m["eval/env/turns_mean"] == 2.0 and m["eval/env/done_rate"] == 1.0
        assert m["eval/env"] == m["eval/reward"] == 0.5
    assert len(logged) == 2 * 4   # rollouts.jsonl holds the training episodes only
