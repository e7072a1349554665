"""docs/data.md's table of mistakes shows the messages the code gives: each is made again here and compared."""
import textwrap
from pathlib import Path

import pytest

from feedback_rl.commands.cli import main
from feedback_rl.rows.dataset import TEXT_OR_TURNS, Turns, load
from feedback_rl.errors import UserError
from feedback_rl.rows.refs import FileData, HubData

DOC = (Path(__file__).parents[2] / "docs" / "data.md").read_text()
SFT = {"prompt": TEXT_OR_TURNS, "completion": str}
FILES = {
    "latin1.jsonl": b'{"prompt": "2+3=", "completion": "5"}\n{"prompt": "caf\xe9", "completion": "b"}\n',
    "typo.jsonl": b'{"prompt": "2+3=", "completion": "5"}\n{"prompt": "4+4=" "completion": "8"}\n',
    "missing.jsonl": b'{"prompt": "2+3=", "completion": "5"}\n{"prompt": "4+4="}\n',
    "object.json": b'{\n  "prompt": "2+3=",\n  "completion": "5"\n}\n',
    "qa.csv": b"question,final\n2+3=,5\n",
    "labels.csv": b"prompt,completion,label\n2+3=,5,yes\n4+4=,9,maybe\n",
    "turn.jsonl": b'{"messages": [{"role": "user", "content": "2+3="}, {"role": "assistant"}]}\n',
    "content.jsonl": b'{"prompt": [{"role": "user", "content": ["2+3="]}]}\n',
    "empty.jsonl": b"",
}
ROW_CASES = [
    ("data/latin1.jsonl", SFT), ("data/typo.jsonl", SFT), ("data/object.json", SFT), ("data/missing.jsonl", SFT),
    ("data/qa.csv", SFT), ("data/typed.parquet", SFT),
    ("data/labels.csv", {"prompt": str, "completion": str, "label": bool}),
    (FileData(path="data/qa.csv", columns={"prompt": "questoin"}), SFT), ("data/turn.jsonl", {"messages": Turns}),
    ("data/content.jsonl", {"prompt": TEXT_OR_TURNS}), ("data/empty.jsonl", SFT),
    (HubData(dataset="openai/gsm8k", name="main"), SFT),
]
RECIPE_CASES = ["{path: data/saved}", "{path: data/nowhere.jsonl}", "{pth: data/qa.csv}",
                "{path: data/qa.csv, part: eval}"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "data" / "saved").mkdir(parents=True)
    for name, data in FILES.items():
        (tmp_path / "data" / name).write_bytes(data)
    pq.write_table(pa.table({"prompt": ["2+3="], "completion": [5]}), tmp_path / "data" / "typed.parquet")
    monkeypatch.chdir(tmp_path)   # messages name paths as a recipe in this folder would
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("ref,fields", ROW_CASES, ids=[str(getattr(r, "path", getattr(r, "dataset", r)))
                                                        for r, _ in ROW_CASES])
def test_documented_row_errors_are_the_real_messages(folder, ref, fields):
    with pytest.raises(UserError) as e:
        load(ref, Path(".")).require(fields, "stage 'sft' (sft)")
    assert f"`error: {e.value}`" in DOC


@pytest.mark.parametrize("line", RECIPE_CASES)
def test_documented_recipe_errors_are_the_real_messages(folder, capsys, line):
    Path("recipe.yaml").write_text(textwrap.dedent(f"""\
        name: d
        stages:
          - name: sft
            optimizer: sft
            data:
              train: {line}
        """))
    assert main(["validate", "recipe.yaml"]) == 2
    assert f"`{capsys.readouterr().err.strip()}`" in DOC


def test_documented_model_error_is_the_real_message(monkeypatch):
    from feedback_rl.modeling import hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        hub.require_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert f"`error: {e.value}`" in DOC
