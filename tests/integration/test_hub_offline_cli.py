"""Offline, a hub model id or dataset id fails at once in one line naming the id and the offline setting
(HF_HUB_OFFLINE, or no network), instead of tens of seconds of "Retrying in 1s"; a cached model still loads.
Each case runs `frl train` in a subprocess."""
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from feedback_rl.modeling import hub

DATA = Path(__file__).parents[1] / "data"
REFUSED = "http://127.0.0.1:9"   # nothing listens on the discard port: the connection is refused


def write_recipe(tmp_path, model: str, data: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: hub
        output_dir: {tmp_path / 'runs'}
        model: {{path: {model}}}
        stages:
          - name: s
            optimizer: sft
            data: {{train: {data}}}
            train: {{steps: 1, batch_size: 2}}
            rollout: {{max_new_tokens: 4}}
            eval: {{num_prompts: 2}}
        """))
    return path


def frl_train(recipe: Path, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    full = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    full.update(OMP_NUM_THREADS="1", **env)
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(recipe), "--no-progress"],
                         capture_output=True, text=True, timeout=300, env=full)
    return out, time.monotonic() - start


def assert_one_line(out: subprocess.CompletedProcess, took: float, message: str) -> None:
    # the retries printed "Retrying in Ns" for 24-50 s before a multi-line error: their absence and the one
    # line are the test. The bound on the whole run (imports and the tiny model take tens of seconds on a
    # loaded machine) only catches a hang; tests/unit/test_hub_offline.py times the check itself.
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == f"error: {message}", out.stderr[-2000:]
    assert "Retrying" not in out.stderr + out.stdout and took < 90, (took, out.stderr[-2000:])


MODEL_OFFLINE = ("model.path: 'nobody/no-such-model' is no local path and not in the Hugging Face cache, and the "
                 "hub cannot be reached ({}); point it at a local model folder or .gguf file")
DATASET_OFFLINE = "dataset 'nobody/no-such-dataset': not in the local cache, and the hub cannot be reached ({})"


def test_a_hub_model_id_with_hf_hub_offline(tmp_path):
    out, took = frl_train(write_recipe(tmp_path, "nobody/no-such-model", DATA / "sft.jsonl"), HF_HUB_OFFLINE="1")
    # with the offline setting, the check before any model loads names the recipe's line
    assert_one_line(out, took, f"{tmp_path / 'r.yaml'}:3: model.path: 'nobody/no-such-model' is no folder here and "
                    "not in the Hugging Face cache, and the hub is offline (HF_HUB_OFFLINE); download it first (hf "
                    "download nobody/no-such-model) or give a local folder")


def test_a_hub_model_id_with_no_network(tmp_path):
    out, took = frl_train(write_recipe(tmp_path, "nobody/no-such-model", DATA / "sft.jsonl"), HF_ENDPOINT=REFUSED)
    assert_one_line(out, took, MODEL_OFFLINE.format(f"no network: {REFUSED} cannot be reached: Connection refused"))


def test_a_hub_model_id_where_this_machine_has_no_network(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    if hub.offline_reason() is None:
        pytest.skip("the hub is reachable from here")
    out, took = frl_train(write_recipe(tmp_path, "nobody/no-such-model", DATA / "sft.jsonl"))
    reason = hub.offline_reason()   # the resolver's own words ("Name or service not known", ...)
    assert reason.startswith("no network: https://huggingface.co cannot be reached: ")
    assert_one_line(out, took, MODEL_OFFLINE.format(reason))


def test_a_hub_dataset_id_with_hf_hub_offline_and_with_no_network(tmp_path):
    recipe = write_recipe(tmp_path, "builtin:tiny-gpt2", "{dataset: nobody/no-such-dataset}")
    out, took = frl_train(recipe, HF_HUB_OFFLINE="1")
    assert_one_line(out, took, DATASET_OFFLINE.format("HF_HUB_OFFLINE=1 is set"))
    out, took = frl_train(recipe, HF_ENDPOINT=REFUSED)
    assert_one_line(out, took, DATASET_OFFLINE.format(f"no network: {REFUSED} cannot be reached: Connection refused"))


def test_a_cached_hub_model_trains_with_no_network(tmp_path, tiny_model_dir):
    # the hub cache's own layout: models--ORG--NAME/snapshots/REV/ and refs/main naming REV
    repo = tmp_path / "cache" / "models--someone--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    out, _ = frl_train(write_recipe(tmp_path, "someone/tiny", DATA / "sft.jsonl"),
                       HF_ENDPOINT=REFUSED, HF_HUB_CACHE=str(tmp_path / "cache"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Retrying" not in out.stderr


def test_a_parquet_file_without_a_needed_column_exits_2_without_a_traceback(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = write_recipe(tmp_path, "builtin:tiny-gpt2", "data.parquet")
    pq.write_table(pa.table({"question": ["1+1="], "completion": ["2"]}), tmp_path / "data.parquet")
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", str(path), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (f"error: {tmp_path}/data.parquet: no column 'prompt' (stage 's' (sft) needs "
                                  "prompt, completion); its columns: question, completion (rename one with "
                                  "columns: {prompt: NAME})"), out.stderr
