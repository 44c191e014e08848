"""CharTokenizer: contract-1 ids, specials, vocab building, HF tokenizers/transformers round trip."""
from collections import Counter

import pytest

from liaotian.pipelines.tokenizer import SPECIALS, CharTokenizer, build_vocab, count_chars, load_tokenizer


def test_built_vocab_puts_specials_first_then_by_count():
    tok = build_vocab(Counter({"天": 5, "今": 2, "a": 2, "x": 1}), min_count=2)
    assert tok.tokens[:7] == list(SPECIALS) and tok.tokens[7:] == ["天", "a", "今"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id, tok.speaker_ids) == (0, 1, 2, 3, 4, (5, 6))
    assert build_vocab(Counter({"a": 3, "b": 2, "c": 1}), max_vocab=9).tokens[7:] == ["a", "b"]
    with pytest.raises(ValueError):
        build_vocab(Counter(), max_vocab=7)


def test_encode_is_one_id_per_character_without_whitespace():
    tok = build_vocab(count_chars(["今天ok"]))
    ids = tok.encode("今 天 OK！x")  # no A-Z in the vocab: uncased, so "OK" -> "ok"; "！" -> "!" unknown
    assert tok.convert_ids_to_tokens(ids) == ["今", "天", "o", "k", "[UNK]", "[UNK]"]
    assert tok.decode(tok.encode("今天ok")) == "今天ok"
    assert tok.decode([tok.cls_id] + tok.encode("今天") + [tok.sep_id], skip_special=False) == "[CLS]今天[SEP]"


def test_user_vocab_keeps_its_ids_and_uncased_vocab_lowercases(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[unused1]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n你\n##b\n")
    tok = CharTokenizer.from_vocab_file(tmp_path / "vocab.txt")
    assert (tok.unk_id, tok.cls_id, tok.sep_id) == (2, 3, 4) and tok.speaker_ids == (9, 10)
    assert tok.encode("A你b") == [6, 7, 2]


def test_saved_files_load_in_hf_tokenizers_and_transformers(tmp_path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = build_vocab(count_chars(["今天天气不错 hello world!", "好"]))
    tok.save(tmp_path)
    text = "今天 天气\t不错，ｈｅｌｌｏ world!\x00好吗"
    hf = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text)
    assert hf.encode("好").ids == [tok.cls_id] + tok.encode("好") + [tok.sep_id]
    fast = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert fast(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert load_tokenizer(tmp_path).tokens == tok.tokens
