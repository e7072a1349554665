"""The vLLM backend without vLLM: it registers, says in one line what it needs, and pushes the
right weights (tests/vllm_tier runs it with vLLM)."""
import importlib.util
import subprocess
import sys
import textwrap

import pytest
import torch

from feedback_rl import PluginContext, UserError
from frl_plugins.backends.vllm import NEEDS, VLLMBackend, hf_weights

no_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_the_vllm_backend_registers_without_vllm(registry):
    assert registry.get("backends", "vllm") is VLLMBackend


@no_vllm
def test_without_vllm_the_backend_says_what_it_needs():
    with pytest.raises(UserError) as e:
        VLLMBackend(VLLMBackend.Options(), PluginContext(name="vllm", run_dir="."))
    assert str(e.value) == NEEDS


@no_vllm
def test_frl_train_on_the_vllm_backend_without_vllm_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "r.yaml").write_text(textwrap.dedent(f"""\
        name: no-vllm
        output_dir: {tmp_path / 'runs'}
        stages:
          - name: grpo
            optimizer: {{type: grpo}}
            data: {{train: {{generator: addition}}}}
            rewards: {{sources: [{{name: digit, type: rule, check: regex, pattern: "[0-9]", mode: search}}]}}
            rollout: {{backend: vllm, num_generations: 2, max_new_tokens: 2}}
            train: {{steps: 1, batch_size: 2}}
        """))
    out = subprocess.run([sys.executable, "-m", "feedback_rl.commands.cli", "train", "r.yaml", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].endswith(NEEDS)


def test_weights_pushed_from_a_lora_policy_are_its_merged_plain_weights(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from feedback_rl.modeling.lora import merged_state_dict
    model, _ = load(tiny_model_dir)
    plain_names = set(model.state_dict())     # tied weights too: vLLM restores every layer it reloads
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p)   # a non-zero adapter, so merging changes the weights
    before = {n: p.clone() for n, p in lora.named_parameters()}
    expected = merged_state_dict(lora.get_base_model())
    got = dict(hf_weights(lora))
    assert set(got) == plain_names and "lm_head.weight" in got
    for name, w in got.items():
        assert torch.allclose(w, expected[name], atol=1e-6), name
    assert not torch.allclose(got["transformer.h.0.attn.c_attn.weight"],
                              before["base_model.model.transformer.h.0.attn.c_attn.base_layer.weight"])
    # the policy itself is untouched, bit for bit
    assert all(torch.equal(p, before[n]) for n, p in lora.named_parameters())
