"""`frl check` on a stage with an environment plays episodes, as training does, shows the first one's turns with
their roles, and runs the sources on the episodes (the environment's own reward among them)."""
from __future__ import annotations

from pathlib import Path

from feedback_rl.commands.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_check_plays_episodes_and_shows_the_turns_of_one(capsys):
    code = main(["check", str(RECIPES / "guess-number-grpo.yaml"), "--prompts", "1", "--generations", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "== stage 'grpo': 2 episodes of 1 prompts" in out
    lines = out.splitlines()
    start = lines.index(next(x for x in lines if x.startswith("episode of the first prompt")))
    turns = [x for x in lines[start + 1:] if x.startswith("  [")]
    assert turns[0].startswith("  [assistant] ")
    # guess_number answers every guess but the right one, so a turn of the model is followed by the environment's
    if len(turns) > 1:
        assert turns[1].split("] ")[1].strip("'") in ("Higher.", "Lower.", "Answer with one whole number from 1 to 10.")
    assert next(x for x in lines[start:] if x.startswith("  ended: "))
    env_row = next(x for x in lines if x.startswith("env "))
    assert env_row.split()[2:6] == ["2", "2", "0", "0"], env_row   # n, ok, abstain, error: both episodes scored


def test_check_says_when_the_template_splits_an_episode(tmp_path, capsys):
    from test_split_episodes_cli import FORGETFUL
    (tmp_path / "forgetful.jinja").write_text(FORGETFUL)
    code = main(["check", str(RECIPES / "guess-number-grpo.yaml"), "--prompts", "1", "--generations", "1",
                 "--set", f"model.chat_template={tmp_path / 'forgetful.jinja'}", "--set", "seed=1"])
    out = capsys.readouterr().out
    assert code == 0, out
    turns = [x for x in out.splitlines() if x.startswith("  [assistant] ")]
    said = next(x for x in out.splitlines() if x.startswith("  split into "))
    assert said.startswith(f"  split into {len(turns)} sequences: the chat template renders earlier turns")
