"""A model that reads the policy's sampled token ids shares the policy's tokenizer, or is refused when it
loads: a ``reward_model`` source (through ``frl train``, one line, exit 2) and the human source's refitted
reward model. Two small tokenizers: the tiny model's, and the same with two ids swapped (same size, so a
check of the vocabulary's size alone lets it through)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from feedback_rl import PluginContext, Rollout, UserError
from feedback_rl.models import load_model, scalar_model
from feedback_rl.modeling.tiny import char_tokenizer
from feedback_rl.modeling.vocab import tokenizer_difference
from frl_plugins.rewards.human.source import HumanOptions, HumanSource


def swapped_tokenizer(first: str = "a", second: str = "b"):
    """The tiny model's tokenizer with the ids of two characters exchanged."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    tok = char_tokenizer()
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), pad_token="<pad>",
                                    bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    other.chat_template = tok.chat_template
    return other


def test_the_same_tokenizer_has_no_difference_and_a_swap_of_the_same_size_names_both_ids():
    tok, other = char_tokenizer(), swapped_tokenizer()
    assert len(tok) == len(other)
    assert tokenizer_difference(tok, char_tokenizer()) is None
    a, b = tok.convert_tokens_to_ids(["a", "b"])
    message = tokenizer_difference(tok, other)
    assert message == (f"2 token ids differ (id {a} is 'a' in the policy's, 'b' in the model's; "
                       f"id {b} is 'b' in the policy's, 'a' in the model's)")


def test_special_tokens_and_extra_tokens_count_as_differences():
    tok, other = char_tokenizer(), char_tokenizer()
    other.add_special_tokens({"eos_token": "<end>"})
    message = tokenizer_difference(tok, other)
    assert f"is absent in the policy's, '<end>' in the model's" in message
    assert f"eos_token is id {tok.eos_token_id} in the policy's, id {other.eos_token_id} in the model's" in message


def reward_model_folder(where: Path, tokenizer) -> Path:
    """A reward model on the tiny trunk, saved with ``tokenizer``."""
    policy, tok = load_model("builtin:tiny-gpt2")
    scalar_model(policy, tok.pad_token_id).save_pretrained(where)
    tokenizer.save_pretrained(where)
    return where


def write_recipe(tmp: Path, rm: Path) -> Path:
    (tmp / "prompts.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "answer": "4"}\n')
    path = tmp / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: t
        output_dir: {tmp / 'runs'}
        model: {{path: "builtin:tiny-gpt2"}}
        stages:
          - name: rl
            optimizer: grpo
            data: {{train: prompts.jsonl}}
            rewards: {{sources: [{{name: rm, type: reward_model, path: {json.dumps(str(rm))}, device: cpu}}]}}
            rollout: {{num_generations: 2, max_new_tokens: 3}}
            train: {{steps: 1, batch_size: 2}}
            eval: {{num_prompts: 1}}
        """))
    return path


def frl_train(recipe: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "--no-progress", str(recipe)],
                          capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_frl_train_refuses_a_reward_model_with_another_tokenizer_of_the_same_size(tmp_path):
    (tmp_path / "same").mkdir()
    (tmp_path / "other").mkdir()
    good = frl_train(write_recipe(tmp_path / "same", reward_model_folder(tmp_path / "same" / "rm", char_tokenizer())))
    assert good.returncode == 0, good.stderr[-2000:]

    rm = reward_model_folder(tmp_path / "other" / "rm", swapped_tokenizer())
    bad = frl_train(write_recipe(tmp_path / "other", rm))
    assert bad.returncode == 2, bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr
    lines = [x for x in bad.stderr.splitlines() if x.strip() and not x.startswith("warning:")]
    assert len(lines) == 1, bad.stderr
    a, b = char_tokenizer().convert_tokens_to_ids(["a", "b"])
    assert f"reward source 'rm': path: '{rm}': the reward model's tokenizer is not the policy's" in lines[0]
    assert f"id {a} is 'a' in the policy's, 'b' in the reward model's" in lines[0]
    assert f"id {b} is 'b'" in lines[0]


def test_a_reward_model_folder_without_a_tokenizer_says_it_cannot_check(tmp_path):
    from frl_plugins.rewards.reward_model import RewardModelSource
    policy, tok = load_model("builtin:tiny-gpt2")
    scalar_model(policy, tok.pad_token_id).save_pretrained(tmp_path / "rm")
    source = RewardModelSource(RewardModelSource.Options(path=str(tmp_path / "rm"), device="cpu"),
                               PluginContext(name="rm", run_dir=tmp_path, tokenizer=tok))
    with pytest.raises(UserError, match=r"reward source 'rm': path: .*no tokenizer saved with the reward model"):
        source.score([Rollout("p", "c", {}, 0, [5], [6])])


# ------------------------------------------------------------------ the human source's refitted model

RM = {"path": "builtin:tiny-gpt2", "refit_every": 1, "steps": 2, "batch_size": 2, "holdout": 0.0, "device": "cpu"}


def human(tmp_path: Path, policy_tokenizer, **options) -> HumanSource:
    ctx = PluginContext(name="people", run_dir=tmp_path, stage="grpo", tokenizer=policy_tokenizer)
    return HumanSource(HumanOptions(per_step=10, **options), ctx)


def labeled_pair(src: HumanSource, tok) -> None:
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    pair = [Rollout("1+1=", c, {}, 0, ids("1+1="), ids(c), uid=f"v0-{k}") for k, c in enumerate(("2", "ab"))]
    src.compare([tuple(pair)])
    src.store.submit(src.store.next_item("ann")["id"], "ann", "a")


def test_the_refitted_reward_model_refuses_a_trunk_whose_tokenizer_is_not_the_policys(tmp_path):
    other = swapped_tokenizer()
    src = human(tmp_path, other, reward_model=RM)
    labeled_pair(src, other)
    with pytest.raises(UserError) as e:
        src.collect()  # the first refit loads the trunk
    a, b = char_tokenizer().convert_tokens_to_ids(["a", "b"])
    assert str(e.value).startswith("reward source 'people': reward_model.path: model builtin:tiny-gpt2: its "
                                   "tokenizer is not the policy's")
    assert f"id {a} is 'b' in the policy's, 'a' in its own" in str(e.value)
    same = human(tmp_path / "same", char_tokenizer(), reward_model=RM)
    labeled_pair(same, char_tokenizer())
    same.collect()
    assert same.rm.fitted


def test_items_sampled_with_another_tokenizer_come_back_as_text_without_their_ids(tmp_path):
    """A database shared with a run of another policy: its ids would mean other tokens here."""
    other, tok = swapped_tokenizer(), char_tokenizer()
    db = str(tmp_path / "labels.sqlite")
    first = human(tmp_path, other, db=db, task="thumbs")
    lp = torch.tensor([-0.5, -1.0])
    first.score([Rollout("1+1=", "ab", {}, 0, [5, 6], [7, 8], logprobs=lp, uid="v0-0")])
    first.store.submit(first.store.next_item("ann")["id"], "ann", "up")
    (back,) = human(tmp_path / "again", other, db=db, task="thumbs").collect()
    assert back.rollout.completion_ids == [7, 8] and torch.equal(back.rollout.logprobs, lp)  # same tokenizer: kept
    (foreign,) = human(tmp_path / "later", tok, db=db, task="thumbs").collect()
    assert foreign.rollout.completion == "ab" and foreign.rollout.logprobs is None
    assert foreign.rollout.completion_ids == [] and foreign.rollout.prompt_ids == []


def test_frl_check_names_the_differing_ids_of_a_reward_models_tokenizer(tmp_path):
    rm = reward_model_folder(tmp_path / "rm", swapped_tokenizer())
    done = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "check", str(write_recipe(tmp_path, rm)),
                           "--prompts", "1", "--generations", "2"], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    a = char_tokenizer().convert_tokens_to_ids("a")
    assert f"the reward model's tokenizer is not the policy's" in done.stdout + done.stderr
    assert f"id {a} is 'a' in the policy's, 'b' in the reward model's" in done.stdout + done.stderr
