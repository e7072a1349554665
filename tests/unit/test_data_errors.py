"""Every mistake in a data file is one line naming the file and the line, row or column (exit code 2 in the CLI):
encodings, JSON, CSV and Parquet shapes, renames, empty files, folders, turn lists; empty data and long prompts."""
import textwrap

import pytest

from feedback_rl.commands.cli import main
from feedback_rl.rows.dataset import TEXT_OR_TURNS, load
from feedback_rl.errors import UserError
from feedback_rl.rows.refs import FileData, HubData

SFT = {"prompt": TEXT_OR_TURNS, "completion": str}
FILES = {
    "latin1.jsonl": b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n',
    "latin1.csv": b'prompt,completion\n"a",b\ncaf\xe9,b\n',
    "utf16.csv": "prompt,completion\n".encode("utf-16"),
    "bad.jsonl": b'{"prompt": "a", "completion": "b"}\n{"prompt": "a" "completion": "b"}\n',
    "list.jsonl": b'{"prompt": "a", "completion": "b"}\n\n["a list"]\n',
    "comma.json": b'[\n {"prompt": "a"},\n {"prompt": "b"}\n {"prompt": "c"}\n]\n',
    "item.json": b'[\n {"prompt": "a"},\n "b"\n]\n',
    "open.json": b'[\n {"prompt": "a"},\n',
    "object.json": b'{\n "prompt": "a",\n "completion": "b"\n}\n',
    "empty.jsonl": b"",
    "empty.json": b"[]",
    "header.csv": b"prompt,completion\n",
    "short.csv": b"prompt,completion\na,b\nc\n",
    "twice.csv": b"prompt,prompt\na,b\n",
    "label.csv": b"prompt,completion,label\na,b,maybe\n",
    "question.csv": b"question,final\na,b\n",
    "fake.parquet": b"not parquet",
    "notes.txt": b"x",
    "noc.jsonl": b'{"prompt": [{"role": "user"}], "completion": "b"}\n',
    "intc.jsonl": b'{"messages": [{"role": "user", "content": 3}]}\n',
    "strturn.jsonl": b'{"messages": ["hi"]}\n',
    "noturns.jsonl": b'{"messages": []}\n',
    "dictprompt.jsonl": b'{"prompt": {"role": "user", "content": "x"}, "completion": "b"}\n',
    "rows.jsonl": b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n',
}


@pytest.fixture
def folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": [1, 2]}), tmp_path / "int.parquet")
    pq.write_table(pa.table({"prompt": ["a", None], "completion": ["x", "y"]}), tmp_path / "null.parquet")
    pq.write_table(pa.table({"question": ["a"], "completion": ["b"]}), tmp_path / "question.parquet")
    (tmp_path / "afolder").mkdir()
    return tmp_path


CASES = [
    ("latin1.jsonl", "latin1.jsonl:2: not UTF-8: byte 0xe9 at byte 15 of the line (byte 50 of the file); "
                     "save the file as UTF-8"),
    ("latin1.csv", "latin1.csv:3: not UTF-8: byte 0xe9 at byte 3 of the line (byte 27 of the file)"),
    ("utf16.csv", "utf16.csv: is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8"),
    ("bad.jsonl", "bad.jsonl:2: invalid JSON: Expecting ',' delimiter (column 16)"),
    ("list.jsonl", "list.jsonl:3: each line must be a JSON object, got an array"),
    ("comma.json", "comma.json:4: invalid JSON: expected ',' or ']' after item 2"),
    ("item.json", "item.json:3: item 2 of the array must be a JSON object, got a string"),
    ("open.json", "open.json:3: invalid JSON: the array is not closed (no ']')"),
    ("object.json", "object.json: holds one JSON object over several lines; a .json data file is one array of "
                    "objects, or one object per line"),
    ("empty.jsonl", "empty.jsonl: no rows (the file is empty)"),
    ("empty.json", "empty.json: no rows (the file is empty)"),
    ("header.csv", "header.csv: no rows (only a header line)"),
    ("short.csv", "short.csv:3: 1 field, but the header has 2 (prompt, completion)"),
    ("twice.csv", "twice.csv:1: the header names column 'prompt' twice"),
    ("fake.parquet", "fake.parquet: not a readable Parquet file: "),
    ("notes.txt", "notes.txt: unknown data file type '.txt'; expected one of .jsonl, .json, .csv, .parquet"),
    ("afolder", "afolder: is a folder, not a data file; read a save_to_disk folder or a folder of data files with "
                "{dataset: "),
    ("nowhere.jsonl", "nowhere.jsonl: data file not found"),
    ("noc.jsonl", "noc.jsonl:1: prompt[0] has no 'content' (a turn is {role, content}; it has: role)"),
    ("intc.jsonl", "intc.jsonl:1: messages[0].content must be text, got a number"),
    ("strturn.jsonl", "strturn.jsonl:1: messages[0] must be a {role, content} turn, got a string"),
    ("noturns.jsonl", "noturns.jsonl:1: 'messages' is an empty list of turns"),
    ("dictprompt.jsonl", "dictprompt.jsonl:1: field 'prompt' must be text or a list of {role, content} turns, "
                         "got an object"),
    ("int.parquet", "int.parquet: row 1: column 'completion' must be text, got a number"),
    ("null.parquet", "null.parquet: row 2: column 'prompt' must be text or a list of {role, content} turns, got null"),
    ("question.csv", "question.csv: no column 'prompt' (stage 's' (sft) needs prompt, completion); its columns: "
                     "question, final (rename one with columns: {prompt: NAME})"),
    ("question.parquet", "question.parquet: no column 'prompt' (stage 's' (sft) needs prompt, completion)"),
    (FileData(path="question.csv", columns={"prompt": "questoin"}),
     "question.csv: columns.prompt: no column 'questoin' (did you mean 'question'?); the columns are: question, final"),
    (FileData(path="rows.jsonl", columns={"prompt": "text"}),
     "rows.jsonl: columns.prompt: no column 'text'; the columns are: prompt, completion"),
    (FileData(path="rows.jsonl", holdout=2), "rows.jsonl: holdout 2 leaves no rows to train on (there are 2)"),
    (HubData(dataset="afolder"), "afolder (train): The directory at "),
    (HubData(dataset="csv"), "dataset 'csv': set data_files to the files this builder reads"),
    (HubData(dataset="a/b/c"), "dataset 'a/b/c': no such local folder, and not a hub id (namespace/name)"),
]


@pytest.mark.parametrize("ref,message", CASES, ids=[str(getattr(c[0], "path", c[0])) for c in CASES])
def test_each_mistake_is_one_line_naming_the_file_and_where(folder, ref, message):
    with pytest.raises(UserError) as e:
        load(ref, folder).require(SFT, "stage 's' (sft)")
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(str(folder)) or text.startswith("dataset '"), text
    assert message in text.replace(f"{folder}/", ""), text


def test_a_csv_cell_that_is_no_boolean_names_line_and_column(folder):
    with pytest.raises(UserError, match=r"label.csv:2: column 'label' must be true or false, got 'maybe'$"):
        load("label.csv", folder).require({"prompt": str, "completion": str, "label": bool}, "stage 'k' (kto)")


def test_a_hub_id_offline_is_one_line_naming_it_and_the_setting(folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        load(HubData(dataset="nobody/no-such-dataset"), folder)
    assert str(e.value) == ("dataset 'nobody/no-such-dataset': not in the local cache, and the hub cannot be "
                            "reached (HF_HUB_OFFLINE=1 is set)")


# --------------------------------------------------------------------------- through `frl train`

def recipe(tmp_path, data_line: str, rows: str | bytes, name="data.jsonl", optimizer="sft", extra=""):
    (tmp_path / name).write_bytes(rows if isinstance(rows, bytes) else rows.encode())
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: d
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: s
            optimizer: {optimizer}
            data: {{train: {data_line}}}
            train: {{steps: 1, batch_size: 2}}
        {extra}"""))
    return path


@pytest.mark.parametrize("rows,message", [
    ('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2=" "completion": "4"}\n',
     "data.jsonl:2: invalid JSON: Expecting ',' delimiter"),
    ('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2="}\n',
     "data.jsonl:2: missing field 'completion' (stage 's' (sft) needs prompt, completion)"),
    ('{"prompt": 7, "completion": "2"}\n', "data.jsonl:1: field 'prompt' must be text"),
    ("", "data.jsonl: no rows (the file is empty)"),
    (b'{"prompt": "caf\xe9", "completion": "2"}\n', "data.jsonl:1: not UTF-8: byte 0xe9 at byte 15 of the line"),
    ('{"prompt": "' + "9" * 80 + '", "completion": "2"}\n{"prompt": "1+1=", "completion": "2"}\n',
     # an SFT stage does not generate from its rows: the prompt alone must fit
     "data.jsonl:1: prompt is 80 tokens, longer than the model's context of 64"),
])
def test_bad_data_file(tmp_path, capsys, rows, message):
    assert main(["train", str(recipe(tmp_path, "data.jsonl", rows)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_renamed_column_that_does_not_exist_fails_in_train(tmp_path, capsys):
    path = recipe(tmp_path, "{path: qa.csv, columns: {prompt: questoin}}", "question,completion\na,b\n", "qa.csv")
    assert main(["train", str(path), "--no-progress"]) == 2
    assert "qa.csv: columns.prompt: no column 'questoin' (did you mean 'question'?)" in capsys.readouterr().err


@pytest.mark.parametrize("line,message", [
    ("{path: data.jsonl, part: eval}", "stages[0].data.train: part: eval takes the held-out rows; set holdout to how many"),
    ("{pth: data.jsonl}", "stages[0].data.train.pth: unknown key (did you mean 'path'?)"),
    ("{fiel: data.jsonl}", "stages[0].data.train: expected a data file path, or a mapping with one of the keys "
                           "generator, path, dataset"),
    ("{path: nowhere.jsonl}", "stages[0].data.train.path: file not found: nowhere.jsonl"),
    ("{path: folder}", "stages[0].data.train.path: folder is a folder, not a data file; read a save_to_disk folder "
                       "or a folder of data files with {dataset: folder}"),
    ("{dataset: ./nowhere}", "stages[0].data.train.dataset: file not found: ./nowhere"),
])
def test_data_keys_are_checked_by_validate(tmp_path, capsys, line, message):
    (tmp_path / "folder").mkdir()
    assert main(["validate", str(recipe(tmp_path, line, '{"prompt": "a", "completion": "b"}\n'))]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
