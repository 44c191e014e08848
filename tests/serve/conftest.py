"""Tiny models (random init) saved with models.checkpoint.save_pretrained, and a served deployment.

Random weights are enough for protocol tests: every check here is about shapes, counts, formats,
limits and consistency (IG completeness holds for any weights)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

CHARS = "你好我是谁今天天气很不错吃饭了吗喜欢讨厌电影音乐开心难过哈嗯啊呢吧的一在有人这中大为上个国和也子时道说出要就下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呀未造啦整"


def _vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[SPK1]", "[SPK2]"]
    seen, out = set(), []
    for ch in CHARS + "abcdefghijklmnopqrstuvwxyz0123456789，。？！,.?!":
        if ch not in seen:
            seen.add(ch)
            out.append(ch)
    return specials + out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{"dialog", "mlm", "classifier"}: tiny random-init model directories sharing one tokenizer."""
    import torch

    from liaotian.models.checkpoint import save_pretrained
    from liaotian.models.classifier import Classifier, ClassifierConfig
    from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
    from liaotian.models.fast_mlm import FastMLM, FastMLMConfig
    from liaotian.pipelines.tokenizer import CharTokenizer

    root = tmp_path_factory.mktemp("serve_models")
    vocab_file = root / "vocab.txt"
    vocab_file.write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    tok = CharTokenizer.from_vocab_file(vocab_file)
    tok_dir = root / "tokenizer"
    tok.save(tok_dir)
    ids = dict(vocab_size=tok.vocab_size, pad_id=tok.pad_id)
    torch.manual_seed(0)
    dialog = DialogLM(DialogLMConfig(n_layer=2, n_head=2, d_model=64, max_len=128, dropout=0.0,
                                     eos_id=tok.sep_id, **ids))
    enc = dict(n_layer=1, n_head=2, d_model=64, max_len=128, dropout=0.0, cls_id=tok.cls_id, sep_id=tok.sep_id,
               mask_id=tok.mask_id, **ids)
    mlm = FastMLM(FastMLMConfig(**enc))
    clf = Classifier(ClassifierConfig(encoder="fast_mlm", encoder_config=enc, num_classes=2, dropout=0.0))
    dirs = {"dialog": root / "dialog", "mlm": root / "mlm", "classifier": root / "classifier"}
    save_pretrained(dialog, dirs["dialog"], tokenizer_dir=tok_dir)
    save_pretrained(mlm, dirs["mlm"], tokenizer_dir=tok_dir)
    save_pretrained(clf, dirs["classifier"], tokenizer_dir=tok_dir, extra={"label_names": ["negative", "positive"]})
    return dirs


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


API_KEY = "test-key"


@pytest.fixture(scope="session")
def served_config(ray_session, tiny_models, tmp_path_factory):
    """The run config of both Serve applications: a free loopback port, small limits, fast autoscaling.
    Serve is shut down at the end of the session."""
    from ray import serve

    from liaotian.config import load_run_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fast = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2, "upscale_delay_s": 0.5,
            "downscale_delay_s": 2.0, "look_back_period_s": 1.0, "metrics_interval_s": 0.5}
    cfg = load_run_config(None, {
        "run_dir": str(tmp_path_factory.mktemp("serve_run")),
        "serve": {"port": port, "api_key": API_KEY, "max_new_tokens": 32, "request_timeout_s": 30,
                  "chat_model": str(tiny_models["dialog"]), "rerank_model": str(tiny_models["mlm"]),
                  "classifier_model": str(tiny_models["classifier"]), "ig_steps": 16,
                  "chat": {"num_cpus": 0.5, "max_ongoing_requests": 4, "max_queued_requests": 4, "max_batch_size": 4,
                           "autoscaling": fast},
                  "attribution": {"num_cpus": 0.5, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}},
    })
    try:
        yield cfg
    finally:
        serve.shutdown()


@pytest.fixture
def served(served_config):
    """Both applications running on `served_config`'s port; yields (base_url, run config).
    Deploys them when they are not running: on first use, and again after a module that runs its own
    applications (test_hf_served.py shuts Serve down) — a session-cached deployment would leave every
    later test talking to a closed port."""
    from ray import serve

    from liaotian.serve.app import ROUTES, run

    status = serve.status().applications
    if not all(name in status and status[name].status == "RUNNING" for name in ROUTES):
        run(served_config, blocking=False)
    yield f"http://127.0.0.1:{served_config.serve.port}", served_config
