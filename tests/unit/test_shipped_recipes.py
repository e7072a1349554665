"""Every recipe in recipes/ validates, and docs/recipes.md matches the schema and plugins."""
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_rl.commands.cli import main

ROOT = Path(__file__).parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes():
    assert any(p.name == "quickstart.yaml" for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_validates(path, capsys, monkeypatch):
    # a recipe for a cluster names a hub model this offline machine lacks; validating it needs no network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_recipe_reference_is_up_to_date():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "recipe_reference.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
