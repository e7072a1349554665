"""Dataset files with malformed rows fail with the file and line; empty data and overlong prompts too."""
import textwrap

import pytest

from feedback_rl.cli import main


def recipe(tmp_path, data_line: str, rows: str, optimizer="sft", extra=""):
    (tmp_path / "data.jsonl").write_text(rows)
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
    ('{"prompt": "1+1=", "completion": "2"}\n\n["a list"]\n', "data.jsonl:3: each line must be a JSON object, got list"),
    ('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2="}\n',
     "data.jsonl:2: missing field 'completion' (stage 's' (sft) needs prompt, completion)"),
    ('{"prompt": 7, "completion": "2"}\n', "data.jsonl:1: field 'prompt' must be str, got int"),
    ("", "data.jsonl: the dataset is empty; stage 's' (sft) needs at least one row"),
    ('{"prompt": "' + "9" * 80 + '", "completion": "2"}\n',
     "data.jsonl:1: prompt is 80 tokens; with max_new_tokens 32 it exceeds the model's context of 64"),
])
def test_bad_data_file(tmp_path, capsys, rows, message):
    assert main(["train", str(recipe(tmp_path, "data.jsonl", rows)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
