"""The vLLM backend without a GPU: it registers, says what it needs, and pushes the right weights."""
import pytest
import torch

from feedback_rl import PluginContext, SamplingParams, UserError
from frl_plugins.backends.vllm import NEEDS, VLLMBackend, hf_weights


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_the_vllm_backend_registers_without_vllm(registry):
    assert registry.get("backends", "vllm") is VLLMBackend


def test_without_vllm_or_cuda_the_backend_says_what_it_needs(tiny_model_dir):
    try:
        import vllm  # noqa: F401
        if torch.cuda.is_available():
            pytest.skip("vllm and CUDA are both here")
    except ImportError:
        pass
    model, tok = load(tiny_model_dir)
    backend = VLLMBackend(VLLMBackend.Options(), PluginContext(name="vllm", run_dir="."))
    with pytest.raises(UserError) as e:
        backend.generate(model, tok, [tok("12+34=")["input_ids"]], SamplingParams(max_new_tokens=2))
    assert str(e.value) == NEEDS


def test_weights_pushed_from_a_lora_policy_are_its_merged_plain_weights(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from feedback_rl.lora import merged_state_dict
    model, _ = load(tiny_model_dir)
    plain_names = {n for n, _ in model.named_parameters()}
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)   # a non-zero adapter, so merging changes the weights
    before = {n: p.clone() for n, p in lora.named_parameters()}
    expected = merged_state_dict(lora.get_base_model())
    got = dict(hf_weights(lora))
    assert set(got) == plain_names
    for name, w in got.items():
        assert torch.allclose(w, expected[name], atol=1e-6), name
    assert not torch.allclose(got["transformer.h.0.attn.c_attn.weight"],
                              before["base_model.model.transformer.h.0.attn.c_attn.base_layer.weight"])
    # the policy itself is untouched, bit for bit
    assert all(torch.equal(p, before[n]) for n, p in lora.named_parameters())


