"""`liaotian import hf` / `export hf` against transformers itself (random-init models; no download).

CDial-GPT (OpenAIGPTLMHeadModel, post-LN) and CDial-GPT2 (GPT2LMHeadModel, pre-LN) checkpoints are
made by transformers, imported, and compared: logits on CDial-GPT-formatted input, greedy replies
against a plain loop that follows CDial-GPT's infer.py, export -> from_pretrained, and round trips.
"""
from __future__ import annotations

import json
import shutil
from itertools import chain
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from liaotian.models.checkpoint import load_pretrained, save_pretrained  # noqa: E402
from liaotian.models.dialog_lm import DialogLM, DialogLMConfig  # noqa: E402
from liaotian.models.generate import DecodingConfig, Prompt, generate  # noqa: E402
from liaotian.hf import export_hf, import_hf  # noqa: E402
from liaotian.models.hf_export import ExportRefused  # noqa: E402
from liaotian.models.hf_import import ImportRefused  # noqa: E402
from liaotian.models.fast_decode import FastDecoder  # noqa: E402
from liaotian.pipelines.dialogue import build_context, reply_token_rules, to_input_format  # noqa: E402
from liaotian.pipelines.tokenizer import CharTokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdial_gpt"
CHARS = "你好我是谁今天气很不错吃饭了吗喜欢电影音乐开心难过哈嗯啊呢吧的一在有人这中大为上个，。？！"
HISTORIES = [["你好"], ["今天天气很不错", "是啊，我很开心"], ["你吃饭了吗", "吃了", "吃的什么？"], ["我喜欢音乐"]]


def cdial_vocab() -> list[str]:
    """CDial-GPT's layout: [CLS] [PAD] [SEP] [UNK] first, the speaker tokens last."""
    return ["[CLS]", "[PAD]", "[SEP]", "[UNK]"] + list(dict.fromkeys(CHARS)) + ["[speaker1]", "[speaker2]"]


def hf_checkpoint(root: Path, arch: str, vocab: list[str], n_layer=2, n_embd=64, n_head=4, n_positions=64,
                  std=0.02, seed=0, bin_file=False) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    common = dict(vocab_size=len(vocab), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                  initializer_range=std)
    if arch == "openai-gpt":
        model = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(afn="gelu", **common))
    else:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**common))
    model.eval()
    src = root / f"hf_{arch}"
    model.save_pretrained(src)
    if bin_file:  # the older format CDial-GPT's checkpoints ship in
        (src / "model.safetensors").unlink()
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, src / "pytorch_model.bin")
    (src / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return src, model


def token_types(model: DialogLM, segments: list[int]) -> list[int]:
    return [model.config.segment_tokens[s] for s in segments]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("arch", ["openai-gpt", "gpt2"])
def test_import_logits_equal_transformers(arch, tmp_path):
    src, hf = hf_checkpoint(tmp_path, arch, cdial_vocab())
    model = load_pretrained(import_hf(src, tmp_path / "imported"))
    tok = CharTokenizer.from_dir(tmp_path / "imported")
    assert model.config.input_format == "cdial_gpt" and model.config.norm_position == ("post" if arch == "openai-gpt" else "pre")
    for history in HISTORIES:
        ids, seg, _ = build_context(history, tok, 64, input_format="cdial_gpt")
        assert ids[0] == tok.cls_id and ids[1] == tok.speaker_ids[0] and ids[-1] in tok.speaker_ids
        x, tt = torch.tensor([ids]), torch.tensor([token_types(model, seg)])
        with torch.no_grad():
            ours = model(x, segment_ids=torch.tensor([seg])).logits
            theirs = hf(x, token_type_ids=tt).logits
        assert rel_err(ours, theirs) < 1e-4
        state = model.init_state(1)  # the decoding path (KV cache, one-token steps) agrees too
        first, state = model.step(x[:, :-1], torch.tensor([seg[:-1]]), state)
        last, state = model.step(x[:, -1:], torch.tensor([seg[-1:]]), state)
        assert rel_err(torch.cat([first, last], 1), theirs) < 1e-4


def infer_py_greedy(hf, tok: CharTokenizer, history: list[list[int]], max_length: int) -> list[int]:
    """CDial-GPT's infer.py (`sample_sequence` with --no_sample, min_length 0): rebuild the whole input
    with `build_input_from_segments` every step, take the top token, stop at any special token."""
    bos, eos, speaker1, speaker2 = tok.cls_id, tok.sep_id, *tok.speaker_ids
    special_tokens_ids = [bos, eos, speaker1, speaker2]
    current_output: list[int] = []
    for _ in range(max_length):
        sequence = [[bos]] + history + [current_output]
        sequence = [sequence[0]] + [[speaker2 if i % 2 else speaker1] + s for i, s in enumerate(sequence[1:])]
        input_ids = list(chain(*sequence))
        token_type_ids = [bos] + [speaker2 if i % 2 else speaker1 for i, s in enumerate(sequence[1:]) for _ in s]
        with torch.no_grad():
            logits = hf(torch.tensor([input_ids]), token_type_ids=torch.tensor([token_type_ids])).logits[0, -1]
        prev = int(torch.topk(torch.softmax(logits, -1), 1)[1])
        if prev in special_tokens_ids:
            break
        current_output.append(prev)
    return current_output


@pytest.mark.parametrize("arch", ["openai-gpt", "gpt2"])
def test_greedy_replies_match_cdial_infer_loop(arch, tmp_path):
    src, hf = hf_checkpoint(tmp_path, arch, cdial_vocab())
    tok = CharTokenizer(cdial_vocab())
    # Random weights mostly repeat their last input token, here the speaker token (an end token):
    # shrink the inputs that are special so replies start, and make [SEP] follow one character.
    wte = hf.get_input_embeddings().weight
    with torch.no_grad():
        wte[[tok.cls_id, *tok.speaker_ids]] *= 0.1
        wte[tok.sep_id] = 1.1 * wte[tok.encode("呢")[0]]
    hf.save_pretrained(src)
    model = load_pretrained(import_hf(src, tmp_path / "imported"))
    decoder = FastDecoder(model, "fp32")  # what chat and serve decode through
    rules = reply_token_rules(tok, model)
    # infer.py bans nothing; liaotian chat also bans [PAD]/[UNK] (rules["banned_ids"])
    cfg = DecodingConfig(strategy="greedy", max_new_tokens=12, end_ids=rules["end_ids"])
    finishes = []
    for history in HISTORIES * 2:
        history = history + ["开心"] if len(finishes) >= len(HISTORIES) else history
        ids, seg, reply_segment = build_context(history, tok, 64, reserve=12, input_format="cdial_gpt")
        (ours,), = generate(decoder, [Prompt(ids, seg, reply_segment)], cfg, tok.sep_id)
        assert ours.token_ids == infer_py_greedy(hf, tok, [tok.encode(u) for u in history], 12)
        finishes.append((ours.finish_reason, len(ours.token_ids)))
    assert {f for f, _ in finishes} == {"stop", "length"}, finishes  # both endings exercised
    assert len({n for _, n in finishes}) > 1
    assert sum(decoder.fallbacks.values()) > 0  # imported layouts decode on the plain path, counted


@pytest.mark.parametrize("arch", ["openai-gpt", "gpt2"])
def test_export_round_trip_of_imported(arch, tmp_path):
    src, hf = hf_checkpoint(tmp_path, arch, cdial_vocab())
    imported = import_hf(src, tmp_path / "imported")
    out = export_hf(imported, tmp_path / "exported")
    again = load_pretrained(import_hf(out, tmp_path / "again"))
    model = load_pretrained(imported)
    assert again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(loaded).__name__ == type(hf).__name__
    tok = CharTokenizer.from_dir(imported)
    ids, seg, _ = build_context(HISTORIES[2], tok, 64, input_format="cdial_gpt")
    with torch.no_grad():
        a = loaded(torch.tensor([ids]), token_type_ids=torch.tensor([token_types(model, seg)])).logits
        b = hf(torch.tensor([ids]), token_type_ids=torch.tensor([token_types(model, seg)])).logits
    assert rel_err(a, b) < 1e-5


@pytest.fixture
def native_model_dir(tmp_path):
    """liaotian's own DialogLM (a segment table, liaotian's input format) with a built vocabulary."""
    from liaotian.pipelines.tokenizer import build_vocab

    from collections import Counter

    tok = build_vocab(Counter(CHARS))
    tok.save(tmp_path / "tok")
    torch.manual_seed(1)
    model = DialogLM(DialogLMConfig(vocab_size=tok.vocab_size, max_len=64, n_layer=2, n_head=2, d_model=64, dropout=0.0,
                                    pad_id=tok.pad_id, eos_id=tok.sep_id))
    with torch.no_grad():
        model.token_embedding.weight.mul_(15)  # random weights whose greedy replies vary ...
        model.token_embedding.weight[sorted(tok.special_ids)] *= 0.05  # ... and do not just repeat [SEP]
    save_pretrained(model, tmp_path / "native", tokenizer_dir=tmp_path / "tok")
    return tmp_path / "native"


def hf_greedy_reply(model_dir: str, history: list[str], max_new_tokens: int) -> str:
    """The README's recipe: the same reply from transformers as from `liaotian chat` (greedy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from liaotian.pipelines.dialogue import build_context
    from liaotian.pipelines.tokenizer import CharTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    hf_tok = AutoTokenizer.from_pretrained(model_dir)
    meta = model.config.liaotian  # input format and the token ids that carry segments
    tok = CharTokenizer.from_dir(model_dir)
    ids, segments, reply_segment = build_context(history, tok, model.config.n_positions, reserve=max_new_tokens,
                                                 input_format=meta["input_format"])
    types = [meta["segment_token_ids"][s] for s in segments]
    ends = {tok.sep_id} | ({tok.cls_id, *tok.speaker_ids} if meta["input_format"] == "cdial_gpt" else set())
    banned = [i for i in tok.special_ids if i not in ends and i < model.config.vocab_size]
    reply = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(torch.tensor([ids + reply]), token_type_ids=torch.tensor([types])).logits[0, -1]
        logits[banned] = float("-inf")
        token = int(logits.argmax())
        if token in ends:
            break
        reply.append(token)
        types.append(meta["segment_token_ids"][reply_segment])
    return hf_tok.decode(reply, skip_special_tokens=True).replace(" ", "")


def test_export_native_model(native_model_dir, tmp_path):
    from liaotian.chat import ChatSession

    out = export_hf(native_model_dir, tmp_path / "exported")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["tie_word_embeddings"] is False  # segments ride on [SPK1]/[SPK2] rows
    model = load_pretrained(native_model_dir)
    tok = CharTokenizer.from_dir(native_model_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tok("今天天气很不错 ok", add_special_tokens=False).input_ids == tok.encode("今天天气很不错 ok")
    ids, seg, _ = build_context(HISTORIES[1], tok, 64)
    with torch.no_grad():
        ours = model(torch.tensor([ids]), segment_ids=torch.tensor([seg])).logits
        theirs = hf(torch.tensor([ids]), token_type_ids=torch.tensor([[tok.speaker_ids[s] for s in seg]])).logits
    assert rel_err(ours, theirs) < 1e-4
    again = load_pretrained(import_hf(out, tmp_path / "again"))  # import(export(m)) = m
    assert again.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    decoding = DecodingConfig(strategy="greedy", max_new_tokens=10, **reply_token_rules(tok, model))
    replies = set()
    for history in HISTORIES:
        session = ChatSession(model, tok, decoding)
        (gen,), = generate(model, [session.prompt(history)], decoding, tok.sep_id)
        ours = tok.decode(gen.token_ids)
        assert hf_greedy_reply(str(out), history, 10) == ours
        replies.add(ours)
    assert len(replies) > 1  # the replies differ, so the comparison sees the context


def test_export_refuses_what_gpt2_lacks(tmp_path):
    tok = CharTokenizer(cdial_vocab())
    tok.save(tmp_path / "tok")
    for option in (dict(attention="linear"), dict(self_terminating=True)):
        model = DialogLM(DialogLMConfig(vocab_size=tok.vocab_size, max_len=32, n_layer=1, n_head=2, d_model=32, **option))
        save_pretrained(model, tmp_path / "m", tokenizer_dir=tmp_path / "tok")
        with pytest.raises(ExportRefused, match="no equivalent"):
            export_hf(tmp_path / "m", tmp_path / "out")


def test_pytorch_model_bin(tmp_path):
    """A pickle is read with weights_only=True and must hold tensors only."""
    src, hf = hf_checkpoint(tmp_path, "openai-gpt", cdial_vocab(), bin_file=True)
    model = load_pretrained(import_hf(src, tmp_path / "ok"))
    assert torch.equal(model.token_embedding.weight, hf.transformer.tokens_embed.weight)
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    torch.save({**state, "step": 3}, src / "pytorch_model.bin")
    with pytest.raises(ImportRefused, match="not tensors"):
        import_hf(src, tmp_path / "no1")
    torch.save([state], src / "pytorch_model.bin")
    with pytest.raises(ImportRefused, match="not a dict of tensors"):
        import_hf(src, tmp_path / "no2")
    torch.save({"x": torch.zeros(1), "obj": Path("/")}, src / "pytorch_model.bin")  # an arbitrary object: weights_only refuses
    with pytest.raises(ImportRefused, match="weights_only=True"):
        import_hf(src, tmp_path / "no3")
    assert not (tmp_path / "no3").exists()


def test_import_refuses_a_vocab_that_does_not_fit(tmp_path):
    src, _ = hf_checkpoint(tmp_path, "gpt2", cdial_vocab())
    (src / "vocab.txt").write_text("\n".join(cdial_vocab()[:-3] + ["[speaker1]", "[speaker2]"]) + "\n", encoding="utf-8")
    with pytest.raises(ImportRefused, match="vocab.txt lists"):
        import_hf(src, tmp_path / "out")


def test_training_rows_in_cdial_format():
    tok = CharTokenizer(cdial_vocab())
    ids, seg, _ = build_context(["你好", "我很好", "再见"], tok, 64)
    mask = [0, 0, 0, 0] + [1] * 7
    new_ids, new_seg, new_mask = to_input_format(ids, seg, mask, tok, "cdial_gpt")
    s1, s2 = tok.speaker_ids
    assert new_ids == [tok.cls_id, s1, *tok.encode("你好"), s2, *tok.encode("我很好"), s1, *tok.encode("再见"), tok.sep_id]
    assert new_seg == [2, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    # learnt: u2 and u3 with the token that ends each (the next speaker token, then [SEP])
    assert new_mask == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]


@pytest.mark.skipif(not (SHARED / "config.json").is_file(), reason="../shared/data/cdial_gpt (the real CDial-GPT config) is absent")
def test_cdial_gpt_exact_config(tmp_path):
    """CDial-GPT_LCCC-base's exact shapes and vocabulary (random weights): 12 x 768, 13,088 tokens."""
    hf_cfg = json.loads((SHARED / "config.json").read_text())
    torch.manual_seed(0)
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(**hf_cfg)).eval()
    src = tmp_path / "cdial"
    hf.save_pretrained(src)
    (src / "config.json").write_text(json.dumps(hf_cfg))  # CDial-GPT's own config.json: no architectures key
    shutil.copyfile(SHARED / "vocab.txt", src / "vocab.txt")
    model = load_pretrained(import_hf(src, tmp_path / "imported"))
    tok = CharTokenizer.from_dir(tmp_path / "imported")
    assert (model.config.vocab_size, model.config.n_layer, model.config.d_model, model.config.max_len) == (13088, 12, 768, 513)
    assert tok.speaker_ids == (13086, 13087) and tok.cls_id == 0 and tok.sep_id == 2
    ids, seg, _ = build_context(["你好，今天天气不错", "是啊，出去走走吧"], tok, 512, input_format="cdial_gpt")
    with torch.no_grad():
        ours = model(torch.tensor([ids]), segment_ids=torch.tensor([seg])).logits
        theirs = hf(torch.tensor([ids]), token_type_ids=torch.tensor([token_types(model, seg)])).logits
    assert rel_err(ours, theirs) < 1e-4


def test_eval_prompts_in_cdial_format():
    """eval dialog cuts liaotian-layout test samples into prompts; an imported model gets them in its format."""
    from liaotian.pipelines.dialogue import context_in_format

    tok = CharTokenizer(cdial_vocab())
    for history in HISTORIES:
        native, _, _ = build_context(history, tok, 64)
        assert context_in_format(native, tok, "cdial_gpt", 64) == build_context(history, tok, 64, input_format="cdial_gpt")
    native, _, _ = build_context(HISTORIES[2], tok, 64)  # too long for the budget: the oldest utterances go
    assert context_in_format(native, tok, "cdial_gpt", 9) == build_context(HISTORIES[2], tok, 9, input_format="cdial_gpt")


def test_chat_reranks_an_imported_models_candidates(tmp_path):
    """`liaotian chat --rerank`: an MLM with liaotian's own vocabulary reranks an imported model's replies."""
    from collections import Counter

    from liaotian.chat import ChatSession
    from liaotian.models.fast_mlm import FastMLM, FastMLMConfig
    from liaotian.pipelines.tokenizer import build_vocab

    src, _ = hf_checkpoint(tmp_path, "openai-gpt", cdial_vocab())
    model = load_pretrained(import_hf(src, tmp_path / "imported"))
    tok = CharTokenizer.from_dir(tmp_path / "imported")
    mlm_tok = build_vocab(Counter(CHARS))
    mlm = FastMLM(FastMLMConfig(vocab_size=mlm_tok.vocab_size, max_len=64, n_layer=1, n_head=2, d_model=32,
                                pad_id=mlm_tok.pad_id, cls_id=mlm_tok.cls_id, sep_id=mlm_tok.sep_id, mask_id=mlm_tok.mask_id)).eval()
    decoding = DecodingConfig(strategy="sample", top_p=1.0, max_new_tokens=6, n=4, seed=0, **reply_token_rules(tok, model))
    session = ChatSession(model, tok, decoding, mlm, mlm_tok)
    reply = "".join(session.reply("你好"))
    candidates = generate(model, [session.prompt(["你好"])], decoding, tok.sep_id)[0]
    assert reply in {tok.decode(g.token_ids) for g in candidates} and len(candidates) == 4
    assert session.history == ["你好", reply]


def test_cli_import_and_export(tmp_path, capsys):
    from liaotian.cli import main

    src, _ = hf_checkpoint(tmp_path, "gpt2", cdial_vocab())
    assert main(["import", "hf", str(src), "--output", str(tmp_path / "imported")]) == 0
    assert main(["export", "hf", str(tmp_path / "imported"), "--output", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported" / "tokenizer_config.json").is_file()
    (src / "model.safetensors").unlink()
    assert main(["import", "hf", str(src), "--output", str(tmp_path / "again")]) == 2
    assert "neither model.safetensors nor pytorch_model.bin" in capsys.readouterr().err
