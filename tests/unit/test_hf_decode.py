"""The HF backend's decode loop samples what ``model.generate`` samples: greedy ids equal, behaviour
log-probs equal the teacher-forced ones of the processed distribution, a shared prefill equals one per
copy, the inverse-CDF sampler draws the right frequencies, and anything the loop does not implement
goes to ``model.generate``."""
from __future__ import annotations

import pytest
import torch

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.tokens import pack, sequence_logprobs
from feedback_rl.loop.rollout import cut_at_stop
from feedback_rl.modeling.batching import forward_logits
from frl_plugins.backends.hf import HFBackend, decode, hf_generate, pick, prefill, sample_inverse_cdf, warpers

V = 48
PAD = 0
# different lengths (left padding) and repeats that are not adjacent
PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [5, 6, 7, 8, 9], [20, 21, 22], [11, 12], [5, 6, 7, 8, 9], [30]]


def tiny(kind: str, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    if kind == "gpt2":   # absolute positions: wrong position ids change every token
        model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                           bos_token_id=1, eos_token_id=2, pad_token_id=PAD))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, bos_token_id=1,
                                             eos_token_id=2, pad_token_id=PAD))
    return model.eval()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    return tiny(request.param)


def early_stops(model, steps: int) -> list[int]:
    """Stop tokens (one or two) that greedy decoding hits at the most different steps across rows."""
    from itertools import combinations
    free = hf_generate(model, PROMPTS, SamplingParams(max_new_tokens=steps, greedy=True), [V + 1], PAD)

    def lengths(stops):
        return {next((k for k, t in enumerate(g.completion_ids) if t in stops), steps) for g in free}
    best = max([[v] for v in range(V)] + [list(c) for c in combinations(range(V), 2)], key=lambda s: len(lengths(s)))
    assert len(lengths(best)) >= 3, "no stop tokens that end rows at different steps"
    return best


def test_greedy_ids_equal_generate_with_left_padding_repeats_and_rows_stopping_at_different_steps(model):
    steps = 12
    stops = early_stops(model, steps)
    greedy = SamplingParams(max_new_tokens=steps, greedy=True, stop_token_ids=stops)
    with torch.no_grad():
        ours = [cut_at_stop(g, stops) for g in decode(model, PROMPTS, greedy, stops, PAD)]
        theirs = [cut_at_stop(g, stops) for g in hf_generate(model, PROMPTS, greedy, stops, PAD)]
    assert [g.completion_ids for g in ours] == [g.completion_ids for g in theirs]
    assert len({len(g.completion_ids) for g in ours}) >= 3   # rows left the batch at different steps
    assert [g.prompt_ids for g in ours] == PROMPTS
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


def processed_teacher_logprobs(model, gens, sampling: SamplingParams) -> list[torch.Tensor]:
    """Teacher-forced log-probs of the sampled completions under the processed distribution: the
    full logits of the packed sequences, through transformers' warpers, log-softmaxed, gathered."""
    batch = pack([g.prompt_ids for g in gens], [g.completion_ids for g in gens], PAD)
    with torch.no_grad():
        logits = forward_logits(model, batch)[:, :-1].float()
    out = []
    for i, g in enumerate(gens):
        where = batch.target_mask[i].nonzero().squeeze(-1)
        scores = logits[i, where]
        for warp in warpers(sampling):
            scores = warp(None, scores)
        out.append(torch.log_softmax(scores, -1).gather(-1, batch.input_ids[i, where + 1, None]).squeeze(-1))
    return out


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (0.8, 5, 1.0), (1.2, 0, 0.7),
                                                       (0.9, 8, 0.8)])
def test_behaviour_logprobs_equal_teacher_forced_logprobs_of_the_processed_distribution(model, temperature, top_k,
                                                                                       top_p):
    sampling = SamplingParams(max_new_tokens=10, temperature=temperature, top_k=top_k, top_p=top_p)
    torch.manual_seed(3)
    with torch.no_grad():
        gens = decode(model, PROMPTS, sampling, [2], PAD)
    assert len({len(g.completion_ids) for g in gens} | {0}) > 1
    for g, want in zip(gens, processed_teacher_logprobs(model, gens, sampling)):
        assert g.logprobs.dtype == torch.float32 and torch.isfinite(g.logprobs).all()
        torch.testing.assert_close(g.logprobs, want, atol=1e-5, rtol=0)
    if top_k == 0 and top_p == 1.0:   # plain temperature: the core's own scorer agrees
        batch = pack([g.prompt_ids for g in gens], [g.completion_ids for g in gens], PAD)
        with torch.no_grad():
            core = sequence_logprobs(model, batch, temperature)
        for i, g in enumerate(gens):
            torch.testing.assert_close(core[i][batch.target_mask[i].bool()], g.logprobs, atol=1e-5, rtol=0)


def test_a_shared_prefill_gives_the_next_token_logits_and_cache_of_one_prefill_per_copy(model):
    with torch.no_grad():
        shared, cache_s, attn_s, _ = prefill(model, PROMPTS, PAD, share=True)
        each, cache_e, attn_e, _ = prefill(model, PROMPTS, PAD, share=False)
    assert shared.shape == (len(PROMPTS), V)
    torch.testing.assert_close(shared, each, atol=1e-5, rtol=0)
    assert torch.equal(attn_s, attn_e)
    for a, b in zip(cache_s.layers, cache_e.layers):
        torch.testing.assert_close(a.keys, b.keys, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.values, b.values, atol=1e-5, rtol=0)


def test_the_inverse_cdf_sampler_draws_each_token_with_its_probability_and_never_a_zero_one():
    probs = torch.tensor([0.0, 0.3, 0.0, 0.05, 0.4, 0.0, 0.25, 0.0])
    torch.manual_seed(0)
    draws = sample_inverse_cdf(probs.expand(200_000, -1))
    freq = torch.bincount(draws, minlength=len(probs)).float() / len(draws)
    assert (freq - probs).abs().max() < 0.01
    assert freq[probs == 0].sum() == 0
    # unnormalised rows (weights) sample the same distribution
    torch.manual_seed(0)
    assert torch.equal(sample_inverse_cdf(3 * probs.expand(200_000, -1)), draws)


def test_top_k_and_top_p_masked_tokens_are_never_sampled():
    torch.manual_seed(0)
    logits = torch.randn(4000, V)
    for sampling in (SamplingParams(top_k=3), SamplingParams(top_p=0.3), SamplingParams(top_k=10, top_p=0.5)):
        warped = logits
        for warp in warpers(sampling):
            warped = warp(None, warped)
        allowed = torch.isfinite(warped)
        assert (allowed.sum(-1) < V).all()
        tok, lp = pick(logits, warpers(sampling), greedy=False)
        assert allowed.gather(-1, tok[:, None]).all()
        torch.testing.assert_close(lp, torch.log_softmax(warped, -1).gather(-1, tok[:, None]).squeeze(-1))


def test_sampled_runs_repeat_under_the_same_seed_and_differ_under_another(model):
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=20)

    def run(seed):
        torch.manual_seed(seed)
        return decode(model, PROMPTS, sampling, [2], PAD)
    a, b, c = run(7), run(7), run(8)
    assert [g.completion_ids for g in a] == [g.completion_ids for g in b]
    assert all(torch.equal(x.logprobs, y.logprobs) for x, y in zip(a, b))
    assert [g.completion_ids for g in a] != [g.completion_ids for g in c]


@pytest.mark.parametrize("engine", ["loop", "generate"])
def test_a_seeded_call_repeats_itself_whatever_the_global_generator_did(model, engine):
    # rollout.overlap seeds each batch by its step (SamplingParams.seed): a resumed run must sample the
    # same batch, and copies of one prompt must still differ from each other
    sampling = SamplingParams(max_new_tokens=10, temperature=1.0, seed=11, stop_token_ids=[2])
    b = backend(engine, None)
    torch.manual_seed(0)
    a = b.generate(model, _Tok(), [PROMPTS[0]] * 6, sampling)
    torch.manual_seed(123)
    torch.rand(1000)
    again = b.generate(model, _Tok(), [PROMPTS[0]] * 6, sampling)
    assert [g.completion_ids for g in a] == [g.completion_ids for g in again]
    assert len({tuple(g.completion_ids) for g in a}) > 1


class _Tok:
    """All the backend asks of a tokenizer: the pad and EOS ids."""
    pad_token_id, eos_token_id = PAD, 2


class Spy:
    """Counts calls of a model's ``generate``."""

    def __init__(self, model, monkeypatch):
        self.calls, real = 0, model.generate

        def generate(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(model, "generate", generate)


def backend(engine: str, said: list | None):
    context = PluginContext(name="hf", run_dir=".", warn=said.append) if said is not None else None
    return HFBackend(HFBackend.Options(engine=engine), context)


def test_a_repetition_penalty_falls_back_to_generate_and_says_so_once(monkeypatch):
    model = tiny("llama")
    model.generation_config.repetition_penalty = 1.3
    spy, said = Spy(model, monkeypatch), []
    hf = backend("loop", said)
    tok = _Tok()
    sampling = SamplingParams(max_new_tokens=4, stop_token_ids=[2])
    for _ in range(2):
        with torch.no_grad():
            hf.generate(model, tok, PROMPTS, sampling)
    assert spy.calls == 2
    assert len(said) == 1 and "repetition_penalty=1.3" in said[0] and "model.generate" in said[0]
    with pytest.warns(UserWarning, match="repetition_penalty"):   # no context: a Python warning
        backend("loop", None).generate(model, tok, PROMPTS, sampling)


def test_engine_generate_always_takes_generate_and_the_loop_does_not(monkeypatch):
    model, tok, said = tiny("gpt2"), _Tok(), []
    spy = Spy(model, monkeypatch)
    sampling = SamplingParams(max_new_tokens=4, stop_token_ids=[2])
    with torch.no_grad():
        backend("generate", said).generate(model, tok, PROMPTS, sampling)
        assert spy.calls == 1
        out = backend("loop", said).generate(model, tok, PROMPTS, sampling)
    assert spy.calls == 1 and said == []
    assert len(out) == len(PROMPTS) and all(g.logprobs is not None for g in out)


def test_a_lora_policy_decodes_like_its_generate():
    from peft import LoraConfig, get_peft_model
    policy = get_peft_model(tiny("gpt2"), LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True,
                                                     init_lora_weights=False))
    policy.eval()
    greedy = SamplingParams(max_new_tokens=8, greedy=True)
    with torch.no_grad():
        ours = decode(policy, PROMPTS, greedy, [V + 1], PAD)
        theirs = hf_generate(policy, PROMPTS, greedy, [V + 1], PAD)
        with policy.disable_adapter():
            plain = decode(policy, PROMPTS, greedy, [V + 1], PAD)
    assert [g.completion_ids for g in ours] == [g.completion_ids for g in theirs]
    for a, b, c in zip(ours, theirs, plain):
        torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
        assert not torch.allclose(a.logprobs, c.logprobs, atol=1e-3)   # the adapter took part


def test_under_bf16_autocast_log_probs_stay_float32_and_close_to_teacher_forced(model):
    sampling = SamplingParams(max_new_tokens=8, temperature=1.0)
    torch.manual_seed(0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        gens = decode(model, PROMPTS, sampling, [2], PAD)
        want = processed_teacher_logprobs(model, gens, sampling)
    for g, w in zip(gens, want):
        assert g.logprobs.dtype == torch.float32
        torch.testing.assert_close(g.logprobs, w.float(), atol=0.1, rtol=0)
