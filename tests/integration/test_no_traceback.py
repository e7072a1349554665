"""A user's mistake, anywhere in the CLI: one line naming the file, line or setting, exit code 2, never a
traceback; and a mistake in a later stage fails before any model loads (no run folder, nothing trained).

Each case builds its files, runs the real ``frl`` in a subprocess and reads what it printed.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from frl_plugins.serve.server import ServerThread

SFT_ROWS = '{"prompt": "1+1=", "completion": "2"}\n{"prompt": "2+2=", "completion": "4"}\n'
PROMPTS = '{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "answer": "4"}\n'


def write_recipe(tmp: Path, source: str = "{name: correct, type: rule, check: exact}", model: str = "builtin:tiny-gpt2",
                 stage2_data: str = "prompts.jsonl", prompts: str | bytes = PROMPTS, extra: str = "") -> Path:
    """Two stages: SFT, then GRPO scored by ``source``; the later stage is where the mistake is."""
    (tmp / "sft.jsonl").write_text(SFT_ROWS)
    target = tmp / "prompts.jsonl"
    target.write_bytes(prompts.encode() if isinstance(prompts, str) else prompts)
    path = tmp / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: t
        output_dir: {tmp / 'runs'}
        model: {{path: {json.dumps(model)}}}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: sft.jsonl}}
            train: {{steps: 2, batch_size: 2}}
          - name: rl
            optimizer: grpo
            data: {{train: {stage2_data}}}
            rewards: {{sources: [{source}]}}
            rollout: {{num_generations: 2, max_new_tokens: 4}}
            train: {{steps: 1, batch_size: 2}}
        {extra}"""))
    return path


def judge(url: str, **options: object) -> str:
    opts = {"name": "j", "type": "judge", "base_url": url, "model": "m", "max_retries": 0, "timeout": 5, **options}
    return json.dumps(opts)


def closed_port_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@dataclass
class Case:
    name: str
    setup: Callable[[Path, dict], list[str]]   # builds the files (given the judge URLs); returns the arguments
    message: str                         # in the one line on stderr
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    trained_nothing: bool = True         # no run folder appears (the mistake was found before any model)


def _run_folder(tmp: Path, urls: dict) -> list[str]:
    run = tmp / "old-run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    return ["validate", str(write_recipe(tmp, model=str(run)))]


def _model_folder(tmp: Path, *files: str) -> list[str]:
    folder = tmp / "m"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    return ["validate", str(write_recipe(tmp, model=str(folder)))]


def _conversations_no_template(tmp: Path, urls: dict) -> list[str]:
    _model_folder(tmp, "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    turns = '{"prompt": [{"role": "user", "content": "1+1="}], "answer": "2"}\n'
    return ["validate", str(write_recipe(tmp, model=str(tmp / "m"), prompts=turns * 2))]


def _not_utf8_recipe(tmp: Path, urls: dict) -> list[str]:
    path = write_recipe(tmp)
    path.write_bytes(b"# caf\xe9 in Latin-1\n" + path.read_bytes())
    return ["validate", str(path)]


def _folder_as_data(tmp: Path, urls: dict) -> list[str]:
    path = write_recipe(tmp, stage2_data="rows")
    (tmp / "rows").mkdir()
    return ["validate", str(path)]


def _edited(tmp: Path, old: str, new: str, **recipe: str) -> list[str]:
    """``frl validate`` on the two-stage recipe with one piece of its text replaced."""
    path = write_recipe(tmp, **recipe)
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return ["validate", str(path)]


def _blank_csv_cell(tmp: Path, urls: dict) -> list[str]:
    (tmp / "prompts.csv").write_text("prompt,answer\n1+1=,2\n2+2=,\n")
    return ["validate", str(write_recipe(tmp, stage2_data="prompts.csv"))]


def _custom_check_one_argument(tmp: Path, urls: dict) -> list[str]:
    (tmp / "my_checks.py").write_text("def score(completion):\n    return completion == '2'\n")
    return ["validate", str(write_recipe(tmp, source="{name: correct, type: rule, check: custom, "
                                                     "function: 'my_checks:score'}"))]


def _template_file_missing(tmp: Path, urls: dict) -> list[str]:
    return ["validate", str(write_recipe(tmp, source=judge("http://127.0.0.1:9/v1", template_file="nope.txt")))]


CASES = [
    Case("stage-2 custom rule function cannot be imported (train)", lambda t, u: ["train", "--no-progress", str(
        write_recipe(t, source="{name: correct, type: rule, check: custom, function: 'nosuch_checks:score'}"))],
        "rule source 'correct': cannot import custom check 'nosuch_checks:score'"),
    Case("stage-2 custom rule function takes the wrong arguments (validate)", _custom_check_one_argument,
         "rule source 'correct': custom check 'my_checks:score' cannot be called as score(completion, row): "
         "too many positional arguments"),
    Case("stage-2 rows lack the answer the rule reads (validate)", lambda t, u: ["validate", str(write_recipe(
        t, prompts=PROMPTS + '{"prompt": "3+3="}\n'))],
        "prompts.jsonl:3: 1 of 3 rows have no 'answer', the gold answer rule source 'correct' (check exact) reads"),
    Case("stage-2 gold answer blank (validate)", lambda t, u: ["validate", str(write_recipe(
        t, prompts=PROMPTS + '{"prompt": "3+3=", "answer": " "}\n'))],
        "prompts.jsonl:3: 1 of 3 rows have no 'answer', the gold answer rule source 'correct' (check exact) reads "
        "(line 3's is ' ': a blank gold would pay an empty reply)"),
    Case("stage-2 gold answer a blank CSV cell (validate)", _blank_csv_cell,
         "prompts.csv:3: 1 of 2 rows have no 'answer', the gold answer rule source 'correct' (check exact) reads "
         "(line 3's is '': a blank gold would pay an empty reply)"),
    Case("recipe not UTF-8", _not_utf8_recipe, "r.yaml:1: the recipe is not UTF-8 text (byte 0xe9 at offset 5)"),
    Case("stage-2 data not UTF-8 (validate)", lambda t, u: ["validate", str(write_recipe(
        t, prompts=PROMPTS.encode() + b'{"prompt": "caf\xe9"}\n'))],
        "prompts.jsonl:3: not UTF-8: byte 0xe9"),
    Case("stage-2 data not UTF-8 (train)", lambda t, u: ["train", "--no-progress", str(write_recipe(
        t, prompts=PROMPTS.encode() + b'{"prompt": "caf\xe9"}\n'))],
        "prompts.jsonl:3: not UTF-8: byte 0xe9"),
    Case("a Parquet file where JSONL is read", lambda t, u: ["validate", str(write_recipe(
        t, prompts=b"PAR1\x15\x04\x15\x10\x00\x00PAR1"))], "prompts.jsonl: a Parquet file"),
    Case("stage-2 data empty (train)", lambda t, u: ["train", "--no-progress", str(write_recipe(t, prompts=""))],
         "prompts.jsonl: no rows (the file is empty)"),
    Case("stage-2 rows lack the prompt", lambda t, u: ["train", "--no-progress", str(write_recipe(
        t, prompts='{"question": "1+1="}\n'))], "prompts.jsonl:1: missing field 'prompt'"),
    Case("data path is a folder", _folder_as_data, "stages[1].data.train: rows is a folder, not a data file"),
    Case("model.path an empty folder", lambda t, u: _model_folder(t),
         "model.path: " + "{tmp}/m is an empty folder; expected a model folder (config.json, weights, tokenizer)"),
    Case("conversation rows on a model with no chat template (validate)", _conversations_no_template,
         "prompts.jsonl:1: field 'prompt' is a conversation, but the tokenizer of '{tmp}/m' has no chat template: "
         "set model.chat_template"),
    Case("model.path a run folder", _run_folder, "model.path: {tmp}/old-run is a run folder; its trained model is "
                                                 "{tmp}/old-run/final"),
    Case("model.path missing", lambda t, u: ["validate", str(write_recipe(t, model="runs/nope/final"))],
         "model.path: no such file or folder: runs/nope/final"),
    Case("model folder without weights", lambda t, u: _model_folder(t, "config.json", "tokenizer.json"),
         "{tmp}/m has no weights (model.safetensors or pytorch_model.bin)"),
    Case("model folder without a tokenizer", lambda t, u: _model_folder(t, "config.json", "model.safetensors"),
         "{tmp}/m has no tokenizer"),
    Case("unknown built-in model", lambda t, u: ["validate", str(write_recipe(t, model="builtin:tiny-llama"))],
         "model.path: unknown built-in model 'tiny-llama' (available: tiny-gpt2, smollm2-135m-instruct)"),
    Case("hub id offline", lambda t, u: ["train", "--no-progress", str(write_recipe(t, model="no-org/no-model"))],
         "model.path: 'no-org/no-model' is no folder here and not in the Hugging Face cache",
         env={"HF_HUB_OFFLINE": "1"}),
    Case("unknown plugin in FRL_LOAD_PLUGINS", lambda t, u: ["validate", str(write_recipe(t))],
         "FRL_LOAD_PLUGINS: no installed plugin or distribution 'rul' (did you mean 'rule'?)",
         env={"FRL_LOAD_PLUGINS": "rul,sft,grpo,hf,jsonl"}),
    Case("a stage name that leaves the run folder", lambda t, u: _edited(t, "name: rl", 'name: "../../escape"'),
         "r.yaml:9: stages[1].name: expected a folder name: letters, digits, '_', '.' and '-', starting with a "
         "letter or digit, got '../../escape'"),
    Case("a key given twice in a stage", lambda t, u: _edited(
        t, "train: {steps: 1, batch_size: 2}", "train: {steps: 1, batch_size: 2}\n    train: {steps: 5}"),
        "r.yaml:15: stages[1].train: duplicate key (first at line 14); YAML would keep only the last"),
    Case("unknown --set key", lambda t, u: ["validate", str(write_recipe(t)), "--set", "stages.rl.train.stepz=3"],
         "stages[1].train.stepz: unknown key (did you mean 'steps'?)"),
    Case("a --set value of the wrong type", lambda t, u: [
        "validate", str(write_recipe(t)), "--set", "stages.rl.train.steps=3", "--set", "stages.rl.train.lr=fast"],
        "--set stages.rl.train.lr=fast: stages[1].train.lr: expected a valid number"),
    Case("a --set value a plugin refuses", lambda t, u: [
        "validate", str(write_recipe(t)), "--set", "stages.rl.rewards.sources.0={name: c, type: rule, check: exakt}"],
        "--set stages.rl.rewards.sources.0={{name: c, type: rule, check: exakt}}: stages[1].rewards.sources[0].check: "
        "expected 'exact'"),
    Case("judge base_url not a URL", lambda t, u: ["validate", str(write_recipe(t, source=judge("localhost:8000/v1")))],
         "judge 'j': base_url 'localhost:8000/v1' is not an http(s) URL with a host"),
    Case("judge template names a field no row has", lambda t, u: ["train", "--no-progress", str(write_recipe(
        t, source=judge("http://127.0.0.1:9/v1", template="{prompt} {completion} {gold}")))],
        "judge template 'j' (inline): '{{gold}}' is no text or number field of 2 of 2 rows of {tmp}/prompts.jsonl "
        "(first: line 1); available: answer, completion, final_answer, prompt, turns"),
    Case("judge template_file missing", _template_file_missing, "judge 'j': template_file not found: {tmp}/nope.txt"),
    Case("judge api_key_env unset", lambda t, u: ["validate", str(write_recipe(
        t, source=judge("http://127.0.0.1:9/v1", api_key_env="FRL_TEST_NO_SUCH_KEY")))],
        "judge 'j': api_key_env: environment variable FRL_TEST_NO_SUCH_KEY is not set"),
    Case("judge connection refused (train)", lambda t, u: ["train", "--no-progress", str(write_recipe(
        t, source=judge(u["closed"])))], "judge 'j' (stage 'rl'): nothing answers at {closed} (Connection refused); "
                                         "is the server running and base_url right?"),
    Case("judge connection refused (check)", lambda t, u: ["check", str(write_recipe(t, source=judge(u["closed"])))],
         "judge 'j': cannot connect to {closed}: "),
    Case("frl check: the judge abstained on every rollout", lambda t, u: ["check", str(write_recipe(
        t, source=judge(u["junk"])))], "check failed: rl/j", code=1),
    Case("frl plot on a folder without metrics", lambda t, u: ["plot", str(t)], "{tmp}: no metrics.jsonl"),
    Case("frl plot on a run that logged nothing", lambda t, u: (t / "metrics.jsonl").write_text("") or ["plot", str(t)],
         "{tmp}: no metrics yet (metrics.jsonl is empty: the run logged no step)"),
    Case("frl export of an empty folder", lambda t, u: (t / "e").mkdir() or ["export", str(t / "e"), str(t / "out")],
         "{tmp}/e: neither a run with a final/ model nor a model folder"),
]


@pytest.fixture(scope="module")
def junk_judge():
    """A judge server that answers every request with text no score can be parsed from."""
    async def reply(request):
        return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "I would rather not say."}}]})
    with ServerThread(Starlette(routes=[Route("/v1/chat/completions", reply, methods=["POST"])])) as server:
        yield server.url


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_mistake_is_one_line_and_no_traceback(case, tmp_path, junk_judge):
    slots = {"tmp": str(tmp_path), "closed": closed_port_url(), "junk": junk_judge}
    args = case.setup(tmp_path, slots)
    env = {k: v for k, v in os.environ.items() if k != "FRL_LOAD_PLUGINS"}
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **{k: v.format(**slots) for k, v in case.env.items()}})
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", *args], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    everything = out.stdout + out.stderr
    assert "Traceback" not in everything, everything
    assert out.returncode == case.code, everything
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert case.message.format(**slots) in lines[0], lines[0]
    if case.trained_nothing:
        assert not (tmp_path / "runs").exists(), "a run folder was opened before the mistake was found"
