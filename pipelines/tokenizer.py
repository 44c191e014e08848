"""CharTokenizer (ARCHITECTURE.md contract 1): one token per character, a table lookup. No Ray here.

Every non-whitespace character is one token (CJK as Chinese BERT does, and ASCII letters/digits
too); whitespace is never a token. Encoding is `table[codepoint]` on a NumPy array of the text's
code points, so a batch of a million characters costs one vectorised lookup. Saved as `vocab.txt`
(one token per line, line number = id) and `tokenizer.json` (HF `tokenizers`: WordLevel over the
same vocabulary, with normalisation and per-character splitting equal to `encode`).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from liaotian.pipelines.cleaning import CONTROL, FULLWIDTH_CHARS, FULLWIDTH_SHIFT, WHITESPACE_CHARS, clean_text

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[SPK1]", "[SPK2]")
CDIAL_SPEAKERS = ("[speaker1]", "[speaker2]")
SKIP = -1  # table value of whitespace: dropped, never a token
CLS_MARK, SEP_MARK = "\x02", "\x03"  # control chars (cleaning removes them from text) -> [CLS]/[SEP] in encode_marked
_MAX_CP = 0x110000


class CharTokenizer:
    """Character vocabulary with contract-1 attributes; build with `build_vocab` or load a vocab.txt."""

    def __init__(self, tokens: list[str]):
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, c in Counter(tokens).items() if c > 1)
            raise ValueError(f"vocabulary lists {dup!r} twice")
        speakers = ("[SPK1]", "[SPK2]")
        if not any(s in tokens for s in speakers) and all(s in tokens for s in CDIAL_SPEAKERS):
            speakers = CDIAL_SPEAKERS  # CDial-GPT's vocabulary names its speaker tokens so
        missing = [s for s in SPECIALS[:5] + speakers if s not in tokens]
        # A user vocab (e.g. BERT's) keeps its ids; specials it lacks are appended after it.
        self.tokens = list(tokens) + missing
        self.token_to_id = {t: i for i, t in enumerate(self.tokens)}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            self.token_to_id[s] for s in SPECIALS[:5])
        self.speaker_ids = (self.token_to_id[speakers[0]], self.token_to_id[speakers[1]])
        self.file_size = len(tokens)  # ids at or past it are specials this tokenizer appended
        self.special_ids = {self.token_to_id[s] for s in SPECIALS[:5] + speakers}
        # An uncased vocabulary (no A-Z at all, as bert-base-chinese) maps upper case to lower.
        self.lowercase = not any(len(t) == 1 and "A" <= t <= "Z" for t in self.tokens)
        self._table = None
        self._marked = None

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    # ------------------------------------------------------------------ lookup tables
    @property
    def table(self) -> np.ndarray:
        """int32[0x110000]: code point -> id (SKIP for whitespace, unk_id for unknown)."""
        if self._table is None:
            table = np.full(_MAX_CP, self.unk_id, dtype=np.int32)
            for tok, i in self.token_to_id.items():
                if len(tok) == 1:
                    table[ord(tok)] = i
            if self.lowercase:
                for c in range(ord("A"), ord("Z") + 1):
                    table[c] = table[c + 32]
            for c in _WHITESPACE_CPS:
                table[c] = SKIP
            self._table = table
        return self._table

    @property
    def marked_table(self) -> np.ndarray:
        if self._marked is None:
            self._marked = self.table.copy()
            self._marked[ord(CLS_MARK)], self._marked[ord(SEP_MARK)] = self.cls_id, self.sep_id
        return self._marked

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        """Ids of `text` after the cleaning stage's text rules; no specials added."""
        ids = self.table[_codepoints(clean_text(text))]
        return ids[ids != SKIP].tolist()

    def encode_marked(self, text: str) -> np.ndarray:
        """Ids of already-cleaned text where CLS_MARK/SEP_MARK stand for [CLS]/[SEP] (batch path)."""
        ids = self.marked_table[_codepoints(text)]
        return ids[ids != SKIP]

    def decode(self, ids, skip_special: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if skip_special and i in self.special_ids:
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else "[UNK]")
        return "".join(out)

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    # ------------------------------------------------------------------ files
    @classmethod
    def from_vocab_file(cls, path: str | Path) -> "CharTokenizer":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: vocab file not found")
        # split("\n"), not splitlines(): U+2028 and friends are tokens in some vocabularies.
        lines = p.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        tokens = [t.rstrip("\r") for t in lines]
        if any(t == "" for t in tokens):
            raise ValueError(f"{p}: line {tokens.index('') + 1} is empty")
        return cls(tokens)

    @classmethod
    def from_dir(cls, directory: str | Path) -> "CharTokenizer":
        return cls.from_vocab_file(Path(directory) / "vocab.txt")

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "vocab.txt").write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")
        self.to_hf().save(str(d / "tokenizer.json"))

    def to_hf(self, vocab_size: int | None = None):
        """The same tokenizer as an HF `tokenizers.Tokenizer` (WordLevel, one token per character);
        `vocab_size`: only ids below it (a model without rows for the specials appended here)."""
        from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

        limit = self.vocab_size if vocab_size is None else vocab_size
        vocab = {t: i for t, i in self.token_to_id.items() if i < limit}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
        steps = [normalizers.Replace(Regex(_onig_class(CONTROL)), "")]
        steps += [normalizers.Replace(chr(c), chr(c - FULLWIDTH_SHIFT)) for c in FULLWIDTH_CHARS]
        if self.lowercase:
            steps.append(normalizers.Lowercase())
        tok.normalizer = normalizers.Sequence(steps)
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex("."), behavior="isolated"),
        ])
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)])
        tok.decoder = decoders.Fuse()
        tok.add_special_tokens([self.tokens[i] for i in sorted(self.special_ids) if i < limit])
        return tok

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def load_tokenizer(directory: str | Path) -> CharTokenizer:
    """The tokenizer of a preprocessed data dir or a model dir (reads its vocab.txt)."""
    return CharTokenizer.from_dir(directory)


def build_vocab(counts: Counter | dict[str, int], min_count: int = 1, max_vocab: int | None = None) -> CharTokenizer:
    """Specials first, then characters by count (ties by code point, so the order is reproducible)."""
    if max_vocab is not None and max_vocab <= len(SPECIALS):
        raise ValueError(f"max_vocab={max_vocab} leaves no room beside the {len(SPECIALS)} special tokens")
    chars = [c for c, n in counts.items() if n >= min_count and len(c) == 1 and not c.isspace()
             and c not in (CLS_MARK, SEP_MARK) and c not in SPECIALS]
    chars.sort(key=lambda c: (-counts[c], ord(c)))
    if max_vocab is not None:
        chars = chars[: max_vocab - len(SPECIALS)]
    return CharTokenizer(list(SPECIALS) + chars)


def count_chars(texts) -> Counter:
    """Character counts of cleaned texts, whitespace excluded (vectorised: one bincount)."""
    counts = codepoint_counts("".join(texts))
    return Counter({chr(int(c)): int(counts[c]) for c in np.flatnonzero(counts)})


def codepoint_counts(text: str) -> np.ndarray:
    """Sparse-friendly counts per code point of `text` (whitespace zeroed), length <= 0x110000."""
    cps = _codepoints(text)
    counts = np.bincount(cps, minlength=0) if len(cps) else np.zeros(0, dtype=np.int64)
    for c in _WHITESPACE_CPS:
        if c < len(counts):
            counts[c] = 0
    return counts


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _onig_class(python_class: str) -> str:
    """A Python regex character class with literal characters -> Oniguruma \\x{...} escapes."""
    return "".join(f"\\x{{{ord(c):x}}}" if not (c.isascii() and c.isprintable()) else c for c in python_class)


_WHITESPACE_CPS = list(WHITESPACE_CHARS)
