"""save_pretrained -> load_pretrained is bit-exact; mismatches fail loudly; classifiers reuse encoders."""
import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file, save_file

from liaotian.models.checkpoint import load_pretrained, save_pretrained
from liaotian.models.classifier import Classifier, ClassifierConfig
from liaotian.models.dialog_lm import DialogLM, DialogLMConfig
from liaotian.models.fast_mlm import FastMLM, FastMLMConfig
from liaotian.models.masked_lm import MaskedLM, MaskedLMConfig

SMALL = dict(vocab_size=40, max_len=24, n_layer=2, n_head=2, d_model=32, dropout=0.0)


def models():
    torch.manual_seed(0)
    return [
        DialogLM(DialogLMConfig(**SMALL)),
        DialogLM(DialogLMConfig(**SMALL, attention="linear", self_terminating=True)),
        FastMLM(FastMLMConfig(**SMALL)),
        MaskedLM(MaskedLMConfig(**SMALL)),
        Classifier(ClassifierConfig(encoder="masked_lm", encoder_config=SMALL, num_classes=3)),
        Classifier(ClassifierConfig(encoder="fast_mlm", encoder_config=SMALL, pooling="cls")),
    ]


@pytest.mark.parametrize("index", range(6))
def test_save_load_round_trip_is_bit_exact(tmp_path, index):
    model = models()[index].eval()
    save_pretrained(model, tmp_path, extra={"step": 7})
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids = torch.randint(5, 40, (2, 9))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    payload = json.loads((tmp_path / "config.json").read_text())
    assert payload["model_type"] == model.config.model_type and payload["extra"] == {"step": 7}


def test_bf16_weights_stay_bf16(tmp_path):
    model = models()[0].to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded = DialogLM.from_pretrained(tmp_path)
    assert loaded.token_embedding.weight.dtype == torch.bfloat16
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_tokenizer_files_are_copied(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (tok / "tokenizer.json").write_text("{}")
    save_pretrained(models()[2], tmp_path / "m", tokenizer_dir=tok)
    assert (tmp_path / "m" / "vocab.txt").read_text() == "[PAD]\n[UNK]\n" and (tmp_path / "m" / "tokenizer.json").exists()
    with pytest.raises(FileNotFoundError):
        save_pretrained(models()[2], tmp_path / "n", tokenizer_dir=tmp_path / "empty")


def test_shape_mismatch_fails_clearly(tmp_path):
    save_pretrained(models()[0], tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["d_model"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained(tmp_path)


def test_missing_tensor_and_unknown_field_fail(tmp_path):
    save_pretrained(models()[2], tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("head.bias")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="head.bias"):
        load_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_experts"] = 8
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="n_experts"):
        load_pretrained(tmp_path)
    cfg["model_type"] = "gpt5"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="gpt5"):
        load_pretrained(tmp_path)


def test_pickle_file_is_never_read(tmp_path):
    save_pretrained(models()[2], tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(models()[2].state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path)


def test_tied_parameters_are_stored_once_and_restored(tmp_path):
    model = models()[2]
    model.extra_out = torch.nn.Linear(32, 40, bias=False)
    model.extra_out.weight = model.embed.token.weight  # a tied alias in the state dict
    save_pretrained(model, tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    assert payload["tied_weights"] == {"extra_out.weight": "embed.token.weight"}
    assert "extra_out.weight" not in load_file(str(tmp_path / "model.safetensors"))


@pytest.mark.parametrize("encoder", ["fast_mlm", "masked_lm"])
def test_classifier_from_encoder_copies_weights(tmp_path, encoder):
    mlm = models()[2 if encoder == "fast_mlm" else 3]
    save_pretrained(mlm, tmp_path)
    clf = Classifier.from_encoder(tmp_path, num_classes=4)
    assert clf.config.encoder == encoder and clf.config.encoder_config == asdict(mlm.config)
    src = mlm.state_dict()
    assert all(torch.equal(v, src[k]) for k, v in clf.encoder.state_dict().items())
    ids = torch.randint(5, 40, (3, 7))
    am = torch.ones_like(ids)
    am[0, 5:] = 0
    assert clf(ids, am).logits.shape == (3, 4)
    clf.eval()
    a = clf(ids[:1, :5]).logits
    b = clf(ids[:1], am[:1]).logits  # mean pooling ignores padding
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    save_pretrained(models()[0], tmp_path / "lm")
    with pytest.raises(ValueError, match="encoder"):
        Classifier.from_encoder(tmp_path / "lm", 2)
