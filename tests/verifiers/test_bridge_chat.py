"""A verifiers v1 taskset's episodes play through the core's OpenAI-compatible server (`frl serve`'s chat
completions, verifiers' eval client), offline: the harness's chat program installs from the wheelhouse."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import pytest
from echo_taskset import last_reply, share_of

from frl_plugins.environments.verifiers_bridge.agent import taskset_agent
from frl_plugins.environments.verifiers_bridge.data import VerifiersData
from frl_plugins.serve.commands import load_local
from frl_plugins.serve.server import ServerThread, build_app

SAMPLING = {"max_tokens": 6, "temperature": 0.0}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    with ServerThread(build_app(*load_local(str(tiny_model_dir)), "tiny", batch_wait_ms=1)) as s:
        yield s


def test_the_data_source_makes_one_row_per_task_with_what_the_agent_needs():
    rows = VerifiersData(VerifiersData.Options(verifiers="echo_taskset", config={"words": ["ab", "cd"]}),
                         Path(".")).rows()
    assert rows == [{"prompt": [{"role": "user", "content": f"say {w}"}],
                     "verifiers": {"taskset": "echo_taskset", "config": {"words": ["ab", "cd"]}, "idx": i}}
                    for i, w in enumerate(["ab", "cd"])]


def test_a_recipe_naming_an_unknown_taskset_fails_on_one_line_naming_it(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "name: vf\nmodel: {path: builtin:tiny-gpt2}\nstages:\n  - name: grpo\n    optimizer: grpo\n"
        "    data: {train: {verifiers: echo_tasket}}\n    rewards: {sources: [{name: r, type: rule, check: exact}]}\n")
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "validate", "r.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: r.yaml:6: stages[0].data.train: verifiers taskset 'echo_tasket' did "
                                 "not load: taskset 'echo_tasket' not found"), out.stderr


def test_a_recipe_naming_a_taskset_whose_env_has_several_seats_fails_on_one_line_naming_it(tmp_path):
    """The bridge plays each episode as one seat under the core's session; a taskset's own Env over another config
    would fail every rollout at the first step (verifiers refuses the config when the Env is built)."""
    (tmp_path / "r.yaml").write_text(
        "name: vf\nmodel: {path: builtin:tiny-gpt2}\nstages:\n  - name: grpo\n    optimizer: grpo\n"
        "    data: {train: {verifiers: two_seat_taskset}}\n    agent: agent.py:agent\n"
        "    rewards: {sources: [{name: r, type: environment}]}\n")
    (tmp_path / "agent.py").write_text("def agent(row, client):\n    return 0.0\n")
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "validate", "r.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: r.yaml:6: stages[0].data.train: verifiers taskset 'two_seat_taskset' plays "
                                 "its tasks through TwoSeatEnv, whose config is TwoSeatConfig"), out.stderr


def test_each_episode_is_the_servers_reply_scored_by_the_tasksets_reward(server, offline):
    client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    agent = taskset_agent(client="eval", max_turns=1, sampling=SAMPLING)
    rows = VerifiersData(VerifiersData.Options(verifiers="echo_taskset", size=3), Path(".")).rows()
    for row in rows:
        episode = agent.episode(row, client)
        reply = last_reply(episode.traces[0])
        # the harness sent the task's turns to the server: asked directly, greedy, it answers the same
        direct = client.chat.completions.create(model="tiny", messages=row["prompt"], **SAMPLING)
        assert reply == direct.choices[0].message.content
        word = row["prompt"][0]["content"].removeprefix("say ")
        assert episode.traces[0].reward == share_of(word, reply)
        assert agent(row, client) == share_of(word, reply)  # the agent's answer to the core: the reward


def test_a_rollout_that_cannot_reach_the_endpoint_raises_instead_of_scoring_zero(offline):
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0)
    agent = taskset_agent(client="eval", max_turns=1, sampling=SAMPLING)
    row = VerifiersData(VerifiersData.Options(verifiers="echo_taskset", size=1), Path(".")).rows()[0]
    with pytest.raises(Exception, match="."):
        agent(row, client)


def test_a_working_folder_left_under_the_sessions_name_by_a_killed_run_does_not_fail_the_rollout(server, offline):
    """verifiers names a rollout's working folder after its trace id (the core's session id here, and session ids
    repeat from run to run) and refuses one that exists: the bridge keeps its folders apart per process."""
    from verifiers.v1.utils.paths import CACHE_DIR

    left = CACHE_DIR / "runtimes" / "subprocess" / "v0-0"
    left.mkdir(parents=True, exist_ok=True)
    try:
        client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0,
                               default_headers={"X-Session-ID": "v0-0"})
        row = VerifiersData(VerifiersData.Options(verifiers="echo_taskset", size=1), Path(".")).rows()[0]
        episode = taskset_agent(client="eval", max_turns=1, sampling=SAMPLING).episode(row, client)
        assert episode.traces[0].id == "v0-0"  # the session verifiers sends as X-Session-ID
    finally:
        left.rmdir()


def test_a_renderer_verifiers_does_not_know_is_one_line_naming_it(tiny_model_dir):
    with pytest.raises(ValueError, match=r"^taskset_agent\(renderer=\{'name': 'qwen99'\}\): Input tag 'qwen99'"):
        taskset_agent(tokenizer=str(tiny_model_dir), renderer={"name": "qwen99"})
    with pytest.raises(ValueError, match=r"^taskset_agent\(renderer=.*\): default\.tool_parser: Input should be"):
        taskset_agent(tokenizer=str(tiny_model_dir), renderer={"name": "default", "tool_parser": 3})
    with pytest.raises(ValueError, match="renderer is the training client's"):
        taskset_agent(client="eval", renderer={"name": "qwen3"})
    agent = taskset_agent(tokenizer=str(tiny_model_dir), renderer={"name": "default", "tool_parser": "qwen3"})
    assert agent.renderer.tool_parser == "qwen3"   # handed to verifiers' TrainClientConfig(renderer=...)
