"""`model.chat_template` through the real `frl` CLI: a file next to the recipe supplies the template, every saved
model carries it (stage output, `final/`, `frl export` copied and merged), and its mistakes are one line, exit 2."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from transformers import AutoTokenizer

TEMPLATE = ("{% for m in messages %}{{ m['role'] + '> ' + m['content'] + '\\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'assistant> ' }}{% endif %}")


def frl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", *args], capture_output=True, text=True,
                          timeout=600)


def write(tmp: Path, template: str = "chat.jinja", lora: bool = True) -> Path:
    (tmp / "chat.jinja").write_text(TEMPLATE)
    (tmp / "sft.jsonl").write_text("".join(f'{{"prompt": "{a}+1=", "completion": "{a + 1}"}}\n' for a in range(8)))
    adapter = "lora: {r: 4, alpha: 8}" if lora else ""
    path = tmp / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: templated
        output_dir: {tmp / 'runs'}
        model:
          path: builtin:tiny-gpt2
          tiny: {{n_layer: 1, n_embd: 32, n_head: 2}}
          chat_template: {template}
          {adapter}
        stages:
          - name: sft
            optimizer: sft
            data: {{train: sft.jsonl}}
            train: {{steps: 2, batch_size: 4, lr: 1.0e-3}}
            eval: {{num_prompts: 2}}
        """))
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("templated")
    out = frl("train", str(write(tmp)), "--no-progress")
    assert out.returncode == 0, out.stderr
    (run,) = (tmp / "runs").glob("templated*")
    return run


def test_the_recipes_template_is_saved_with_every_model(run_dir, tmp_path):
    for folder in (run_dir / "final", run_dir / "stages" / "sft"):
        assert AutoTokenizer.from_pretrained(folder).chat_template == TEMPLATE, folder
    assert frl("export", str(run_dir), str(tmp_path / "copied")).returncode == 0
    merged = frl("export", str(run_dir), str(tmp_path / "merged"), "--merge")
    assert merged.returncode == 0, merged.stderr
    for out in ("copied", "merged"):
        tok = AutoTokenizer.from_pretrained(tmp_path / out)
        assert tok.chat_template == TEMPLATE
        assert tok.apply_chat_template([{"role": "user", "content": "1+1="}], tokenize=False,
                                       add_generation_prompt=True) == "user> 1+1=\nassistant> "


def test_a_missing_template_file_names_the_recipe_line(tmp_path):
    out = frl("validate", str(write(tmp_path, template="nope.jinja")))
    assert out.returncode == 2
    assert out.stderr.strip().endswith("r.yaml:6: model.chat_template: file not found: nope.jinja"), out.stderr
    assert out.stderr.count("\n") == 1


def test_a_template_with_a_syntax_error_is_one_line(tmp_path):
    path = write(tmp_path, lora=False)
    (tmp_path / "chat.jinja").write_text("{% for m in messages %}{{ m['content'] }}\n")
    out = frl("train", str(path), "--no-progress")
    assert out.returncode == 2
    assert "model.chat_template (" in out.stderr and "chat.jinja): invalid Jinja template (line" in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
