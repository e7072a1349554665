"""Train on the tokens that were sampled. With a BPE tokenizer, decoding a sampled completion and
tokenizing the text again gives other ids; feedback must carry the sampled ids, and every optimizer
must score exactly those, with log-probs equal to the backend's behaviour log-probs."""
from __future__ import annotations

import pytest
import torch

from feedback_rl import PluginContext, Rating, SamplingParams, Score, Scored
from feedback_rl.loop.rollout import generate_rollouts
from feedback_rl.tokens import completion_logprobs, rollout_batch
from feedback_rl.loop.batch import for_optimizer
from feedback_rl.loop.feedback import build
from frl_plugins.backends.hf import HFBackend
from frl_plugins.optimizers.dpo import DPO
from frl_plugins.optimizers.grpo import GRPO
from frl_plugins.optimizers.kto import KTO
from frl_plugins.optimizers.rm import RewardModelTraining
from feedback_rl.modeling.roles import build_models

CORPUS = ["the cat sat on the mat", "a cat and a hat", "that hat is the cat's", "sat at the mat"] * 50


@pytest.fixture(scope="module")
def bpe_model():
    """A small GPT-2 over a byte-level BPE vocabulary trained here: merges like 'at' and 'the'
    exist, so a random model's samples are often not the canonical segmentation of their text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    return model, tok


@pytest.fixture(scope="module")
def sampled(bpe_model):
    model, tok = bpe_model
    torch.manual_seed(1)
    rows = [{"prompt": "the cat"}, {"prompt": "a hat"}]
    rollouts = generate_rollouts(HFBackend(HFBackend.Options(), PluginContext(name="hf", run_dir=".")), model, tok,
                                 rows, SamplingParams(max_new_tokens=8), num_generations=4)
    return rollouts


def retokenized_differs(r, tok) -> bool:
    return tok(tok.decode(r.completion_ids), add_special_tokens=False)["input_ids"] != list(r.completion_ids)


def context(name):
    return PluginContext(name=name, run_dir=".", stage="s", sampling=SamplingParams(max_new_tokens=8))


def test_the_sample_holds_completions_that_do_not_survive_decode_then_encode(sampled, bpe_model):
    _, tok = bpe_model
    assert sum(retokenized_differs(r, tok) for r in sampled) >= 2   # the premise of every test below


def scored(rollouts, rewards):
    return [Scored(r, {"s": Score.ok(v)}, v) for r, v in zip(rollouts, rewards)]


def rows_of(batch):
    """Each row's real tokens (the attention mask marks them), as lists."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask)]


def test_online_dpo_scores_exactly_the_sampled_ids_with_the_behaviour_logprobs(sampled, bpe_model):
    model, tok = bpe_model
    rewards = [float(k % 4) for k in range(len(sampled))]        # a clear best and worst per group
    pairs = build("pairs", scored(sampled, rewards), [], [], pointwise=True, tokenizer=tok)
    assert len(pairs) == 2 and any(retokenized_differs(r, tok) for r in pairs.chosen + pairs.rejected)
    dpo = DPO(DPO.Options(), context("dpo"))
    models = build_models(dpo.roles(), model, tok)
    batch = dpo.prepare(for_optimizer(dpo, pairs, models), models)
    want = [r.prompt_ids + r.completion_ids for r in pairs.chosen + pairs.rejected]
    assert rows_of(batch.tokens) == want
    with torch.no_grad():
        trainer = completion_logprobs(model, batch.tokens)
    behaviour = torch.stack([r.logprobs.sum() for r in pairs.chosen + pairs.rejected])
    assert torch.allclose(trainer, behaviour, atol=1e-4), (trainer, behaviour)


def test_kto_scores_exactly_the_sampled_ids(sampled, bpe_model):
    model, tok = bpe_model
    binary = build("binary", scored(sampled, [float(k % 2) for k in range(len(sampled))]), [], [],
                   pointwise=True, tokenizer=tok, binary_threshold=0.5)
    kto = KTO(KTO.Options(), context("kto"))
    models = build_models(kto.roles(), model, tok)
    batch = kto.prepare(for_optimizer(kto, binary, models), models)
    assert rows_of(batch.tokens) == [r.prompt_ids + r.completion_ids for r in binary.rollouts]
    # the KL estimate's mismatched pairs reuse the same sampled completion ids, after another prompt
    kl = rows_of(batch.kl_tokens)
    assert len(kl) == len(binary.rollouts)
    for row, r in zip(kl, binary.rollouts):
        n = len(r.completion_ids)
        assert row[len(row) - n:] == r.completion_ids and row[: len(row) - n] != r.prompt_ids
    with torch.no_grad():
        trainer = completion_logprobs(model, batch.tokens)
    assert torch.allclose(trainer, torch.stack([r.logprobs.sum() for r in binary.rollouts]), atol=1e-4)


def test_the_reward_model_stage_reads_exactly_the_sampled_ids(sampled, bpe_model):
    model, tok = bpe_model
    pairs = build("pairs", scored(sampled, [float(k % 4) for k in range(len(sampled))]), [], [],
                  pointwise=True, tokenizer=tok)
    rm = RewardModelTraining(RewardModelTraining.Options(), context("rm"))
    models = build_models(rm.roles(), model, tok)
    tokens, _ = rm.prepare(for_optimizer(rm, pairs, models), models)
    assert rows_of(tokens) == [r.prompt_ids + r.completion_ids for r in pairs.chosen + pairs.rejected]


def test_human_ratings_and_live_rollouts_keep_separate_groups_in_one_grpo_step(sampled, bpe_model):
    """Ratings of an earlier step's rollouts join the step in groups of their own: the live groups'
    advantages are the same with or without them (they used to be numbered 0.. and share groups)."""
    model, tok = bpe_model
    live = scored(sampled, [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    earlier = [r for r in generate_rollouts(HFBackend(HFBackend.Options(), PluginContext(name="hf", run_dir=".")),
                                            model, tok, [{"prompt": "sat at"}, {"prompt": "a cat"}],
                                            SamplingParams(max_new_tokens=4), num_generations=2)]
    assert [r.group for r in earlier] == [0, 0, 1, 1]   # numbered like the live step's groups
    ratings = [Rating(r, value=v) for r, v in zip(earlier, [1.0, -1.0, 0.5, 0.5])]
    fb = build("scalar", live, [], ratings, pointwise=True, tokenizer=tok)
    groups = [r.group for r in fb.rollouts]
    assert groups[:8] == [0, 0, 0, 0, 1, 1, 1, 1] and groups[8:] == [2, 2, 3, 3]
    grpo = GRPO(GRPO.Options(), context("grpo"))
    models = build_models(grpo.roles(), model, tok)
    alone_fb = build("scalar", live, [], [], pointwise=True, tokenizer=tok)
    alone = grpo.prepare(for_optimizer(grpo, alone_fb, models), models)
    mixed = grpo.prepare(for_optimizer(grpo, fb, models), models)
    assert torch.equal(mixed.advantages[:8], alone.advantages)
    assert mixed.advantages[8] > 0 > mixed.advantages[9] and mixed.advantages[10:].abs().max() == 0


def test_text_only_judgments_are_encoded_once_by_the_core(bpe_model):
    """An item imported from a file has text only: the core encodes it, as it encodes an offline row."""
    _, tok = bpe_model
    from feedback_rl import Preference, Rollout
    a = Rollout(prompt="the cat", completion=" sat", row={}, group=0, prompt_ids=[], completion_ids=[])
    b = Rollout(prompt="the cat", completion=" hat", row={}, group=0, prompt_ids=[], completion_ids=[])
    pairs = build("pairs", [], [], [Preference(a, b, winner=1)], pointwise=False, tokenizer=tok)
    assert pairs.chosen[0].completion_ids == tok(" hat", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert rows_of(rollout_batch(pairs.rejected, tok))[0][: len(a.prompt_ids)] == a.prompt_ids
