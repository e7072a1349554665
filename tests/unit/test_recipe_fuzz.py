"""Fuzzing the recipe loader: random YAML and random mutations of the shipped recipes always give
a valid recipe or a one-line UserError, never a traceback."""
import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_rl.errors import UserError
from feedback_rl.config.recipe import load

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))
SHIPPED = [yaml.safe_load(p.read_text()) for p in RECIPES]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(path: Path) -> None:
    try:
        load(path)
    except UserError as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    check(path)


@FUZZ
@given(doc=values)
def test_random_yaml_documents(tmp_path, doc):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    check(path)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@FUZZ
@given(data=st.data())
def test_mutated_shipped_recipes(tmp_path, data):
    doc = copy.deepcopy(data.draw(st.sampled_from(SHIPPED)))
    paths = [p for p in _paths(doc) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths))
        parent = doc
        try:
            for part in where[:-1]:
                parent = parent[part]
            action = data.draw(st.sampled_from(["replace", "delete", "rename"]))
            if action == "replace":
                parent[where[-1]] = data.draw(values)
            elif action == "delete":
                del parent[where[-1]]
            elif isinstance(parent, dict):
                parent[where[-1] + data.draw(st.text(min_size=1, max_size=2))] = parent.pop(where[-1])
        except (KeyError, IndexError, TypeError):
            continue
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(doc))
    check(path)
