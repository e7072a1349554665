"""Each health monitor, provoked on purpose, warns or stops the run with a message."""
import json
import textwrap
import types

import pytest
import torch

import feedback_rl
from feedback_rl import Optimizer, PluginOptions
from feedback_rl.tokens import masked_mean, rollout_batch, sequence_logprobs
from feedback_rl.commands.train import train_recipe
from feedback_rl.errors import RunStopped
from feedback_rl.plugins import get_plugin_manager

DIGIT = '{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}'
ALWAYS = '{name: always, type: rule, check: regex, pattern: ".*", mode: fullmatch}'


def recipe(tmp_path, health: str, sources: str = DIGIT, optimizer: str = "{type: grpo, beta: 0.1}",
           rollout: str = "{num_generations: 4, max_new_tokens: 4}", extra: str = "", steps: int = 2):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: health
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: s
            optimizer: {optimizer}
            data: {{train: {{generator: addition, size: 16}}}}
            rewards: {{max_error_rate: 1.0, sources: [{sources}]}}
            rollout: {rollout}
            train: {{steps: {steps}, batch_size: 4, lr: 5.0e-2}}
            health: {health}
        {extra}"""))
    return path


def test_kl_limit_stops(tmp_path):
    with pytest.raises(RunStopped, match=r"step 2: kl/sequence: KL to the reference per completion .* > 1e-09"):
        train_recipe(recipe(tmp_path, "{max_kl: {limit: 1.0e-9, action: stop}}"))


def test_entropy_collapse_warns(tmp_path, capsys):
    run, summary = train_recipe(recipe(tmp_path, "{min_entropy: {limit: 100.0}}"))
    assert summary["status"] == "finished"
    assert "entropy: entropy collapsed to" in capsys.readouterr().out


def test_truncation_limit_stops_when_max_new_tokens_is_1(tmp_path):
    # one new token cuts every completion except one whose token is the EOS itself: that one ended and is not
    # truncated. The rate is therefore exact but not always 100% (seed 0 samples the EOS once in 16: 94%), so
    # the stop message must give exactly the share of one-token completions the rollouts file shows cut
    with pytest.raises(RunStopped) as stopped:
        train_recipe(recipe(tmp_path, "{max_truncated_rate: {limit: 0.5, action: stop}}",
                            rollout="{num_generations: 4, max_new_tokens: 1}"))
    rows = [json.loads(line) for line in (tmp_path / "runs" / "health" / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and {r["step"] for r in rows} == {1}
    # the character tokenizer: a cut completion is its one character, one that ended is the EOS alone (no text)
    assert all(len(r["completion"]) == 1 for r in rows if r["truncated"])
    assert all(r["completion"] == "" for r in rows if not r["truncated"])
    cut = sum(r["truncated"] for r in rows)
    assert cut > 8
    assert f"step 1: rollout/truncated_rate: {cut / 16:.0%} of completions hit max_new_tokens" in str(stopped.value)


def test_zero_variance_groups_stop(tmp_path):
    with pytest.raises(RunStopped, match=r"100% of prompt groups have one reward"):
        train_recipe(recipe(tmp_path, "{max_zero_variance_groups: {limit: 0.5, action: stop}}", sources=ALWAYS))


def test_reward_error_rate_limit_stops(tmp_path):
    # a checker that raises on every rollout (a missing answer column is now refused before training starts)
    (tmp_path / "health_checks.py").write_text("def boom(completion, row):\n    raise ValueError('exploded')\n")
    broken = "{name: exact, type: rule, check: custom, function: 'health_checks:boom'}"
    with pytest.raises(RunStopped, match=r"reward/exact/error_rate: reward error rate 100% > 10%"):
        train_recipe(recipe(tmp_path, "{max_reward_error_rate: {limit: 0.1, action: stop}}", sources=broken))


def test_zero_gradient_norm_warns_by_default(tmp_path, capsys):
    # every completion gets the same reward: zero advantages, zero gradient
    run, summary = train_recipe(recipe(tmp_path, "{max_zero_variance_groups: null}", sources=ALWAYS,
                                       optimizer="{type: grpo}"))
    assert "grad_norm: gradient norm 0 <= 0: nothing is learned" in capsys.readouterr().out


class NaNOnStepTwo(Optimizer):
    """SFT whose loss turns NaN on its second call: a stand-in for a diverging optimizer."""
    name = "nan_sft"
    feedback = "demonstrations"

    class Options(PluginOptions):
        pass

    calls = 0

    def prepare(self, feedback, models):
        return rollout_batch(feedback.rollouts, models.tokenizer)

    def loss(self, batch, models):
        NaNOnStepTwo.calls += 1
        loss = -masked_mean(sequence_logprobs(models.policy, batch), batch.target_mask)
        return (loss * float("nan") if NaNOnStepTwo.calls == 2 else loss), {}


def nan_plugin_manager():
    module = types.ModuleType("nan_plugin")
    module.frl_register_optimizers = feedback_rl.hookimpl(lambda register: register(NaNOnStepTwo))
    pm = get_plugin_manager()
    pm.register(module)
    return pm


@pytest.mark.parametrize("action", ["skip", "stop"])
def test_non_finite_loss_skips_the_step_and_saves_the_batch(tmp_path, action):
    NaNOnStepTwo.calls = 0
    path = recipe(tmp_path, f"{{nonfinite: {action}}}", optimizer="nan_sft", steps=3)
    path.write_text(path.read_text().replace("    rewards: {max_error_rate: 1.0, sources: [" + DIGIT + "]}\n", ""))
    pm = nan_plugin_manager()
    if action == "stop":
        with pytest.raises(RunStopped, match="non-finite loss or gradient; batch saved to"):
            train_recipe(path, pm=pm)
    else:
        run, summary = train_recipe(path, pm=pm)
        assert summary["status"] == "finished"
    saved = list((tmp_path / "runs" / "health" / "bad_batches").glob("*.pt"))
    assert [p.name for p in saved] == ["s-step2-mb0.pt"]
    assert "minibatch" in torch.load(saved[0], weights_only=False)
    if action == "skip":  # the final weights are finite: the NaN step never reached them
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "runs" / "health" / "final")
        assert all(torch.isfinite(p).all() for p in model.parameters())
