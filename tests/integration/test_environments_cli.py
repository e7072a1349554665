"""`frl plugins` lists the environment kind's built-in members, and their data sources."""
from __future__ import annotations

import re
import subprocess
import sys


def test_frl_plugins_lists_the_environments_and_their_data_sources():
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "plugins"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^calculator .*dataset 'calculator', dataset 'calculator_demos', environment 'calculator'$",
                     out.stdout, re.M), out.stdout
    assert re.search(r"^guess_number .*dataset 'guess_number', environment 'guess_number'$", out.stdout, re.M)


RECIPE = """\
name: calculator-rows
model:
  path: builtin:tiny-gpt2
  chat_template: "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
stages:
  - name: grpo
    optimizer: grpo
    data:
      train: {calculator: 3, size: 20, SIZE_KEY: 3}
      eval: {calculator: 3, size: 10, seed: 1}
    rewards: {sources: [{name: exact, type: rule, check: exact}]}
    rollout: {num_generations: 2, max_new_tokens: 4}
    train: {steps: 1, batch_size: 2}
"""


def validate(tmp_path, text):
    (tmp_path / "r.yaml").write_text(text)
    return subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "validate", "r.yaml"], cwd=tmp_path,
                          capture_output=True, text=True)


def test_a_recipe_takes_rows_from_the_environments_data_sources_and_names_a_mistyped_key(tmp_path):
    out = validate(tmp_path, RECIPE.replace(", SIZE_KEY: 3", ""))
    assert out.returncode == 0, out.stderr
    out = validate(tmp_path, RECIPE.replace("SIZE_KEY", "sise"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "r.yaml:9: stages[0].data.train.sise: unknown key for calculator (did you mean 'size'?)" in out.stderr
