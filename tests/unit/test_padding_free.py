"""train.padding_free: the batch's sequences packed end to end give the same log-probs, entropies, value-head
outputs and gradients as the padded batch, in the same [B, T-1] layout; a model whose attention would let
packed sequences see each other is caught by the probe and stays padded."""
import warnings

import pytest
import torch
from transformers import AttentionInterface, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

from feedback_rl.commands.cli import main
from feedback_rl.modeling import packing
from feedback_rl.modeling.batching import pack, sequence_logprobs
from feedback_rl.modeling.roles import scalar_model, sequence_scores, token_values

V = 97
PROMPTS = (9, 5, 12, 7, 3, 10, 6)
COMPLETIONS = (4, 6, 1, 0, 9, 14, 2)   # one empty


def gpt2(attn="sdpa", dropout=0.0):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=V, n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=dropout,
                        embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=1, eos_token_id=2)
    config._attn_implementation = attn
    return GPT2LMHeadModel(config)


def llama(attn="sdpa"):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config._attn_implementation = attn
    return LlamaForCausalLM(config)


def batch():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, V, (n,), generator=g).tolist() for n in PROMPTS]
    completions = [torch.randint(3, V, (n,), generator=g).tolist() for n in COMPLETIONS]
    return pack(prompts, completions, pad_id=0)


def key(model, attn):
    return type(model), type(model.config), attn


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    monkeypatch.setattr(packing, "_SUPPORTED", {})


@pytest.fixture
def calls():
    """What each forward of a model received: (rows, row length, whether an attention mask came)."""
    seen = []

    def spy(model):
        def hook(module, args, kwargs):
            seen.append((*kwargs["input_ids"].shape, kwargs.get("attention_mask") is not None))
        model.register_forward_pre_hook(hook, with_kwargs=True)
        return model
    spy.seen = seen
    # the probe's own forwards: 3 sequences padded to 5, packed into 2 rows of 8 (or 1 of 12); and batching's
    # logits_to_keep probe (1 sequence of 2), once per model class in a process: in whichever test comes first
    spy.scoring = lambda: [c for c in seen if c[:2] not in ((3, 5), (2, 8), (1, 12), (1, 2))]
    return spy


def both(model, tokens, **kw):
    """The padded result, then the padding-free one."""
    padded = sequence_logprobs(model, tokens, **kw)
    with packing.padding_free():
        return padded, sequence_logprobs(model, tokens, **kw)


@pytest.mark.parametrize("lengths", [1, 2, 8])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_packed_logprobs_and_entropies_equal_the_padded_ones(make, attn, lengths, calls, monkeypatch):
    monkeypatch.setattr(packing, "ROW_LENGTHS", lengths)
    model, tokens = calls(make(attn).eval()), batch()
    with torch.no_grad():
        (want, want_entropy), (got, entropy) = both(model, tokens, temperature=0.7, with_entropy=True)
    assert packing._SUPPORTED == {key(model, attn): True}
    assert got.shape == want.shape == tokens.target_mask.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, want_entropy, atol=1e-5, rtol=0)
    assert bool((got[tokens.target_mask == 0] == 0).all())
    # padded: 7 rows of 24 with a mask; packed: the 88 real tokens in rows of at most lengths x 24, no mask
    rows = packing.layout([n + c for n, c in zip(PROMPTS, COMPLETIONS)], lengths * 24)
    width = max(sum(PROMPTS[i] + COMPLETIONS[i] for i in row) for row in rows)
    assert (len(rows), width) == {1: (4, 24), 2: (2, 48), 8: (1, 88)}[lengths]
    # (a model that refuses a boolean logits_to_keep, GPT-2 on transformers 5.19, runs each layout twice)
    assert set(calls.scoring()) == {(7, 24, True), (len(rows), width, False)}
    assert calls.scoring()[-1] == (len(rows), width, False)


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_packed_gradients_equal_the_padded_ones(make):
    model, tokens = make(), batch()
    grads = []
    for on in (False, True):
        model.zero_grad()
        with packing.padding_free(on):
            logps, entropy = sequence_logprobs(model, tokens, with_entropy=True)
        ((logps * tokens.target_mask).sum() + 0.1 * (entropy * tokens.target_mask).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert packing._SUPPORTED == {key(model, "sdpa"): True}
    for name, want in grads[0].items():
        got = grads[1][name]
        assert float((got - want).norm()) <= 1e-5 * float(want.norm()) + 1e-12, name


def test_rows_are_filled_first_fit_decreasing_up_to_the_budget():
    assert packing.layout([5, 0, 9, 3, 4, 7], budget=12) == [[2, 3], [5, 0], [4]]
    assert packing.layout([5, 0, 15, 3], budget=12) == [[2], [0, 3]]     # a longer sequence has a row of its own
    assert packing.layout([5, 0, 9, 3], budget=None) == [[0, 2, 3]]
    assert packing.one_row("flash_attention_2") and packing.one_row("kernels-community/flash-attn")
    assert not packing.one_row("sdpa")


def test_rows_restart_positions_and_map_back_to_the_padded_layout():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [4, 3, 2, 1]])
    rows = packing.pack_rows(ids, (ids > 0).long(), budget=5)
    assert rows.input_ids.tolist() == [[4, 3, 2, 1, 0], [5, 6, 7, 8, 9]]
    assert rows.position_ids.tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert rows.index.tolist() == [[8, 9, 10, 11, -1], [0, 1, 2, 4, 5]]
    back = rows.scatter(rows.input_ids.float().unsqueeze(-1)).squeeze(-1)
    assert back.tolist() == ids.float().tolist()
    keep = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    kept = rows.gather(keep)
    assert rows.input_ids[kept][rows.order(kept)].tolist() == ids[keep].tolist()


def _causal_only(module, query, key, value, attention_mask, **kwargs):
    """An attention kernel that ignores position ids and builds no packed mask (transformers gives a kernel
    it has no mask function for no mask): plain causal over the whole row, as custom modelling code might."""
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_a_model_whose_attention_mixes_packed_sequences_stays_padded(make, calls):
    AttentionInterface.register("causal_only", _causal_only)
    model, tokens = calls(make("causal_only").eval()), batch()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        want, got = both(model, tokens)
    assert packing._SUPPORTED == {key(model, "causal_only"): False}
    assert ["lets packed sequences attend to each other" in str(w.message) for w in caught] == [True]
    assert calls.scoring() == [(7, 24, True), (7, 24, True)]   # both scoring forwards padded, with the mask
    assert torch.equal(got, want)
    # and the fallback mattered: on packed rows this model's sequences would see each other
    rows = packing.pack_rows(tokens.input_ids, tokens.attention_mask, None)
    with torch.no_grad():
        mixed = rows.scatter(model(input_ids=rows.input_ids, position_ids=rows.position_ids, use_cache=False).logits)
        full = model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, use_cache=False).logits
    real = tokens.attention_mask.bool()
    assert (mixed[real] - full[real]).abs().max() > 1e-3


def _varlen(module, query, key, value, attention_mask, position_ids=None, **kwargs):
    """A stand-in for flash-attn's varlen path as transformers drives it (flash_attention_2): one row without
    a mask is split where its position ids restart; several rows without a mask are plain causal."""
    if attention_mask is None and query.shape[0] == 1 and position_ids is not None:
        starts = (position_ids[0] == 0).nonzero().squeeze(-1).tolist() + [query.shape[2]]
        parts = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, **kwargs)[0]
                 for a, b in zip(starts, starts[1:])]
        return torch.cat(parts, dim=1), None
    if attention_mask is not None:  # flash's 2D padding mask, as a causal 4D one
        T = attention_mask.shape[-1]
        causal = torch.ones(T, T, dtype=torch.bool, device=query.device).tril()
        attention_mask = causal & attention_mask.bool()[:, None, None, :]
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def test_a_flash_style_varlen_kernel_gets_the_whole_batch_in_one_row(calls, monkeypatch):
    # a name with "flash" in it would send transformers looking for the real kernel: packing is told instead
    AttentionInterface.register("varlen_standin", _varlen)
    ALL_MASK_ATTENTION_FUNCTIONS.register("varlen_standin", flash_attention_mask)
    monkeypatch.setattr(packing, "one_row", lambda impl: impl == "varlen_standin")
    model, tokens = calls(llama("varlen_standin").eval()), batch()
    with torch.no_grad():
        (want, want_entropy), (got, entropy) = both(model, tokens, with_entropy=True)
    assert packing._SUPPORTED == {key(model, "varlen_standin"): True}
    assert calls.scoring() == [(7, 24, True), (1, 88, False)]   # one row of every real token
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, want_entropy, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_value_heads_read_the_same_values_packed(make):
    critic, tokens = scalar_model(make(), pad_token_id=0), batch()
    real = tokens.attention_mask.bool()
    values, scores = token_values(critic, tokens), sequence_scores(critic, tokens)
    with packing.padding_free():
        packed_values, packed_scores = token_values(critic, tokens), sequence_scores(critic, tokens)
    assert packing._SUPPORTED == {key(critic, "sdpa"): True}
    torch.testing.assert_close(packed_values[real], values[real], atol=1e-5, rtol=0)
    assert bool((packed_values[~real] == 0).all())
    torch.testing.assert_close(packed_scores, scores, atol=1e-5, rtol=0)


def test_the_probe_runs_without_dropout_and_leaves_each_module_in_its_mode():
    model, tokens = gpt2(dropout=0.5).train(), batch()
    model.transformer.h[0].eval()
    modes = [m.training for m in model.modules()]
    with packing.padding_free():
        sequence_logprobs(model, tokens)
    assert packing._SUPPORTED == {key(model, "sdpa"): True}   # dropout would have failed it
    assert [m.training for m in model.modules()] == modes


def test_without_padding_or_outside_the_block_the_forward_is_padded(calls):
    model, tokens = calls(gpt2().eval()), batch()
    sequence_logprobs(model, tokens)
    full = pack([[5, 6, 7]] * 2, [[8, 9]] * 2, pad_id=0)
    with packing.padding_free():
        sequence_logprobs(model, full)
    assert calls.scoring() == [(7, 24, True), (2, 5, True)]


def test_a_misspelled_padding_free_key_is_one_line_with_a_suggestion(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nstages:\n  - name: sft\n    optimizer: sft\n    data: {train: {generator: addition}}\n"
                    "    train: {steps: 2, padding_fre: true}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "t.yaml:6: stages[0].train.padding_fre: unknown key (did you mean 'padding_free'?)" in err, err


def test_plan_says_which_stages_run_padding_free(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    stage = ("  - name: {name}\n    optimizer: sft\n    data: {{train: {{generator: addition}}}}\n"
             "    train: {{steps: 2, padding_free: {on}}}\n")
    path.write_text("name: t\nmodel: {tiny: {n_layer: 1, n_embd: 16, n_head: 2}}\nstages:\n"
                    + stage.format(name="packed", on="true") + stage.format(name="padded", on="false"))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [i for i, line in enumerate(out) if "train.padding_free: the forwards run on packed rows" in line]
    assert len(notes) == 1 and out[notes[0] - 1].startswith("== stage 'packed'")
