"""docs/episodes.md's "OpenEnv environments" runs as written: its environment, played through its two recipe
blocks (in-process, and served by create_app on 127.0.0.1), gives each word's length as that step's reward."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("openenv", reason="the openenv tier: bash scripts/test.sh --openenv")

from feedback_rl import PluginContext  # noqa: E402
from feedback_rl.environments import play  # noqa: E402
from frl_plugins.environments.openenv.plugin import OpenEnvBridge  # noqa: E402

from openenv_helpers import word_game_server  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "episodes.md"
SECTION = re.search(r"### OpenEnv environments\n(.*?)\n## ", DOC.read_text(), re.S).group(1)


@pytest.fixture
def documented(tmp_path, monkeypatch):
    """The documented word_game.py beside a recipe in tmp_path (the tests' own word_game module set aside)."""
    (tmp_path / "word_game.py").write_text(re.search(r"```python\n(.*?)```", SECTION, re.S).group(1))
    monkeypatch.delitem(sys.modules, "word_game", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    import word_game
    return word_game


def options(k: int, **replace):
    environment = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", SECTION, re.S)[k])["environment"]
    environment.pop("type")
    return OpenEnvBridge.Options(**{**environment, **replace})


def play_words(options, tmp_path):
    env = OpenEnvBridge(options, PluginContext("openenv", tmp_path, recipe_dir=tmp_path))
    said = iter(["a", "bb", "ccc", "never"])
    try:
        return play(env, {"prompt": "Play."}, lambda messages: next(said))
    finally:
        env.close()


def test_the_documented_environment_plays_in_process(tmp_path, documented):
    out = play_words(options(0), tmp_path)
    assert out.rewards == [1.0, 2.0, 3.0] and out.done and [i["turn"] for i in out.infos] == [1, 2, 3]
    assert [m["content"] for m in out.messages[:2]] == ["Play.", "Say 3 words."]


def test_the_documented_environment_plays_behind_its_server(tmp_path, documented):
    d = documented
    with word_game_server(max_concurrent_envs=16, classes=(d.WordGame, d.WordAction, d.WordObservation)) as url:
        out = play_words(options(1, url=url), tmp_path)
    assert out.rewards == [1.0, 2.0, 3.0] and out.done and [i["turn"] for i in out.infos] == [1, 2, 3]
    assert out.messages[3] == {"role": "user", "content": "Word 1: 1 letters."}
