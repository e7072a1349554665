"""Every accepted data source gives the same rows: JSONL, JSON (array or lines), CSV (with or without a BOM),
Parquet, `datasets` folders and builders; column renames; shuffle, holdout and size; conversational rows."""
from pathlib import Path

import pytest

from feedback_rl.rows.dataset import TEXT_OR_TURNS, Turns, load
from feedback_rl.config.recipe import DataSpec
from feedback_rl.rows.refs import FileData, HubData

DATA = Path(__file__).parents[1] / "data"
ROWS = [{"prompt": "2+3=", "completion": "5"}, {"prompt": "4+4=", "completion": "8"},
        {"prompt": "1+6=", "completion": "7"}]
MESSAGES = [[{"role": "user", "content": "2+3="}, {"role": "assistant", "content": "5"}],
            [{"role": "user", "content": "4+4="}, {"role": "assistant", "content": "8"}]]


@pytest.mark.parametrize("name,lines", [
    ("sft.jsonl", [1, 2, 3]), ("sft_array.json", [2, 3, 4]), ("sft_lines.json", [1, 2, 3]),
    ("sft_bom.csv", [2, 3, 4]), ("sft.parquet", [1, 2, 3]),
])
def test_every_file_format_reads_the_same_rows_and_where_each_came_from(name, lines):
    rows = load(name, DATA)
    assert list(rows) == ROWS
    assert rows.lines == lines
    assert rows.require({"prompt": str, "completion": str}, "sft") is rows


def test_a_bom_is_dropped_from_the_first_column_name(tmp_path):
    (tmp_path / "b.jsonl").write_bytes(b'\xef\xbb\xbf{"prompt": "a", "completion": "b"}\n')
    assert list(load("b.jsonl", tmp_path)) == [{"prompt": "a", "completion": "b"}]
    assert load("sft_bom.csv", DATA).columns == ["prompt", "completion"]


def test_a_recipe_takes_a_path_a_file_mapping_and_a_dataset_mapping():
    spec = DataSpec(train={"path": "qa.csv", "columns": {"prompt": "question"}}, eval="sft.jsonl")
    assert isinstance(spec.train, FileData) and spec.eval == "sft.jsonl"
    spec = DataSpec(train={"dataset": "org/name", "split": "test", "name": "main"})
    assert isinstance(spec.train, HubData) and spec.train.split == "test" and spec.train.part == "train"


def test_columns_rename_target_from_source_and_keep_the_rest():
    rows = load(FileData(path="qa.csv", columns={"prompt": "question", "completion": "final"}, shuffle=False), DATA)
    assert list(rows) == ROWS and rows.columns == ["prompt", "completion"]
    swapped = load(FileData(path="sft.jsonl", columns={"prompt": "completion", "completion": "prompt"},
                            shuffle=False), DATA)
    assert swapped[0] == {"prompt": "5", "completion": "2+3="}


def test_csv_cells_are_parsed_when_a_typed_field_is_required():
    rows = load("labeled.csv", DATA).require({"prompt": str, "completion": str, "label": bool}, "kto")
    assert [r["label"] for r in rows] == [True, False, True]
    assert [r["label"] for r in load("labeled.parquet", DATA)] == [True, False, True]


def test_holdout_carves_a_disjoint_eval_part_and_size_and_seed_pick_rows(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(f'{{"prompt": "p{i}", "completion": "c{i}"}}\n' for i in range(50)))
    train = load(FileData(path="many.jsonl", holdout=10), tmp_path)
    held = load(FileData(path="many.jsonl", holdout=10, part="eval"), tmp_path)
    assert len(train) == 40 and len(held) == 10
    assert {r["prompt"] for r in train}.isdisjoint(r["prompt"] for r in held)
    assert {r["prompt"] for r in train} | {r["prompt"] for r in held} == {f"p{i}" for i in range(50)}
    # each row still names its own line of the file
    assert all(r["prompt"] == f"p{line - 1}" for r, line in zip(train, train.lines))
    assert list(load(FileData(path="many.jsonl", holdout=10, size=5), tmp_path)) == list(train)[:5]
    other = load(FileData(path="many.jsonl", holdout=10, seed=1, part="eval"), tmp_path)
    assert [r["prompt"] for r in other] != [r["prompt"] for r in held]
    plain = load(FileData(path="many.jsonl", shuffle=False, size=3), tmp_path)
    assert [r["prompt"] for r in plain] == ["p0", "p1", "p2"]


def test_conversational_rows_keep_their_turns_and_require_text_or_turns():
    msgs = load("messages.jsonl", DATA).require({"messages": Turns}, "sft")
    assert list(msgs)[:2] == [{"messages": m} for m in MESSAGES]
    assert [r["messages"] for r in load("messages.parquet", DATA)][:2] == MESSAGES
    prompts = load("prompts_turns.jsonl", DATA).require({"prompt": TEXT_OR_TURNS}, "grpo")
    assert prompts[0]["prompt"] == [{"role": "user", "content": "2+3="}]
    load("sft.jsonl", DATA).require({"prompt": TEXT_OR_TURNS}, "grpo")
    pairs = load("pairs_turns.jsonl", DATA).require({"chosen": Turns, "rejected": Turns}, "dpo")
    assert pairs[0]["rejected"][1] == {"role": "assistant", "content": "6"}


def _save(tmp_path, dict_of_splits: bool) -> Path:
    import datasets
    ds = datasets.Dataset.from_list([{"question": r["prompt"], "final": r["completion"]} for r in ROWS])
    out = tmp_path / "saved"
    (datasets.DatasetDict({"train": ds, "test": ds.select([0])}) if dict_of_splits else ds).save_to_disk(str(out))
    return out


def test_a_save_to_disk_folder_loads_through_datasets_with_renames(tmp_path):
    _save(tmp_path, dict_of_splits=False)
    rows = load(HubData(dataset="saved", columns={"prompt": "question", "completion": "final"}, shuffle=False),
                tmp_path)
    assert list(rows) == ROWS and rows.unit == "row" and rows.columns == ["prompt", "completion"]
    assert rows.where(1).endswith("saved (train): row 2")


def test_a_saved_dataset_dict_gives_the_named_split(tmp_path):
    _save(tmp_path, dict_of_splits=True)
    rows = load(HubData(dataset="saved", split="test", columns={"prompt": "question"}), tmp_path)
    assert [r["prompt"] for r in rows] == ["2+3="]


def test_a_folder_of_data_files_and_a_builder_with_data_files_load(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "train.jsonl").write_text((DATA / "sft.jsonl").read_text())
    assert list(load(HubData(dataset="files", shuffle=False), tmp_path)) == ROWS
    rows = load(HubData(dataset="json", data_files=["sft.jsonl"], shuffle=False), DATA)
    assert list(rows) == ROWS
