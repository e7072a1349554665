"""`frl train` trains SFT steps on the tiny model from every data source: JSONL, a JSON array, JSON lines,
CSV with a BOM, Parquet, a renamed CSV, a save_to_disk folder and the `datasets` json builder (one run, one
stage per source)."""
import json
import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parents[1] / "data"
SOURCES = {
    "jsonl": f"{DATA / 'sft.jsonl'}",
    "json_array": f"{DATA / 'sft_array.json'}",
    "json_lines": f"{DATA / 'sft_lines.json'}",
    "csv_bom": f"{DATA / 'sft_bom.csv'}",
    "parquet": f"{DATA / 'sft.parquet'}",
    "csv_renamed": f"{{path: {DATA / 'qa.csv'}, columns: {{prompt: question, completion: final}}, holdout: 1}}",
    "saved": "{dataset: saved, columns: {prompt: question, completion: final}, size: 2}",
    "json_builder": f"{{dataset: json, data_files: [{DATA / 'sft.jsonl'}]}}",
}


def test_sft_trains_from_every_data_source_through_the_cli(tmp_path):
    import datasets
    datasets.Dataset.from_list([{"question": "2+3=", "final": "5"}, {"question": "4+4=", "final": "8"},
                                {"question": "1+6=", "final": "7"}]).save_to_disk(str(tmp_path / "saved"))
    stages = "".join(f"""
  - name: {name}
    optimizer: sft
    data: {{train: {source}}}
    train: {{steps: 2, batch_size: 2, lr: 1.0e-3}}
    rollout: {{max_new_tokens: 2}}
""" for name, source in SOURCES.items())
    (tmp_path / "r.yaml").write_text(f"name: formats\noutput_dir: {tmp_path / 'runs'}\n"
                                     f"model: {{path: builtin:tiny-gpt2, tiny: {{n_layer: 1, n_embd: 16, n_head: 2}}}}\n"
                                     f"stages:{stages}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "r.yaml", "--no-progress"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "runs" / "formats"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for name in SOURCES:
        losses = [m["loss"] for m in metrics if m.get("stage") == name and "loss" in m]
        assert len(losses) == 2 and all(0 < x < 20 for x in losses), (name, losses)
    assert (run / "final" / "config.json").is_file()
