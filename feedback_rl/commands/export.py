"""``frl export SOURCE OUT [--merge]``: a run's model (or a model folder) as a plain HF folder.

SOURCE is a run folder (its ``final/`` is exported), a full HF model folder, or a LoRA adapter folder.
With ``--merge`` an adapter is folded into its base (peft's ``merge_and_unload``) and written with the
tokenizer, so ``AutoModelForCausalLM.from_pretrained(OUT)`` loads it with no peft; a full model is
copied as it is.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import click

from feedback_rl.modeling import lora
from feedback_rl.errors import UserError
from feedback_rl.run.writes import save_folder, save_model


def model_folder(source: Path) -> Path:
    """The folder to export: SOURCE itself, or a run's ``final/``."""
    for cand in (source, source / "final"):
        if (cand / "config.json").is_file() or lora.is_adapter_folder(cand):
            return cand
    raise UserError(f"{source}: neither a run with a final/ model nor a model folder "
                    f"(config.json) nor a LoRA adapter folder ({lora.ADAPTER_CONFIG})")


def export(source: Path, out: Path, merge: bool) -> str:
    """Write the export; returns what was done, in words."""
    folder = model_folder(Path(source))
    out = Path(out).absolute()  # "." has no name to put a .tmp- beside
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty")
    what = f"the export of {folder}"  # whole or absent: a half-copied model would load, or fail, later
    if not (merge and lora.is_adapter_folder(folder)):
        save_folder(out, what, lambda tmp: _copy(folder, tmp))
        kind = "LoRA adapter (pass --merge for a plain model)" if lora.is_adapter_folder(folder) else "model"
        return f"copied the {kind} {folder} to {out}"
    from feedback_rl.modeling.loading import load_policy
    from feedback_rl.modeling.spec import ModelSpec
    model, tokenizer = load_policy(ModelSpec(path=str(folder), dtype=_dtype(lora.base_path(folder))),
                                   Path.cwd(), folder, seed=0)
    merged = model.merge_and_unload()
    save_model(out, what, merged, tokenizer)
    return f"merged the adapter {folder} into its base {lora.base_path(folder)}: {out}"


def _copy(src: Path, dst: Path) -> None:
    """File by file: ``copytree`` goes on copying after a full disk and then raises every error at once
    in a ``shutil.Error`` that names no one file."""
    for f in sorted(src.rglob("*")):
        target = dst / f.relative_to(src)
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)


def _dtype(base: str) -> str:
    """The base's own dtype name (merged weights keep it), float32 when unknown."""
    from transformers import AutoConfig

    from feedback_rl.modeling.loading import DTYPES
    dtype = getattr(AutoConfig.from_pretrained(base), "dtype", None)
    return next((name for name, d in DTYPES.items() if d == dtype), "float32")


@click.command("export")
@click.argument("source", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--merge", is_flag=True, help="Fold a LoRA adapter into its base: a plain HF model.")
def export_command(source: str, out: str, merge: bool) -> None:
    """Export SOURCE (a run, a model or a LoRA adapter folder) to OUT as an HF folder."""
    click.echo(export(Path(source), Path(out), merge))
