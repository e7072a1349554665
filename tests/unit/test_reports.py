"""What a run reports: the summary table and the charts' moving average."""
from feedback_rl.commands.plots import moving_average
from feedback_rl.commands.summary import format_summary


def test_a_summary_with_no_eval_prints_the_status_alone():
    assert format_summary({"status": "finished", "stages": {}}) == "status: finished"
    assert format_summary({"status": "finished", "stages": {"sft": {"eval_before": {}, "eval_after": {}}}}) == \
        "status: finished"


def test_a_summary_with_evals_is_a_table():
    out = format_summary({"status": "finished", "stages": {"sft": {"eval_before": {"eval/reward": 0.25},
                                                                   "eval_after": {"eval/reward": 0.75}}}})
    assert out.splitlines()[0] == "status: finished"
    assert out.splitlines()[-1].split() == ["sft", "eval/reward", "0.250", "0.750", "+0.500"]


def test_the_moving_average_restarts_at_each_stage():
    pts = [(x, 10.0, "sft") for x in range(1, 26)] + [(x, 0.0, "grpo") for x in range(26, 51)]
    (sx, sy), (gx, gy) = moving_average(pts, window=20)
    assert sx == list(range(1, 26)) and gx == list(range(26, 51))
    assert sy == [10.0] * 25
    assert gy == [0.0] * 25  # not 9.5, 9.0, ...: the SFT loss does not leak into GRPO's first steps


def test_the_moving_average_is_a_trailing_window():
    pts = [(x, float(x), "s") for x in range(1, 6)]
    [(xs, ys)] = moving_average(pts, window=2)
    assert ys == [1.0, 1.5, 2.5, 3.5, 4.5]
