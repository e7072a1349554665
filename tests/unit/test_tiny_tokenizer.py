"""The built-in tiny model's tokenizer: one token per character, every character of its alphabet, newlines too."""
from __future__ import annotations

from feedback_rl.modeling.tiny import CHARS, char_tokenizer


def test_every_text_of_its_alphabet_is_one_token_per_character_and_decodes_back():
    tok = char_tokenizer()
    # blank lines (the Hermes tools prompt, a transcript's turns) were one <unk>: "." stops at a newline
    for text in ["a\n\nb", "\n\n\n", " \n \n", "".join(CHARS), "x" + "\n" * 5 + "y"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == [tok.convert_tokens_to_ids(c) for c in text] and tok.unk_token_id not in ids
        assert tok.decode(ids) == text


def test_a_character_outside_its_alphabet_is_unk():
    tok = char_tokenizer()
    assert tok("a\tb", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("a"), tok.unk_token_id,
                                                                    tok.convert_tokens_to_ids("b")]
