"""frl plan: parameter counts and per-stage bytes against numbers computed by hand."""
from __future__ import annotations

from pathlib import Path

import pytest

from feedback_rl.commands import plan
from feedback_rl.config import recipe as recipes
from feedback_rl.commands.cli import main
from feedback_rl.config.recipe import ModelSpec

V, H, L, POS = 100, 16, 2, 32   # the tiny tokenizer has 4 specials + 96 printable characters


def hand_params() -> int:
    per_layer = (2 * H) + (H * 3 * H + 3 * H) + (H * H + H) + (2 * H) + (H * 4 * H + 4 * H) + (4 * H * H + H)
    return V * H + POS * H + L * per_layer + 2 * H  # token + position embeddings, blocks, ln_f; lm_head tied


def make(optimizer: dict, tmp_path: Path, **model) -> recipes.Recipe:
    data = {"name": "p", "model": {"tiny": {"n_layer": L, "n_embd": H, "n_head": 2, "n_positions": POS}, **model},
            "stages": [{"name": "s", "optimizer": optimizer,
                        "data": {"train": {"generator": "addition", "size": 20}},
                        "rewards": {"sources": [{"name": "em", "type": "rule", "check": "exact"}]},
                        "rollout": {"num_generations": 4, "max_new_tokens": 6},
                        "train": {"batch_size": 3}}]}
    return recipes.validate(data, tmp_path / "r.yaml")


def stage(rec, **kw) -> dict[str, plan.Row]:
    _, plans = plan.plan_recipe(rec, reg(), prompt_tokens=10, **kw)
    return {r.role: r for r in plans[0].rows}


def reg():
    from feedback_rl.plugins import default
    return default()[1]


def test_parameter_count_matches_the_config_by_hand(tmp_path):
    rec = make({"type": "grpo", "beta": 0.0}, tmp_path)
    shape = plan.model_shape(plan.read_config(rec))
    assert shape.params == hand_params() == (100 + 32) * 16 + 2 * (12 * 16 * 16 + 13 * 16) + 2 * 16
    assert shape.scalar_params == hand_params() + H   # trunk + a bias-free one-output score head
    assert (shape.hidden, shape.layers, shape.vocab, shape.context) == (H, L, V, POS)


def test_grpo_stage_bytes_by_hand(tmp_path):
    rows = stage(make({"type": "grpo", "beta": 0.0}, tmp_path))
    P, B, T = hand_params(), 3 * 4, 10 + 6      # batch_size x num_generations; prompt + max_new_tokens
    assert "reference" not in rows                # beta 0: no reference is built
    assert rows["policy"].bytes == P * 4
    assert rows["gradients"].bytes == P * 4
    assert rows["AdamW states"].bytes == 2 * P * 4
    assert rows["activations"].bytes == B * T * H * L * 30 * 4
    K = 6                                         # the LM head runs on the completion positions only
    assert rows["logits"].bytes == B * K * V * (4 + 8)


def test_overlap_adds_the_workers_copy_of_the_weights_unless_the_backend_keeps_its_own(tmp_path):
    rec = make({"type": "grpo", "beta": 0.0}, tmp_path)
    assert "rollout copy" not in stage(rec)
    rec.stages[0].rollout.overlap = 1
    assert stage(rec)["rollout copy"].bytes == hand_params() * 4
    rec.stages[0].rollout.backend = "vllm"     # vLLM generates from weights of its own
    assert "rollout copy" not in stage(rec)


def test_grpo_with_beta_has_a_reference(tmp_path):
    rows = stage(make({"type": "grpo", "beta": 0.1}, tmp_path))
    assert rows["reference"].bytes == hand_params() * 4
    assert rows["gradients"].params == hand_params()   # the reference does not train


def test_ppo_adds_a_critic_that_trains(tmp_path):
    rows = stage(make({"type": "ppo"}, tmp_path))
    Q = hand_params() + H
    assert rows["critic"].bytes == Q * 4
    assert rows["gradients"].params == hand_params() + Q
    shared = stage(make({"type": "ppo", "critic": "shared"}, tmp_path))
    assert shared["critic:shared"].params == H + 1     # a value head on the policy's trunk


def test_bfloat16_halves_weights_and_states(tmp_path):
    rows = stage(make({"type": "grpo", "beta": 0.0}, tmp_path, dtype="bfloat16"))
    assert rows["policy"].bytes == hand_params() * 2
    assert rows["AdamW states"].bytes == 2 * hand_params() * 2   # torch AdamW keeps states like the param


def test_lora_trains_r_times_in_plus_out_per_targeted_matrix(tmp_path):
    shape = plan.model_shape(plan.read_config(make({"type": "grpo"}, tmp_path)))
    r = 4
    # GPT-2 per layer: c_attn h->3h, attn.c_proj h->h, mlp.c_fc h->4h, mlp.c_proj 4h->h
    assert plan.lora_params({"r": r, "target_modules": ["c_attn"]}, shape.matrices) == L * r * (H + 3 * H)
    everything = L * r * ((H + 3 * H) + (H + H) + (H + 4 * H) + (4 * H + H))
    assert plan.lora_params({"r": r, "target_modules": None}, shape.matrices) == everything
    assert plan.lora_params({"r": r, "target_modules": "all-linear"}, shape.matrices) == everything


@pytest.mark.skipif("lora" not in ModelSpec.model_fields, reason="model.lora is not in the recipe schema yet")
def test_lora_reference_is_free_and_only_the_adapter_trains(tmp_path):
    rows = stage(make({"type": "grpo", "beta": 0.1}, tmp_path, lora={"r": 4, "target_modules": ["c_attn"]}))
    adapter = L * 4 * (H + 3 * H)
    assert rows["reference"].bytes == 0
    assert rows["lora adapter"].bytes == adapter * 4
    assert rows["gradients"].params == adapter and rows["gradients"].bytes == adapter * 4


def test_zero_shards_states_then_weights(tmp_path):
    rec = make({"type": "grpo", "beta": 0.1}, tmp_path)
    P = hand_params()
    z2 = stage(rec, num_processes=2, zero=2)
    assert z2["policy"].bytes == P * 4 and z2["reference"].bytes == P * 4
    assert z2["gradients"].bytes == P * 4 // 2 and z2["AdamW states"].bytes == 2 * P * 4 // 2
    assert z2["activations"].bytes == 6 * 16 * H * L * 30 * 4   # 12 sequences over 2 processes
    z3 = stage(rec, num_processes=2, zero=3)
    assert z3["policy"].bytes == z3["reference"].bytes == P * 4 // 2


def write(tmp_path: Path) -> str:
    p = tmp_path / "r.yaml"
    p.write_text("name: p\nstages:\n  - name: s\n    optimizer: {type: grpo, beta: 0.0}\n"
                 "    data: {train: {generator: addition, size: 20}}\n"
                 "    rewards: {sources: [{name: em, type: rule, check: exact}]}\n")
    return str(p)


def test_estimate_above_the_memory_found_warns_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plan, "available_memory", lambda: (1024, "fake budget"))
    assert main(["plan", write(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: the peak estimate" in err and "exceeds the 1.00 KiB available" in err
    assert main(["plan", write(tmp_path), "--strict"]) == 1


def test_estimate_within_the_memory_found_does_not_warn(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plan, "available_memory", lambda: (1 << 50, "fake budget"))
    assert main(["plan", write(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and "available: 1024.00 TiB (fake budget)" in out.out


def test_bad_recipe_is_one_line_and_exit_2(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text("name: p\nstages:\n  - name: s\n    optimizer: {type: grpo, betta: 0.1}\n")
    assert main(["plan", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "betta" in err
