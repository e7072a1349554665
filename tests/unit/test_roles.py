"""Model roles: reward model and critic built from the policy; scores read at the last real token."""
from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from feedback_rl.modeling.batching import TokenBatch, pack
from feedback_rl.modeling.roles import build_models, last_token_index, sequence_scores, token_values

EOS = 2  # the pad id below is the EOS id, which also ends every sequence


class Tok:
    pad_token_id = EOS
    eos_token_id = EOS


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=20, n_positions=16, n_embd=16, n_layer=1, n_head=2, pad_token_id=EOS,
                     eos_token_id=EOS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def left_pad(seqs: list[list[int]], pad: int) -> TokenBatch:
    width = max(map(len, seqs))
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
    attn = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    return TokenBatch(ids, attn, torch.zeros_like(attn))


def test_last_token_index_from_the_mask_with_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]


def test_score_is_read_at_the_last_real_token_even_when_the_pad_id_is_eos(policy):
    rm = build_models({"reward_model"}, policy, Tok()).reward_model.eval()
    seqs = [[5, 6, 7, EOS], [8, EOS], [9, 10, 11, 12, 13, EOS]]
    with torch.no_grad():
        alone = [float(sequence_scores(rm, pack([s], [[]], EOS))) for s in seqs]
        right = sequence_scores(rm, pack(seqs, [[]] * 3, EOS)).tolist()
        left = sequence_scores(rm, left_pad(seqs, EOS)).tolist()
        # the value at each sequence's own EOS, read by hand from the per-token values
        per_token = token_values(rm, pack(seqs, [[]] * 3, EOS))
        by_hand = [float(per_token[i, len(s) - 1]) for i, s in enumerate(seqs)]
    assert right == pytest.approx(alone, abs=1e-5)
    assert left == pytest.approx(alone, abs=1e-5)
    assert right == pytest.approx(by_hand, abs=1e-6)
    # HF's own pooling looks for the last token that is not the pad id: here it stops before the EOS
    with torch.no_grad():
        b = pack(seqs, [[]] * 3, EOS)
        hf = rm(input_ids=b.input_ids, attention_mask=b.attention_mask).logits.squeeze(-1).tolist()
    assert hf != pytest.approx(alone, abs=1e-3)


def test_reward_model_and_separate_critic_copy_the_trunk_and_train_alone(policy):
    models = build_models({"reward_model", "critic", "reference"}, policy, Tok())
    for role in (models.reward_model, models.critic):
        assert torch.equal(role.base_model.wte.weight, policy.base_model.wte.weight)
        assert role.base_model.wte.weight.data_ptr() != policy.base_model.wte.weight.data_ptr()
    assert not any(p.requires_grad for p in models.reference.parameters())
    assert models.trainable() == [policy, models.critic, models.reward_model]


def test_shared_critic_adds_only_a_head_on_the_policy_trunk(policy):
    models = build_models({"critic:shared"}, policy, Tok())
    names = [n for n, _ in models.critic.named_parameters()]
    assert names == ["score.weight", "score.bias"]
    batch = pack([[5, 6, EOS]], [[]], EOS)
    values = token_values(models.critic, batch)
    values.sum().backward()
    assert policy.base_model.wte.weight.grad is not None  # the value loss reaches the shared trunk
    policy.zero_grad(set_to_none=True)


def test_unknown_role_is_a_programming_error(policy):
    with pytest.raises(ValueError, match="unknown model role"):
        build_models({"critique"}, policy, Tok())
