"""Through ``frl train``: an SFT file's ``tools`` column (TRL's) is offered to the model with each conversation,
as an episode offers its tools, and a bad one is one line naming the file and line, exit 2, before any model
loads and before a run folder exists."""
from __future__ import annotations

import json

from crash_at import frl

SCHEMA = {"type": "function", "function": {"name": "calculate", "description": "Evaluate an expression.",
                                           "parameters": {"type": "object", "properties": {
                                               "expression": {"type": "string", "description": "it"}},
                                               "required": ["expression"]}}}
DEMO = [{"role": "user", "content": "12*3?"},
        {"role": "assistant", "content": '<tool_call>{"name": "calculate", "arguments": {"expression": "12*3"}}'
                                         '</tool_call>'},
        {"role": "tool", "name": "calculate", "content": "36"}, {"role": "assistant", "content": "36"}]
RECIPE = """name: sft-tools
model: {path: builtin:tiny-gpt2, tiny: {n_positions: 512}}
stages:
  - name: sft
    optimizer: sft
    data: {train: demos.jsonl}
    train: {steps: 2, batch_size: 2}
"""


def write(tmp_path, rows) -> None:
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "demos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_tools_column_is_part_of_what_the_model_reads(tmp_path):
    # without tools the conversation fits the 512-token context; the Hermes description of the tool does not
    write(tmp_path, [{"messages": DEMO}] * 2)
    ok = frl("train", "recipe.yaml", "--no-progress", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    write(tmp_path, [{"messages": DEMO}, {"messages": DEMO, "tools": [SCHEMA]}])
    long = frl("train", "recipe.yaml", "--no-progress", "--set", "output_dir=again", cwd=tmp_path)
    assert long.returncode == 2, long.stderr[-2000:]
    (line,) = long.stderr.strip().splitlines()
    assert "demos.jsonl:2:" in line and "longer than the model's context" in line
    assert not (tmp_path / "again" / "sft-tools").exists()   # no run folder


def test_a_bad_tools_column_is_one_line_naming_the_file_and_line(tmp_path):
    write(tmp_path, [{"messages": DEMO}, {"messages": DEMO, "tools": '[{"name": "calc'}])
    bad = frl("train", "recipe.yaml", "--no-progress", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    (line,) = bad.stderr.strip().splitlines()
    assert "demos.jsonl:2: field 'tools' is a string but not JSON" in line
    assert not (tmp_path / "runs" / "sft-tools").exists()
