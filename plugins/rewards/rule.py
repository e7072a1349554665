"""The built-in ``rule`` reward source: declarative checks of a completion against the dataset row."""
from __future__ import annotations

import inspect
import logging
import math
import numbers
import re
import threading
from typing import Any, Callable, Literal

from pydantic import Field, field_validator, model_validator

from feedback_rl import PluginContext, PluginOptions, RewardSource, Rollout, Score, UserError, hookimpl

# The options each check reads besides check/reward_correct/reward_wrong; any other option that the
# recipe sets is an error, so a typo'd or misplaced key never silently does nothing.
_APPLIES = {
    "exact": {"answer_key", "case_sensitive"},
    "numeric": {"answer_key", "tolerance", "relative_tolerance"},
    "regex": {"pattern", "mode", "case_sensitive"},
    "final_answer": {"answer_key", "marker", "compare", "case_sensitive", "tolerance", "relative_tolerance"},
    "custom": {"function", "timeout"},
    "math": {"answer_key", "timeout", "no_answer"},
}
_GOLD_CHECKS = ("exact", "numeric", "final_answer", "math")  # the checks that read the row's answer_key
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_FRACTION = re.compile(rf"({_NUM})\s*/\s*({_NUM})")
_LATEX_FRACTION = re.compile(rf"(-?)\\[dt]?frac\{{\s*({_NUM})\s*\}}\{{\s*({_NUM})\s*\}}")
_MAX_HUNG = 16  # leaked threads of timed-out calls, before the source refuses to start more
_MATH_INSTALL = "pip install 'feedback_rl[math]'"


def parse_number(value: Any) -> float | None:
    """A finite float from "1,234", "-3.5", "1e3", "3/4", "\\frac{1}{2}" or a number; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    s = str(value).strip()
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if m := _LATEX_FRACTION.fullmatch(s):
        num, den = float(m[2]) * (-1 if m[1] else 1), float(m[3])
        x = num / den if den else math.nan
    elif m := _FRACTION.fullmatch(s):
        num, den = float(m[1]), float(m[2])
        x = num / den if den else math.nan
    elif re.fullmatch(_NUM, s):
        x = float(s)
    else:
        return None
    return x if math.isfinite(x) else None


def normalize(text: str, case_sensitive: bool) -> str:
    """Strip and collapse whitespace; casefold when the comparison ignores case."""
    text = " ".join(str(text).split())
    return text if case_sensitive else text.casefold()


def extract_final(text: str, marker: str) -> str | None:
    """The answer after the last ``marker`` (up to the end of its line), or the content of the last
    ``\\boxed{...}`` with balanced braces when ``marker`` is "boxed"; None when there is none."""
    if marker != "boxed":
        i = text.rfind(marker)
        if i < 0:
            return None
        rest = text[i + len(marker):].strip()
        return rest.split("\n", 1)[0].strip()
    start = text.rfind("\\boxed{")
    while start >= 0:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1:j].strip()
        start = text.rfind("\\boxed{", 0, start)  # unbalanced (truncated): try an earlier one
    return None


def gold_answer(row: dict[str, Any], options: Any) -> Any:
    """The gold answer a check compares with: the row's ``answer_key`` (for ``final_answer``, what follows the
    gold's own marker when it holds one, as GSM8K's worked solutions do); None when it is missing, null or blank.
    A blank gold is no answer: ``exact`` would pay an empty completion for matching it."""
    gold = row.get(options.answer_key)
    if options.check == "final_answer" and isinstance(gold, str):
        final = extract_final(gold, options.marker)
        gold = gold if final is None else final
    return None if gold is None or (isinstance(gold, str) and not gold.strip()) else gold


def _takes_completion_and_row(fn: Callable[..., Any], spec: str, context: PluginContext) -> None:
    """A custom check is called as ``fn(completion, row)``: one that cannot take that fails now, not at step 1
    (where every call would be a scored error)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # some builtins have no signature to read: the first call will tell
    try:
        signature.bind("completion", {})
    except TypeError as e:
        raise UserError(f"rule source '{context.name}': custom check '{spec}' cannot be called as "
                        f"{getattr(fn, '__name__', 'fn')}(completion, row): {e}") from None


class _QuietTimeoutNotice(logging.Filter):
    # math-verify warns "Timeout is disabled" when its signal timeout is off; off the main thread this
    # source bounds the call itself, so the notice would mislead
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError:
        raise ValueError(f"check 'math' needs the math-verify package: {_MATH_INSTALL}") from None
    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_QuietTimeoutNotice())
    return math_verify


def _gold_latex(gold: Any) -> str:
    """A gold answer as math-verify parses it best: inside ``$...$`` unless it is delimited already."""
    text = str(gold).strip()
    return text if any(d in text for d in ("$", "\\boxed", "\\[", "\\(")) else f"${text}$"


def math_score(completion: str, gold: Any, seconds: int | None) -> tuple[str, Any]:
    """``("ok", True/False)`` whether math-verify finds the completion's answer equal to ``gold``;
    ``("no_answer", None)`` when it finds no answer in the completion; ``("error", reason)`` when the gold
    answer does not parse or parsing/comparing fails or runs past ``seconds`` (math-verify's own signal
    timeout, per parse and per comparison; None: no timeout, for a caller that bounds the call itself)."""
    mv = _math_verify()
    from math_verify.errors import TimeoutException
    try:
        golds = mv.parse(_gold_latex(gold), parsing_timeout=seconds, raise_on_error=True)
        if not golds:
            return "error", f"gold answer {str(gold)[:80]!r} does not parse as math"
        preds = mv.parse(completion, parsing_timeout=seconds, raise_on_error=True)
    except TimeoutException:
        return "error", f"math-verify parsing timed out after {seconds}s"
    except Exception as e:  # noqa: BLE001 - a parse that fails is an error with its reason, never a 0
        return "error", f"math-verify could not parse: {type(e).__name__}: {str(e)[:160]}"
    if not preds:
        return "no_answer", None
    failure = None
    for g in golds:  # pair by pair, so one comparison that fails does not hide another that succeeds
        for p in preds:
            try:
                if mv.verify(g, p, timeout_seconds=seconds, raise_on_error=True):
                    return "ok", True
            except TimeoutException:
                failure = failure or f"math-verify comparison timed out after {seconds}s"
            except Exception as e:  # noqa: BLE001
                failure = failure or f"math-verify could not compare: {type(e).__name__}: {str(e)[:160]}"
    return ("error", failure) if failure else ("ok", False)


class RuleSource(RewardSource):
    """Scores a completion by a declarative check against its dataset row.

    Checks: ``exact`` (equal after normalising whitespace, optionally ignoring case); ``numeric``
    (equal within ``tolerance`` absolute or ``relative_tolerance``, as in ``math.isclose``); ``regex``
    (``pattern`` must ``fullmatch`` or ``search`` the completion; needs no gold answer);
    ``final_answer`` (the text after the last ``marker``, or the last ``\\boxed{}`` when the marker is
    ``boxed``, compared ``exact`` or ``numeric``); ``math`` (math-verify finds the completion's answer, LaTeX or
    plain: a "final answer is" phrase, a ``\\boxed{}``, else the last expression; it must equal the gold
    answer as a number, fraction, percentage, set, interval or expression); ``custom`` (``function: "module:name"``, called as ``fn(completion, row)``:
    True/False map to ``reward_correct``/``reward_wrong``, a number is the reward itself, None abstains;
    the module is found next to the recipe first). On an episode every check reads its final answer, the last
    assistant turn (``Rollout.answer``), not the transcript of tool calls and the environment's turns.

    Choices: a completion that is not a number, or a ``final_answer`` completion without the marker,
    is a wrong answer (``reward_wrong``): a format failure is the policy's fault. A missing or
    unparseable gold answer is the dataset's fault, so it is ``Score.error``. When the gold answer
    itself holds the marker (GSM8K's ``answer`` is a worked solution ending ``#### 72``), the same
    extraction applies to it. A custom check that raises, returns a wrong type or runs past
    ``timeout`` is ``Score.error`` with the reason, never 0. It runs in a daemon thread: Python
    cannot kill a thread, so a hung call keeps running in the background (it cannot block the loop
    or process exit); after 16 such calls still hung, further calls are errors without starting one.
    ``math``: a gold answer that does not parse, and a parse or comparison that fails or runs past
    ``timeout``, are ``Score.error``; so is a completion with no answer math-verify can find, unless
    ``no_answer: wrong``. On the main thread math-verify's own signal timeout interrupts it (whole
    seconds, rounded up); elsewhere signals cannot, so the call runs bounded in a daemon thread as above.
    """

    name = "rule"

    class Options(PluginOptions):
        check: Literal["exact", "numeric", "regex", "final_answer", "math", "custom"] = Field(
            description="how the completion is compared with its row (see the source's description)")
        answer_key: str = Field("answer", description="the row's field holding the gold answer")
        reward_correct: float = Field(1.0, description="the score of a correct completion")
        reward_wrong: float = Field(0.0, description="the score of a wrong one")
        case_sensitive: bool = Field(True, description="exact, regex, final_answer: compare case too")
        tolerance: float = Field(1e-6, ge=0, description="numeric: absolute tolerance")
        relative_tolerance: float | None = Field(None, ge=0, description="numeric: relative tolerance, as in math.isclose")
        pattern: str | None = Field(None, description="regex: the regular expression")
        mode: Literal["fullmatch", "search"] = Field("fullmatch", description="regex: match all of the completion, "
                                                                              "or find it anywhere")
        marker: str = Field("####", min_length=1, description="final_answer: the answer follows its last "
                                                             "occurrence; boxed: the last \\boxed{}")
        compare: Literal["exact", "numeric"] = Field("exact", description="final_answer: how the answer is compared")
        function: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$", description="custom: module:name, "
                                     "called as fn(completion, row); the recipe's folder is on sys.path")
        timeout: float = Field(5.0, gt=0, description="custom, math: seconds before a call is an error")
        no_answer: Literal["error", "wrong"] = Field("error", description="math: a completion with no answer "
                                                     "math-verify can find is an error, or a wrong answer")

        @field_validator("pattern")
        @classmethod
        def _compiles(cls, pattern: str | None) -> str | None:
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None
            return pattern

        @model_validator(mode="after")
        def _fits_check(self) -> RuleSource.Options:
            applies = _APPLIES[self.check] | {"check", "reward_correct", "reward_wrong"}
            if self.check == "final_answer":  # only the chosen comparison's options apply
                applies -= {"tolerance", "relative_tolerance"} if self.compare == "exact" else {"case_sensitive"}
            if extra := sorted(self.model_fields_set - applies):
                where = f" with compare '{self.compare}'" if extra[0] in _APPLIES[self.check] else ""
                raise ValueError(f"option '{extra[0]}' does not apply to check '{self.check}'{where}")
            needed = {"regex": "pattern", "custom": "function"}.get(self.check)
            if needed and getattr(self, needed) is None:
                raise ValueError(f"check '{self.check}' needs option '{needed}'")
            if self.check == "math":
                _math_verify()
            return self

    def __init__(self, options: Options, context: PluginContext):
        super().__init__(options, context)
        o = self.options
        self._regex = re.compile(o.pattern, 0 if o.case_sensitive else re.IGNORECASE) if o.pattern else None
        self._fn = self._import(o.function, context) if o.check == "custom" else None
        self._hung: list[threading.Thread] = []

    @classmethod
    def preflight(cls, options: Options, context: PluginContext, rows: Any) -> None:
        """Before any model loads: the custom function imports; every train row has the gold answer."""
        if options.check == "custom":
            _takes_completion_and_row(cls._import(options.function, context), options.function, context)
        if options.check in _GOLD_CHECKS and rows is not None:
            key = options.answer_key
            lacking = [(line, row.get(key)) for row, line in zip(rows, rows.lines) if gold_answer(row, options) is None]
            if lacking:
                line, value = lacking[0]
                blank = ""
                if isinstance(value, str) and value.strip():
                    blank = f" (line {line}'s is blank after its last {options.marker})"
                elif value is not None:
                    blank = f" (line {line}'s is {value!r}: a blank gold would pay an empty reply)"
                raise UserError(f"{rows.origin}:{line}: {len(lacking)} of {len(rows)} rows have no '{key}', "
                                f"the gold answer rule source '{context.name}' (check {options.check}) reads{blank}")

    @staticmethod
    def _import(spec: str, context: PluginContext) -> Callable[..., Any]:
        return context.load_callable(spec, "custom check", f"rule source '{context.name}'")

    def describe(self) -> dict[str, Any]:
        return self.options.model_dump(exclude_unset=True)

    def score(self, rollouts: list[Rollout]) -> list[Score]:
        return [self._score_one(r.answer.strip(), r.row) for r in rollouts]

    def _verdict(self, correct: bool) -> Score:
        return Score.ok(self.options.reward_correct if correct else self.options.reward_wrong)

    def _score_one(self, completion: str, row: dict[str, Any]) -> Score:
        o = self.options
        if o.check == "regex":
            match = self._regex.fullmatch if o.mode == "fullmatch" else self._regex.search
            return self._verdict(match(completion) is not None)
        if o.check == "custom":
            return self._call_custom(completion, row)
        gold, compare = gold_answer(row, o), o.check
        if gold is None:
            return Score.error(f"row has no gold answer in field '{o.answer_key}' (missing, null or blank)")
        if o.check == "math":
            return self._math(completion, gold)
        if o.check == "final_answer":
            completion, compare = extract_final(completion, o.marker), o.compare
            if completion is None:
                return self._verdict(False)  # format failure: no marker, so no answer
        if compare == "exact":
            return self._verdict(normalize(completion, o.case_sensitive) == normalize(gold, o.case_sensitive))
        expected = parse_number(gold)
        if expected is None:
            return Score.error(f"gold answer {str(gold)[:80]!r} in field '{o.answer_key}' is not a number")
        got = parse_number(completion)
        return self._verdict(got is not None and math.isclose(
            got, expected, abs_tol=o.tolerance, rel_tol=o.relative_tolerance or 0.0))

    def _math(self, completion: str, gold: Any) -> Score:
        o = self.options
        if threading.current_thread() is threading.main_thread():
            status, value = math_score(completion, gold, max(1, math.ceil(o.timeout)))
        else:
            out = self._bounded(lambda: math_score(completion, gold, None), "math check")
            if "error" in out:
                return Score.error(out["error"])
            status, value = out["value"]
        if status == "error":
            return Score.error(value)
        if status == "no_answer":
            return self._verdict(False) if o.no_answer == "wrong" else \
                Score.error("math-verify found no answer in the completion")
        return self._verdict(value)

    def _bounded(self, fn: Callable[[], Any], what: str) -> dict[str, Any]:
        """``{"value": fn()}``, or ``{"error": reason}`` when it raised, ran past ``timeout`` or too many
        earlier calls are still hung."""
        o = self.options
        self._hung = [t for t in self._hung if t.is_alive()]
        if len(self._hung) >= _MAX_HUNG:
            return {"error": f"{what}: {len(self._hung)} earlier calls still hung"}
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - reported as the score's reason
                out["error"] = f"{what} raised {type(e).__name__}: {str(e)[:200]}"

        # A daemon thread, not a ThreadPoolExecutor: the executor joins its workers at exit, so a hung
        # check would block the process from ever ending.
        thread = threading.Thread(target=run, name=f"rule-{o.check}-{self.context.name}", daemon=True)
        thread.start()
        thread.join(o.timeout)
        if thread.is_alive():
            self._hung.append(thread)
            return {"error": f"{what} timed out after {o.timeout:g}s"}
        return out

    def _call_custom(self, completion: str, row: dict[str, Any]) -> Score:
        o = self.options
        out = self._bounded(lambda: self._fn(completion, row), f"custom check {o.function}")
        if "error" in out:
            return Score.error(out["error"])
        value = out["value"]
        if value is None:
            return Score.abstain(f"custom check {o.function} returned None")
        if isinstance(value, bool):
            return self._verdict(value)
        if isinstance(value, numbers.Real):  # numpy scalars too
            return Score.ok(value)
        return Score.error(f"custom check {o.function} returned {type(value).__name__}, "
                           "expected float, bool or None")


@hookimpl
def frl_register_reward_sources(register):
    register(RuleSource)
