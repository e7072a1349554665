"""Custom check functions for tests/unit/test_rule.py (imported as `rule_checks:<name>`)."""
import time

NOT_A_FUNCTION = 42


def always_true(completion, row):
    return True


def partial(completion, row):
    return 0.3


def abstain(completion, row):
    return None


def contains_answer(completion, row):
    return row["answer"] in completion


def boom(completion, row):
    raise ValueError("checker exploded")


def wrong_type(completion, row):
    return "yes"


def sleepy(completion, row):
    time.sleep(1.0)
    return True
