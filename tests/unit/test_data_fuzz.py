"""Whatever bytes a data file holds, reading it gives rows or one UserError line naming the file; never another
exception. Random bytes, random JSON shapes and random CSV cells, in every format."""
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_rl.rows.dataset import TEXT_OR_TURNS, load
from feedback_rl.errors import UserError

SUFFIXES = [".jsonl", ".json", ".csv", ".parquet"]
NEEDS = {"prompt": TEXT_OR_TURNS, "completion": str, "label": bool}
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["prompt", "completion", "role", "content", "label", "x"]), inner,
                               max_size=4), max_leaves=12)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(data)
        try:
            load(path.name, Path(tmp)).require(NEEDS, "stage 's' (kto)")
        except UserError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path)), str(e)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(SUFFIXES))
def test_random_bytes(data, suffix):
    check(data, suffix)


@FUZZ
@given(st.lists(json_values, max_size=4), st.sampled_from([".jsonl", ".json"]), st.booleans())
def test_random_json_shapes(values, suffix, as_array):
    text = json.dumps(values) if as_array else "\n".join(json.dumps(v) for v in values)
    check(text.encode(), suffix)


@FUZZ
@given(st.lists(st.lists(st.text(max_size=6), min_size=1, max_size=4), max_size=5))
def test_random_csv_cells(rows):
    import csv
    import io
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    check(out.getvalue().encode(), ".csv")
