"""The reward mixer: weights, normalisation, gating, routing, abstain/error, the error-rate stop."""
import math

import pytest

from feedback_rl import Preference, RewardSource, Rollout, Score
from feedback_rl.errors import RunStopped
from feedback_rl.config.recipe import SourceSpec
from feedback_rl.loop.rewards import Mixer, Slot


class Table(RewardSource):
    """Scores each rollout from a fixed table keyed by completion; records what it was asked."""
    name = "table"

    def __init__(self, table):
        self.table, self.asked = table, []

    def score(self, rollouts):
        self.asked += [r.completion for r in rollouts]
        out = []
        for r in rollouts:
            v = self.table[r.completion]
            out.append(v if isinstance(v, Score) else Score.ok(v))
        return out


class Crashing(RewardSource):
    name = "crash"

    def score(self, rollouts):
        raise RuntimeError("judge exploded")


def ro(completion, task="math", group=0):
    return Rollout(prompt="p", completion=completion, row={"prompt": "p", "task": task}, group=group,
                   prompt_ids=[1], completion_ids=[2])


def slot(name, source, **spec):
    return Slot(SourceSpec(name=name, type="table", **spec), source)


def test_weighted_sum_of_sources():
    a = Table({"x": 1.0, "y": 0.0})
    b = Table({"x": 0.5, "y": 2.0})
    scored, m = Mixer([slot("a", a, weight=2.0), slot("b", b, weight=0.5)]).score([ro("x"), ro("y")])
    assert [s.reward for s in scored] == [2 * 1.0 + 0.5 * 0.5, 2 * 0.0 + 0.5 * 2.0]
    assert m["reward/a/mean"] == 0.5 and m["reward/b/mean"] == 1.25
    assert m["reward/mean"] == pytest.approx((2.25 + 1.0) / 2)


def test_error_is_never_a_zero_the_rollout_gets_no_reward():
    a = Table({"x": 1.0, "y": Score.error("timeout")})
    scored, m = Mixer([slot("a", a)]).score([ro("x"), ro("y")])
    assert scored[0].reward == 1.0 and scored[1].reward is None
    assert scored[1].scores["a"].status == "error"
    assert m["reward/a/error_rate"] == 0.5 and m["reward/a/errors"] == 1.0


def test_abstain_contributes_nothing_and_all_abstain_means_no_reward():
    a = Table({"x": Score.abstain(), "y": Score.abstain()})
    b = Table({"x": 3.0, "y": Score.abstain()})
    scored, m = Mixer([slot("a", a), slot("b", b)]).score([ro("x"), ro("y")])
    assert scored[0].reward == 3.0 and scored[1].reward is None
    assert m["reward/a/abstain_rate"] == 1.0 and m["reward/b/abstain_rate"] == 0.5


def test_routing_only_scores_rows_of_the_listed_tasks():
    math_src = Table({"x": 1.0, "poem": 1.0})
    scored, _ = Mixer([slot("m", math_src, tasks=["math"])]).score([ro("x"), ro("poem", task="poetry")])
    assert math_src.asked == ["x"]
    assert scored[1].scores["m"].status == "abstain" and scored[1].reward is None


def test_gate_source_scores_only_what_the_gate_passed():
    rule = Table({"right": 1.0, "wrong": 0.0})
    judge = Table({"right": 0.7, "wrong": 0.9})
    mixer = Mixer([slot("rule", rule), slot("judge", judge, gate={"source": "rule", "threshold": 1.0})])
    scored, _ = mixer.score([ro("right"), ro("wrong")])
    assert judge.asked == ["right"]
    assert scored[0].reward == pytest.approx(1.7) and scored[1].reward == 0.0
    assert scored[1].scores["judge"].reason.startswith("gated out")


def test_normalize_then_sum_zscores_each_source_before_weighting():
    a = Table({"x": 0.0, "y": 10.0})
    b = Table({"x": 1.0, "y": 3.0})
    scored, _ = Mixer([slot("a", a), slot("b", b, weight=2.0)], normalize="normalize_then_sum").score([ro("x"), ro("y")])
    # each source becomes (-1, +1) (population std), then 1*a + 2*b
    assert [s.reward for s in scored] == pytest.approx([-3.0, 3.0])


def test_sum_then_normalize_zscores_the_mix():
    a = Table({"x": 1.0, "y": 2.0, "z": 6.0})
    scored, _ = Mixer([slot("a", a, weight=2.0)], normalize="sum_then_normalize").score([ro("x"), ro("y"), ro("z")])
    mixed = [2.0, 4.0, 12.0]
    mean = sum(mixed) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in mixed) / 3)
    assert [s.reward for s in scored] == pytest.approx([(v - mean) / std for v in mixed])


def test_error_rate_above_the_limit_stops_the_run_naming_the_source():
    a = Table({"x": Score.error("HTTP 500"), "y": Score.error("HTTP 503"), "z": 1.0})
    with pytest.raises(RunStopped, match=r"reward source 'judge' failed on 2 of 3 .*HTTP 500 \| HTTP 503"):
        Mixer([slot("judge", a)], max_error_rate=0.5).score([ro("x"), ro("y"), ro("z")])


def test_a_crashing_source_counts_errors_on_every_rollout():
    scored, m = Mixer([slot("c", Crashing.__new__(Crashing))]).score([ro("x"), ro("y")])
    assert all(s.reward is None for s in scored)
    assert "judge exploded" in scored[0].scores["c"].reason and m["reward/c/error_rate"] == 1.0


def test_non_finite_score_is_an_error():
    assert Score.ok(float("nan")).status == "error"


class Pairs(RewardSource):
    """A pairwise source answering from a list, one result per pair asked."""
    name = "pairs"
    pairwise = True

    def __init__(self, answers):
        self.answers, self.asked = answers, []

    def compare(self, pairs):
        self.asked += pairs
        return [a if isinstance(a, Score) else Preference(x, y, winner=a) for a, (x, y) in zip(self.answers, pairs)]


def _groups(n):
    return [ro(f"{g}{k}", group=g) for g in range(n) for k in range(2)]


def test_compare_logs_a_pairwise_sources_failed_pairs_like_a_scoring_sources():
    src = Pairs([0, Score.error("HTTP 503"), Score.abstain("unparseable"), 1])
    prefs, m = Mixer([slot("duel", src)]).compare(_groups(4))
    assert [(p.a.completion, p.winner, p.source) for p in prefs] == [("00", 0, "duel"), ("30", 1, "duel")]
    assert len(src.asked) == 4  # the first two completions of each prompt
    assert m["reward/duel/asked"] == 4 and m["reward/duel/errors"] == 1 and m["reward/duel/error_rate"] == 0.25
    assert m["reward/duel/abstains"] == 1 and m["reward/duel/abstain_rate"] == 0.25


def test_compare_stops_the_run_when_a_pairwise_source_fails_past_max_error_rate():
    src = Pairs([Score.error("HTTP 503")] * 2 + [0])
    with pytest.raises(RunStopped, match=r"reward source 'duel' failed on 2 of 3 pairs \(67% > max_error_rate "
                                         r"50%\); last errors: HTTP 503 \| HTTP 503"):
        Mixer([slot("duel", src)], max_error_rate=0.5).compare(_groups(3))


def test_compare_counts_a_crash_or_a_short_answer_as_an_error_on_every_pair():
    class Crashing(Pairs):
        def compare(self, pairs):
            raise ConnectionError("reset by peer")
    _, m = Mixer([slot("c", Crashing([]))]).compare(_groups(2))
    assert m["reward/c/errors"] == 2.0
    prefs, m = Mixer([slot("short", Pairs([0]))]).compare(_groups(2))  # one answer for two pairs
    assert prefs == [] and m["reward/short/error_rate"] == 1.0


def test_compare_leaves_scoring_sources_alone():
    prefs, m = Mixer([slot("a", Table({}))]).compare(_groups(2))
    assert prefs == [] and m == {}
