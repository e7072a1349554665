"""``frl serve MODEL``: an OpenAI-compatible server for a local model (a trained policy, a judge).

What a user can get wrong is refused in one line before the model loads: a path with no model, a run
folder instead of its ``final/``, a folder missing weights or a tokenizer, a port that is taken.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import click

from feedback_rl import UserError, hookimpl
from feedback_rl.models import load_model

from feedback_rl.server import DEFAULT_MAX_BODY_MB

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")
TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")


def load_local(path: str, dtype: str = "float32"):
    """A model and tokenizer: ``builtin:tiny-gpt2``, an HF folder, a hub id or a ``.gguf`` file."""
    check_model(path)
    return load_model(path, dtype)


def check_model(path: str) -> None:
    """Raise a one-line :class:`UserError` when ``path`` cannot hold a model; a possible hub id passes."""
    if path.startswith("builtin:"):
        return
    local = Path(path).expanduser()
    if not local.exists():
        parts = Path(path).parts
        # a hub id is "name" or "org/name"; anything deeper, or under a folder that exists, is a local path
        if local.suffix == ".gguf" or path.startswith((".", "/", "~")) or len(parts) > 2 or (
                len(parts) == 2 and Path(parts[0]).is_dir()):
            raise UserError(f"no model at {path} (no such file or folder)")
        return
    if local.is_file():
        if local.suffix != ".gguf":
            raise UserError(f"{path} is a file; expected a model folder or a .gguf file")
        return
    names = {p.name for p in local.iterdir()}
    if "config.json" not in names and "adapter_config.json" not in names:
        if (local / "final").is_dir():
            raise UserError(f"{path} is a run folder; serve its trained model: frl serve {local / 'final'}")
        if "recipe.lock.yaml" in names:
            raise UserError(f"{path} is a run folder with no final/ model (the run did not finish)")
    missing = [what for what, files in (("config.json", ("config.json", "adapter_config.json")),
                                        ("weights (model.safetensors or pytorch_model.bin)", WEIGHTS),
                                        ("a tokenizer (tokenizer.json, tokenizer.model or vocab.json)", TOKENIZER))
               if not names & set(files)]
    if "adapter_config.json" in names:  # a LoRA folder: its base holds the rest
        missing = [m for m in missing if m.startswith("weights")]
    if missing:
        raise UserError(f"no model in {path}: it lacks {', '.join(missing)}")


def pick_device(name: str | None):
    import torch
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (cpu, cuda, cuda:1...)") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    return device


def bind(host: str, port: int):
    """The server's socket, bound before the model loads so a taken port fails at once."""
    from .server import listen
    try:
        return listen(host, port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"--port {port}: {host}:{port} is already in use; pick another --port "
                            "(0 picks a free one)") from None
        raise UserError(f"--host {host} --port {port}: cannot listen there: {e.strerror or e}") from None


@hookimpl
def frl_register_commands(cli):
    @cli.command()
    @click.argument("model_dir")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Loopback unless you mean otherwise.")
    @click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
                  help="0 picks a free port.")
    @click.option("--api-key-env", default=None, metavar="NAME",
                  help="Environment variable holding the API key clients must send.")
    @click.option("--model-name", default=None, help="The model id clients name (default: the folder name).")
    @click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1))
    @click.option("--batch-wait-ms", default=5.0, show_default=True, type=click.FloatRange(0))
    @click.option("--max-body-mb", default=DEFAULT_MAX_BODY_MB, show_default=True, type=click.FloatRange(min=0, min_open=True),
                  help="A request body over this many MiB is refused (413).")
    @click.option("--dtype", default="float32", type=click.Choice(["float32", "bfloat16", "float16"]))
    @click.option("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when there is one)")
    def serve(model_dir, host, port, api_key_env, model_name, max_batch, batch_wait_ms, max_body_mb, dtype, device):
        """Serve MODEL_DIR (an HF folder, a .gguf file, a hub id or builtin:tiny-gpt2) over an OpenAI-compatible API."""
        import uvicorn

        from .server import build_app
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise UserError(f"--api-key-env: environment variable {api_key_env} is not set")
        check_model(model_dir)
        where = pick_device(device)
        sock = bind(host, port)
        model, tokenizer = load_model(model_dir, dtype)
        model.to(where)
        name = model_name or Path(model_dir.rstrip("/")).name
        app = build_app(model, tokenizer, name, api_key, max_batch, batch_wait_ms, max_body_mb)
        url = f"http://{host}:{sock.getsockname()[1]}/v1"
        click.echo(f"serving '{name}' on {url} ({where})" + (" (API key required)" if api_key else ""))
        uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
