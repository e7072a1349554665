"""The model the project builds itself: a small GPT-2 with a character-level tokenizer.

No hub is needed: ``model.path: builtin:tiny-gpt2`` in a recipe builds it from a seed and
saves it in HF format, so ``AutoModelForCausalLM.from_pretrained`` loads it like any other.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHARS = list(string.digits + string.ascii_letters + string.punctuation + " \n")

# The tiny model's chat template, made of its own characters: "<|user|>\nhi\n<|assistant|>\nhello<eos>\n".
# An assistant turn ends with EOS, so a model trained on conversations learns to stop where generation stops.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


def char_tokenizer():
    """A fast tokenizer with one token per printable ASCII character."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # every character its own piece, newlines too ("." stops at a newline: a run of them was one <unk>)
    core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                  eos_token="<eos>", unk_token="<unk>")
    tok.padding_side = "left"
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_gpt2(out_dir: str | Path, seed: int = 0, n_layer: int = 4, n_embd: int = 128,
                    n_head: int = 4, n_positions: int = 64) -> Path:
    """Build the tiny GPT-2 and its tokenizer in ``out_dir`` (HF format). Returns the folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    tok = char_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out
