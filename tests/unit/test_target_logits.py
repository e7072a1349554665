"""sequence_logprobs runs the LM head on completion targets only: the same log-probs, entropies and
gradients there as the full-vocabulary computation over every position, and 0 elsewhere."""
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from feedback_rl.modeling.batching import pack, position_ids, sequence_logprobs

V = 97


def full_head(model, batch, temperature):
    """The definition: logits at every position, log-softmax over the vocabulary, the next token's entry."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=position_ids(batch.attention_mask), use_cache=False).logits[:, :-1].float()
    logp = F.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=64)).eval()


class NoKeepArgument(torch.nn.Module):
    """A causal LM whose forward has no logits_to_keep (custom modelling code): the full head runs."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask, position_ids, use_cache):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache)


def batch():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, V, (n,), generator=g).tolist() for n in (9, 5, 12, 7)]
    completions = [torch.randint(3, V, (n,), generator=g).tolist() for n in (4, 6, 1, 0)]   # one empty
    return pack(prompts, completions, pad_id=0)


@pytest.mark.parametrize("make", [gpt2, llama, lambda: NoKeepArgument(gpt2())], ids=["gpt2", "llama", "no-keep"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_at_targets_equal_the_full_head_and_are_zero_elsewhere(make, temperature):
    model, tokens = make(), batch()
    mask = tokens.target_mask
    with torch.no_grad():
        want, want_entropy = full_head(model, tokens, temperature)
        got, entropy = sequence_logprobs(model, tokens, temperature, with_entropy=True)
    assert got.shape == want.shape == mask.shape and got.dtype == torch.float32
    assert torch.allclose(got * mask, want * mask, atol=1e-6, rtol=0)
    # 1e-6 (two float32 ulps at the entropies' log(V) = 4.57) holds at 1 thread only, where both ways give the
    # same bits. On 2 or 4 threads the head's matmul over the target rows alone splits its work otherwise than
    # over every position: logits differ by up to 1.2e-7, log-probs by 4.8e-7 (1 ulp) and entropies by 1.43e-6
    # (3 ulps; measured for gpt2 and llama, both temperatures). Allow ten ulps
    assert torch.allclose(entropy * mask, want_entropy * mask, atol=5e-6, rtol=0)
    assert torch.all(got[mask == 0] == 0) and torch.all(entropy[mask == 0] == 0)


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_gradients_equal_the_full_heads(make):
    tokens = batch()
    mask = tokens.target_mask
    grads = []
    for fn in (lambda m: full_head(m, tokens, 1.0)[0], lambda m: sequence_logprobs(m, tokens)):
        model = make().train()
        (-(fn(model) * mask).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5), name


def test_under_bf16_autocast_the_log_probs_are_float32_and_close():
    model, tokens = gpt2(), batch()
    mask = tokens.target_mask
    with torch.no_grad():
        want, _ = full_head(model, tokens, 1.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = sequence_logprobs(model, tokens)
    assert got.dtype == torch.float32
    assert not torch.equal(got * mask, want * mask)          # the autocast ran in bf16
    assert torch.allclose(got * mask, want * mask, atol=0.05)


class FailsOnRealBatches(torch.nn.Module):
    """Takes logits_to_keep, and fails on any batch larger than the probe's, as a CUDA out-of-memory (or a
    tensor on the wrong device) would: the error must reach the user as it is."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.real_calls = inner, 0

    def forward(self, input_ids, **kwargs):
        if input_ids.numel() > 2:
            self.real_calls += 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner(input_ids=input_ids, **kwargs)


def test_an_error_on_a_real_batch_is_never_taken_for_a_missing_logits_to_keep():
    """It used to be caught as "this model lacks logits_to_keep": the class was switched to the full head for
    good and the batch retried, so an out-of-memory became a larger one and a device error a confusing second."""
    from feedback_rl.modeling import batching
    model = FailsOnRealBatches(gpt2())
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        sequence_logprobs(model, batch())
    assert model.real_calls == 1   # not retried with the full head
    assert batching._KEEPS[FailsOnRealBatches] is True   # the probe (two tokens) found the keyword works


def test_a_forward_without_logits_to_keep_is_found_by_the_probe_once():
    from feedback_rl.modeling import batching
    model = NoKeepArgument(gpt2())
    sequence_logprobs(model, batch())
    assert batching._KEEPS[NoKeepArgument] is False
