"""``frl serve MODEL_DIR``: an OpenAI-compatible server for a local model (a trained policy, a judge)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from feedback_rl import UserError, hookimpl, load_model


def load_local(path: str, dtype: str = "float32"):
    """A model and tokenizer: ``builtin:tiny-gpt2``, an HF folder, a hub id or a ``.gguf`` file."""
    model, tokenizer = load_model(path, dtype)
    return model, tokenizer


def hf_backend():
    # The built-in HF backend: the same generate the training loop uses.
    from frl_plugins.backends.hf import HFBackend
    from feedback_rl import PluginContext
    return HFBackend(HFBackend.Options(), PluginContext(name="serve", run_dir=Path.cwd()))


@hookimpl
def frl_register_commands(cli):
    @cli.command()
    @click.argument("model_dir")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Loopback unless you mean otherwise.")
    @click.option("--port", default=8000, show_default=True, type=int)
    @click.option("--api-key-env", default=None, metavar="NAME",
                  help="Environment variable holding the API key clients must send.")
    @click.option("--model-name", default=None, help="The model id clients name (default: the folder name).")
    @click.option("--max-batch", default=16, show_default=True, type=int)
    @click.option("--batch-wait-ms", default=5.0, show_default=True, type=float)
    @click.option("--dtype", default="float32", type=click.Choice(["float32", "bfloat16", "float16"]))
    def serve(model_dir, host, port, api_key_env, model_name, max_batch, batch_wait_ms, dtype):
        """Serve MODEL_DIR (an HF folder, a .gguf file, a hub id or builtin:tiny-gpt2) over an OpenAI-compatible API."""
        import uvicorn

        from .server import build_app
        api_key = None
        if api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise UserError(f"--api-key-env: environment variable {api_key_env} is not set")
        model, tokenizer = load_local(model_dir, dtype)
        name = model_name or Path(model_dir).name
        app = build_app(model, tokenizer, hf_backend(), name, api_key, max_batch, batch_wait_ms)
        click.echo(f"serving '{name}' on http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
        uvicorn.run(app, host=host, port=port, log_level="warning")
