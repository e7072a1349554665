"""LoRA: only the adapter trains; the reference is the base with the adapter off, bit for bit, with no
weights of its own; critic and reward-model trunks are plain copies of the current policy."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from feedback_rl.modeling import lora
from feedback_rl.modeling.batching import sequence_logprobs, tokenize
from feedback_rl.errors import UserError
from feedback_rl.modeling.loading import load_policy
from feedback_rl.modeling.spec import LoraSpec, ModelSpec
from feedback_rl.modeling.roles import build_models, token_values

TINY = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 32}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    from feedback_rl.modeling.tiny import build_tiny_gpt2
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny") / "base", seed=0, **TINY)


def lora_policy(base_dir: Path, **lora_options):
    return load_policy(ModelSpec(path=str(base_dir), lora=LoraSpec(**lora_options)), Path.cwd(), base_dir, 0)


def plain(base_dir: Path):
    return AutoModelForCausalLM.from_pretrained(base_dir).eval()


def train_a_little(policy, batch, steps: int = 3) -> None:
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    policy.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = -(sequence_logprobs(policy, batch) * batch.target_mask).sum()
        loss.backward()
        opt.step()


def test_only_adapter_weights_require_grad_and_gpt2_projections_are_the_default_targets(base_dir):
    policy, _ = lora_policy(base_dir, r=4)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    adapted = {n.split(".")[-1] for n, m in policy.named_modules() if isinstance(m, __import__("peft").tuners.lora.LoraLayer)}
    assert adapted == {"c_attn", "c_proj", "c_fc"}
    # rank 4 on 2 layers: c_attn 32->96, attn c_proj 32->32, c_fc 32->128, mlp c_proj 128->32
    per_layer = 4 * (32 + 96) + 4 * (32 + 32) + 4 * (32 + 128) + 4 * (128 + 32)
    assert sum(policy.get_parameter(n).numel() for n in trainable) == 2 * per_layer


def test_all_linear_and_a_missing_target_module(base_dir):
    policy, _ = lora_policy(base_dir, target_modules="all-linear")
    assert any(p.requires_grad for p in policy.parameters())
    with pytest.raises(UserError, match="model.lora.target_modules: none of \\['q_proj'\\]"):
        lora_policy(base_dir, target_modules=["q_proj"])


def test_reference_is_the_base_with_the_adapter_off_exactly_before_and_after_training(base_dir):
    policy, tok = lora_policy(base_dir, r=4, dropout=0.1)
    models = build_models({"reference"}, policy, tok)
    ref = models.reference
    assert list(ref.parameters()) == [] and ref.state_dict() == {}   # no second copy of the weights
    base = plain(base_dir)
    batch = tokenize(tok, ["12+7=", "3+4="], ["19", "7"])
    with torch.no_grad():
        want = sequence_logprobs(base, batch)
        start = sequence_logprobs(policy.eval(), batch)
    assert torch.equal(sequence_logprobs(ref, batch), want)
    assert torch.equal(start, want)   # a fresh adapter (B = 0) changes nothing
    train_a_little(policy, batch)
    with torch.no_grad():
        moved = sequence_logprobs(policy.eval(), batch)
    assert not torch.allclose(moved, want, atol=1e-4)   # the adapter learned something ...
    policy.train()
    got = sequence_logprobs(ref, batch)
    assert torch.equal(got, want) and not got.requires_grad   # ... and the reference did not move
    assert policy.training   # the reference's eval() is undone
    loss = -(sequence_logprobs(policy, batch) * batch.target_mask).sum()
    loss.backward()   # the adapter is back on and trains after a reference pass
    assert all(p.grad is not None for n, p in policy.named_parameters() if "lora_B" in n)


def test_critic_and_reward_model_copy_the_plain_trunk_of_the_current_policy(base_dir):
    policy, tok = lora_policy(base_dir, r=4)
    batch = tokenize(tok, ["12+7="], ["19"])
    train_a_little(policy, batch)
    policy.eval()
    models = build_models({"critic", "reward_model"}, policy, tok)
    trunk = lora.plain_trunk(policy)
    for role in (models.critic, models.reward_model):
        assert not any("lora" in k for k in role.state_dict())
        with torch.no_grad():
            mine = role.base_model(input_ids=batch.input_ids).last_hidden_state
            theirs = trunk(input_ids=batch.input_ids).last_hidden_state
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
        assert all(p.requires_grad for p in role.parameters())   # the roles train in full
    # the policy's own base weights are untouched by the copy (merged_state_dict changes nothing)
    base = plain(base_dir)
    with torch.no_grad(), policy.disable_adapter():
        assert torch.equal(policy(input_ids=batch.input_ids).logits, base(input_ids=batch.input_ids).logits)


def test_shared_value_head_reads_the_lora_trunk(base_dir):
    policy, tok = lora_policy(base_dir, r=4)
    models = build_models({"critic:shared"}, policy, tok)
    batch = tokenize(tok, ["1+1=", "22+3="], ["2", "25"])
    values = token_values(models.critic, batch)
    assert values.shape == batch.input_ids.shape
    values.sum().backward()
    assert any(p.grad is not None for n, p in policy.named_parameters() if "lora_" in n)


def test_an_adapter_folder_loads_its_base_then_the_adapter_trainable(base_dir, tmp_path):
    policy, tok = lora_policy(base_dir, r=4)
    batch = tokenize(tok, ["12+7="], ["19"])
    train_a_little(policy, batch)
    policy.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "model.safetensors").exists()   # the adapter alone
    again, _ = load_policy(ModelSpec(path=str(tmp_path / "adapter")), Path.cwd(), tmp_path, 0)
    assert lora.is_lora(again) and any(p.requires_grad for p in again.parameters())
    with torch.no_grad():
        assert torch.equal(sequence_logprobs(again.eval(), batch), sequence_logprobs(policy.eval(), batch))


def test_recipe_lora_keys_are_validated():
    assert ModelSpec(lora={"r": 2}).lora.alpha == 16.0
    with pytest.raises(Exception, match="rank"):
        ModelSpec(lora={"rank": 2})
    with pytest.raises(Exception):
        ModelSpec(lora={"target_modules": "all"})


def test_a_restarted_adapter_makes_the_trained_model_the_reference(base_dir, tmp_path):
    """Between stages the engine folds the trained adapter in and starts a fresh one: the next
    stage's adapter-off reference is then the previous stage's model, not the original base."""
    policy, tok = lora_policy(base_dir, r=4)
    batch = tokenize(tok, ["1+1=", "2+3="], ["2", "5"])
    train_a_little(policy, batch)
    policy.eval()
    with torch.no_grad():
        trained = sequence_logprobs(policy, batch)
        original = sequence_logprobs(build_models({"reference"}, policy, tok).reference, batch)
    assert not torch.allclose(trained, original, atol=1e-3)  # the adapter did something
    base, config = lora.restart(policy)
    base.save_pretrained(tmp_path / "base")  # what the engine does in the run folder
    fresh = lora.rewrap(base, config, tmp_path / "base")
    assert not lora.adapter_trained(fresh)
    reference = build_models({"reference"}, fresh, tok).reference
    with torch.no_grad():
        assert torch.allclose(sequence_logprobs(reference, batch), trained, atol=1e-5)
        assert torch.allclose(sequence_logprobs(fresh.eval(), batch), trained, atol=1e-5)  # B = 0: no change yet
    fresh.save_pretrained(tmp_path / "adapter")  # names the folded base, so it loads back onto it
    again, _ = load_policy(ModelSpec(path=str(tmp_path / "adapter")), Path.cwd(), tmp_path, 0)
    with torch.no_grad():
        assert torch.allclose(sequence_logprobs(again.eval(), batch), trained, atol=1e-5)


def test_a_moved_run_finds_its_base_beside_the_adapter_and_a_lost_base_is_a_user_error(base_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base_dir, run / "base_model")
    policy, tok = lora_policy(run / "base_model", r=4)
    policy.save_pretrained(run / "final")
    moved = tmp_path / "elsewhere"
    shutil.move(run, moved)
    assert lora.base_path(moved / "final") == str((moved / "base_model").resolve())
    again, _ = load_policy(ModelSpec(path=str(moved / "final")), Path.cwd(), tmp_path, 0)
    assert lora.is_lora(again)
    shutil.rmtree(moved / "base_model")
    with pytest.raises(UserError, match="the base model .* is gone"):
        lora.base_path(moved / "final")
