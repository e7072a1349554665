"""Backend log-probs laid out per token, the truncated IS weights the core computes (row by row), and the
correction in GRPO and PPO, by hand."""
import math
from types import SimpleNamespace

import pytest
import torch

from feedback_rl import Models, PluginContext, Rollout, SamplingParams
from feedback_rl.loop import batch as core_batch
from feedback_rl.loop.batch import place_behaviour
from feedback_rl.loop.importance import mismatch_metrics, truncated_weights as truncated_is_weights
from feedback_rl.tokens import TokenBatch, pack
from frl_plugins.optimizers import grpo as grpo_mod
from frl_plugins.optimizers import ppo as ppo_mod

# 2 rows x 3 target positions; row 1's last position is padding
TRAINER = [[-1.1, -0.5, -1.5], [-0.3, -1.0, -0.7]]      # the trainer's old log-probs
BEHAVIOUR = [[-1.2, -0.4, -1.0], [-0.3, -2.0, -0.9]]    # the backend's
CURRENT = [[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.7]]      # the policy being trained
MASK = [[1, 1, 1], [1, 1, 0]]
CAP = 2.0


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def rollout(prompt_ids, completion_ids, logprobs):
    lp = None if logprobs is None else torch.tensor(logprobs)
    return Rollout(prompt="", completion="", row={}, group=0, prompt_ids=prompt_ids,
                   completion_ids=completion_ids, logprobs=lp)


# ------------------------------------------------------------------ layout
def test_behaviour_logprobs_sit_where_sequence_logprobs_scores_each_completion_token():
    rs = [rollout([5, 6], [7, 8, 9], [-0.1, -0.2, -0.3]), rollout([5], [7], [-0.5])]
    batch = pack([r.prompt_ids for r in rs], [r.completion_ids for r in rs], pad_id=0)
    # row 0 = 5 6 7 8 9: position t scores token t+1, so 7 8 9 are scored at positions 1 2 3
    # row 1 = 5 7 pad pad pad: 7 is scored at position 0
    got, has = place_behaviour(rs, batch)
    assert got.tolist()[0] == pytest.approx([0, -0.1, -0.2, -0.3]) and got.tolist()[1] == pytest.approx([-0.5, 0, 0, 0])
    assert has.tolist() == [True, True]


def test_rows_without_backend_logprobs_are_marked_row_by_row_and_a_length_mismatch_is_an_error():
    rs = [rollout([5], [7, 8], None), rollout([5], [7, 8], [-0.1, -0.2])]
    got, has = place_behaviour(rs, pack([[5], [5]], [[7, 8], [7, 8]], 0))
    assert has.tolist() == [False, True] and got[0].abs().sum() == 0
    empty = [rollout([5], [], None)]   # nothing generated: nothing to compare, not an error
    assert place_behaviour(empty, pack([[5]], [[]], 0))[0].abs().sum() == 0
    with pytest.raises(ValueError, match="2 completion tokens"):
        place_behaviour([rollout([5], [7, 8], [-0.1])], pack([[5]], [[7, 8]], 0))


def test_the_core_weights_a_batch_that_mixes_rows_with_and_without_behaviour_logprobs():
    """A late human rating imported from a file has no log-probs: its row keeps weight 1 and is counted;
    the sampled rows beside it are still corrected (one such row used to switch the correction off, or
    raise)."""
    from feedback_rl import ScalarFeedback
    policy = FixedLogprobs(TRAINER)   # the trainer's log-probs before the update
    rows = [Rollout(prompt="", completion="", row={}, group=0, prompt_ids=[0], completion_ids=[0, 0, 0],
                    logprobs=t(BEHAVIOUR[0]), policy_version=3),
            Rollout(prompt="", completion="", row={}, group=1, prompt_ids=[0], completion_ids=[0, 0, 0])]
    fb = ScalarFeedback(rows, torch.tensor([1.0, 0.0]))
    batch = core_batch.build(fb, policy, None, old_logprobs=True, importance_weighted=True, is_cap=CAP, version=5)
    want = [min(math.exp(a - b), CAP) for a, b in zip(TRAINER[0], BEHAVIOUR[0])]
    assert batch.is_weights[0, :3].tolist() == pytest.approx(want, abs=1e-6)
    assert batch.is_weights[1].tolist() == [1.0, 1.0, 1.0]
    assert batch.has_behaviour.tolist() == [True, False]
    assert batch.versions.tolist() == [3, 0]
    assert batch.metrics["importance/rows_without_behaviour"] == 1.0
    assert batch.metrics["rollout/logprob_mismatch"] == pytest.approx(
        sum(abs(a - b) for a, b in zip(TRAINER[0], BEHAVIOUR[0])) / 3, abs=1e-6)
    # an optimizer that does not weight by importance gets neither the forward nor the weights
    plain = core_batch.build(fb, policy, None, importance_weighted=False, is_cap=CAP)
    assert plain.is_weights is None and plain.old_logps is None


# ------------------------------------------------------------------ the weight
def hand_weights():
    return [[min(math.exp(a - b), CAP) if m else 1.0 for a, b, m in zip(ra, rb, rm)]
            for ra, rb, rm in zip(TRAINER, BEHAVIOUR, MASK)]


def test_is_weight_is_the_truncated_ratio_trainer_over_behaviour():
    # one function in the core, used by GRPO and PPO alike
    w = truncated_is_weights(t(TRAINER), t(BEHAVIOUR), t(MASK), CAP)
    assert w.tolist() == [pytest.approx(r, abs=1e-6) for r in hand_weights()]
    assert w[1, 1] == CAP          # exp(1.0) = 2.72 is truncated
    assert not w.requires_grad


def test_mismatch_metrics_by_hand():
    m = mismatch_metrics(t(TRAINER), t(BEHAVIOUR), t(MASK))
    pairs = [(a, b) for ra, rb, rm in zip(TRAINER, BEHAVIOUR, MASK) for a, b, k in zip(ra, rb, rm) if k]
    assert m["rollout/logprob_mismatch"] == pytest.approx(sum(abs(a - b) for a, b in pairs) / 5)
    assert m["rollout/is_ratio_mean"] == pytest.approx(sum(math.exp(a - b) for a, b in pairs) / 5)


# ------------------------------------------------------------------ GRPO's loss, through the plugin
class FixedLogprobs(torch.nn.Module):
    """A 'model' whose next-token log-prob of token 0 at each position is a given table (vocab of 2)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(t(table))

    def forward(self, input_ids, **_):
        p = torch.exp(self.table).clamp(max=1 - 1e-7)
        pad = torch.zeros(p.shape[0], 1)
        first = torch.cat([self.table, pad], 1)                     # log p(token 0)
        second = torch.cat([torch.log1p(-p), pad], 1)               # log p(token 1)
        return SimpleNamespace(logits=torch.stack([first, second], -1))


def grpo_batch(is_weights):
    # targets are all token 0; row 1's completion is two tokens long
    ids = torch.zeros(2, 4, dtype=torch.long)
    comp = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]])
    tokens = TokenBatch(ids, torch.ones(2, 4, dtype=torch.long), comp)
    return grpo_mod.GRPOBatch(tokens, torch.tensor([1.0, -0.5]), t(TRAINER), None, is_weights)


def grpo(is_cap=None):
    ctx = PluginContext(name="grpo", run_dir=".", sampling=SamplingParams(max_new_tokens=3), is_cap=is_cap)
    plugin = grpo_mod.GRPO(grpo_mod.GRPO.Options(loss_type="dapo"), ctx)
    plugin._zero_std = 0.0
    return plugin


def hand_grpo_loss(weights):
    adv, eps, total = [1.0, -0.5], 0.2, 0.0
    for i in range(2):
        for j in range(3):
            if not MASK[i][j]:
                continue
            r = math.exp(CURRENT[i][j] - TRAINER[i][j])
            clipped = min(max(r, 1 - eps), 1 + eps)
            total += weights[i][j] * -min(r * adv[i], clipped * adv[i])
    return total / 5          # dapo: over the batch's 5 tokens


def test_grpo_corrected_loss_by_hand():
    models = Models(policy=FixedLogprobs(CURRENT), tokenizer=None)
    w = truncated_is_weights(t(TRAINER), t(BEHAVIOUR), t(MASK), CAP)
    loss, _ = grpo(is_cap=CAP).loss(grpo_batch(w), models)
    assert loss.item() == pytest.approx(hand_grpo_loss(hand_weights()), abs=1e-5)
    plain, _ = grpo().loss(grpo_batch(None), models)
    assert plain.item() == pytest.approx(hand_grpo_loss([[1.0] * 3] * 2), abs=1e-5)
    assert abs(loss.item() - plain.item()) > 1e-3    # the correction changes something here


def test_grpo_correction_is_a_no_op_when_backend_and_trainer_agree():
    models = Models(policy=FixedLogprobs(CURRENT), tokenizer=None)
    same = truncated_is_weights(t(TRAINER), t(TRAINER), t(MASK), CAP)
    corrected, _ = grpo(is_cap=CAP).loss(grpo_batch(same), models)
    plain, _ = grpo().loss(grpo_batch(None), models)
    assert corrected.item() == pytest.approx(plain.item(), abs=1e-7)


# ------------------------------------------------------------------ PPO's policy loss
def hand_ppo_loss(weights, adv):
    clip, total = 0.2, 0.0
    for i in range(2):
        for j in range(3):
            if not MASK[i][j]:
                continue
            r = math.exp(CURRENT[i][j] - TRAINER[i][j])
            clipped = min(max(r, 1 - clip), 1 + clip)
            total += weights[i][j] * max(-adv[i][j] * r, -adv[i][j] * clipped)
    return total / 5


def test_ppo_corrected_policy_loss_by_hand():
    adv = [[0.5, -1.0, 2.0], [-0.3, 1.5, 0.7]]
    w = truncated_is_weights(t(TRAINER), t(BEHAVIOUR), t(MASK), CAP)
    loss, _ = ppo_mod.policy_loss(t(CURRENT), t(TRAINER), t(adv), t(MASK), 0.2, w)
    assert loss.item() == pytest.approx(hand_ppo_loss(hand_weights(), adv), abs=1e-6)
    plain, _ = ppo_mod.policy_loss(t(CURRENT), t(TRAINER), t(adv), t(MASK), 0.2)
    assert plain.item() == pytest.approx(hand_ppo_loss([[1.0] * 3] * 2, adv), abs=1e-6)
    same = truncated_is_weights(t(TRAINER), t(TRAINER), t(MASK), CAP)
    assert ppo_mod.policy_loss(t(CURRENT), t(TRAINER), t(adv), t(MASK), 0.2, same)[0].item() == \
        pytest.approx(plain.item(), abs=1e-7)
    assert abs(loss.item() - plain.item()) > 1e-3
