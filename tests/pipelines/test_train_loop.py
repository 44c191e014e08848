"""Schedule, step, evaluation and checkpoint state of pipelines.train_loop (no Ray)."""
import json
import math

import numpy as np
import pytest
import torch

from liaotian.pipelines import train_loop as T
from liaotian.pipelines.collate import collate_dialog
from liaotian.pipelines.config import OptimSection, TrainJobConfig

VOCAB = T.Vocab(vocab_size=40, pad_id=0, cls_id=2, sep_id=3, mask_id=4, special_ids=(0, 1, 2, 3, 4, 5, 6))
SMALL = {"preset": "tiny", "n_layer": 1, "n_head": 2, "d_model": 32, "dropout": 0.0}


def dialog_batch(seed=0, n=8):
    rng = np.random.default_rng(seed)
    ids, seg, lm = [], [], []
    for _ in range(n):
        a, b = rng.integers(7, 40, rng.integers(2, 6)), rng.integers(7, 40, rng.integers(2, 6))
        ids.append(np.r_[2, a, 3, b, 3]); seg.append(np.r_[0, [0] * len(a), 0, [1] * len(b), 1])
        lm.append(np.r_[0, [0] * len(a), 0, [1] * len(b), 1])
    return collate_dialog({"input_ids": ids, "segment_ids": seg, "loss_mask": lm}, VOCAB.pad_id)


def fp32():
    return T.Precision(None, torch.device("cpu"))


def test_lr_schedule_warmup_then_decay_to_floor():
    o = OptimSection(lr=1e-3, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    lrs = [T.lr_at(s, o, 100) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone after warm-up
    assert T.lr_at(100, o, 100) == pytest.approx(1e-4)
    lin = OptimSection(lr=1e-3, warmup_steps=0, schedule="linear", min_lr_ratio=0.0)
    assert T.lr_at(50, lin, 100) == pytest.approx(5e-4)
    const = OptimSection(lr=1e-3, warmup_steps=5, schedule="constant")
    assert T.lr_at(80, const, 100) == 1e-3


def test_decoupled_weight_decay_goes_to_matrices_only():
    from liaotian.models.regularizers import build_regularizer
    model = T.build_model("dialog", SMALL, VOCAB)
    opt = T.build_optimizer(model, OptimSection(), build_regularizer("decoupled_wd", 0.01))
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, 0.01]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_vocab_comes_from_the_tokenizer_not_yaml():
    with pytest.raises(ValueError, match="come from the tokenizer"):
        T.build_model("dialog", {**SMALL, "vocab_size": 99}, VOCAB)
    m = T.build_model("dialog", SMALL, VOCAB)
    assert m.token_embedding.num_embeddings == 40 and m.config.eos_id == VOCAB.sep_id


def test_train_steps_lower_the_loss_of_a_batch():
    torch.manual_seed(0)
    model = T.build_model("dialog", SMALL, VOCAB)
    opt = torch.optim.AdamW(model.parameters())
    batch = dialog_batch()
    first = T.train_step(model, "dialog", [batch], opt, lr=3e-3, precision=fp32(), grad_clip=1.0)
    for _ in range(30):
        last = T.train_step(model, "dialog", [batch], opt, lr=3e-3, precision=fp32(), grad_clip=1.0)
    assert last["loss"] < first["loss"] * 0.7
    assert first["tokens"] == int(batch["attention_mask"].sum())


def test_grad_accumulation_averages_micro_batches():
    batch = dialog_batch()
    params = []
    for micro in ([batch], [batch, batch]):  # SGD: an update proportional to the gradient itself
        torch.manual_seed(0)
        model = T.build_model("dialog", SMALL, VOCAB)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        T.train_step(model, "dialog", micro, opt, lr=0.1, precision=fp32())
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(params[0], params[1], atol=1e-6)


def test_classifier_metrics_from_confusion_sums():
    # true 0: 8 right, 2 wrong; true 1 (minority): 1 right, 1 wrong
    cm = torch.tensor([[8, 2], [1, 1]], dtype=torch.float64)
    sums = torch.cat([torch.tensor([6.0, 12.0], dtype=torch.float64), cm.flatten()])
    m = T.metrics_from_sums("classifier", sums, 2, minority=1)
    assert m["val_loss"] == pytest.approx(0.5)
    assert m["val_accuracy"] == pytest.approx(9 / 12)
    assert m["val_balanced_accuracy"] == pytest.approx((0.8 + 0.5) / 2)
    assert m["val_minority_recall"] == pytest.approx(0.5)
    f1_0, f1_1 = 2 * (8 / 9) * 0.8 / (8 / 9 + 0.8), 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5)
    assert m["val_macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)
    lm = T.metrics_from_sums("dialog", torch.tensor([20.0, 10.0], dtype=torch.float64))
    assert lm["val_ppl"] == pytest.approx(math.exp(2.0))


def test_evaluate_weights_batches_by_their_targets():
    torch.manual_seed(0)
    model = T.build_model("dialog", SMALL, VOCAB)
    a, b = dialog_batch(1, 4), dialog_batch(2, 8)
    m = T.evaluate(model, "dialog", [a, b])
    la = T.evaluate(model, "dialog", [a])["val_loss"]
    lb = T.evaluate(model, "dialog", [b])["val_loss"]
    na, nb = T.loss_positions("dialog", a), T.loss_positions("dialog", b)
    assert m["val_loss"] == pytest.approx((la * na + lb * nb) / (na + nb), rel=1e-5)


def test_checkpoint_state_round_trip_is_safetensors_and_json(tmp_path):
    torch.manual_seed(0)
    model = T.build_model("dialog", SMALL, VOCAB)
    opt = torch.optim.AdamW(model.parameters())
    for _ in range(3):
        T.train_step(model, "dialog", [dialog_batch()], opt, lr=1e-3, precision=fp32())
    T.save_state(tmp_path, model, opt, {"step": 3, "epoch": 1, "batch_in_epoch": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    torch.manual_seed(1)
    fresh = T.build_model("dialog", SMALL, VOCAB)
    opt2 = torch.optim.AdamW(fresh.parameters())
    meta = T.load_state(tmp_path, fresh, opt2)
    assert meta["step"] == 3 and meta["batch_in_epoch"] == 2
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    # the restored optimiser continues exactly as the original one
    T.train_step(model, "dialog", [dialog_batch(5)], opt, lr=1e-3, precision=fp32())
    T.train_step(fresh, "dialog", [dialog_batch(5)], opt2, lr=1e-3, precision=fp32())
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.allclose(p, q, atol=1e-7)


def test_local_checkpoints_keep_best_and_latest(tmp_path):
    job = TrainJobConfig(keep_checkpoints=1, checkpoint_metric="val_loss", checkpoint_mode="min")
    store = T.LocalCheckpoints(tmp_path / "run", job)
    for step, loss in ((10, 3.0), (20, 1.0), (30, 2.0), (40, 2.5)):
        src = tmp_path / f"src{step}"
        src.mkdir()
        (src / "state.json").write_text(json.dumps({"metrics": {"step": step, "val_loss": loss}}))
        store.add(src, {"step": step, "val_loss": loss})
    kept = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert kept == ["checkpoint_0000020", "checkpoint_0000040"]
    assert store.best()[0].name == "checkpoint_0000020" and store.latest().name == "checkpoint_0000040"


def test_cluster_config_changes_only_where_it_runs():
    """configs/cluster.yaml: the demo's keys; in train, only presets and scaling differ."""
    from pathlib import Path

    import yaml

    from liaotian.config import load_run_config

    root = Path(__file__).resolve().parents[2] / "configs"
    demo, cluster = (yaml.safe_load((root / f).read_text()) for f in ("demo.yaml", "cluster.yaml"))

    def keys(d, prefix=""):
        return {prefix + k for k in d} | {x for k, v in d.items() if isinstance(v, dict) for x in keys(v, f"{prefix}{k}.")}

    assert keys(demo) - {"train.dialog.scaling.cpus_per_worker"} <= keys(cluster)
    for kind, job in cluster["train"].items():
        same = {k: v for k, v in job.items() if k not in ("model", "scaling")}
        assert same == {k: v for k, v in demo["train"][kind].items() if k not in ("model", "scaling")}
        assert job["scaling"]["use_gpu"] is True
    assert load_run_config(root / "cluster.yaml").train.dialog.scaling.num_workers == 8


def test_early_stopping_counts_evaluations_without_improvement():
    from liaotian.pipelines.train_loop import EarlyStopping

    stop = EarlyStopping(patience=2, mode="min", min_delta=0.01)
    assert stop.update(5.0, 10) and not stop.should_stop
    assert stop.update(4.0, 20)
    assert not stop.update(3.995, 30) and not stop.should_stop  # within min_delta: not an improvement
    assert not stop.update(float("nan"), 40) and stop.should_stop
    assert (stop.best, stop.best_step) == (4.0, 20)
    resumed = EarlyStopping(2, "min", 0.01, stop.state())  # a resumed run keeps counting
    assert resumed.should_stop and resumed.best_step == 20
    accuracy = EarlyStopping(patience=1, mode="max")
    assert accuracy.update(0.5, 1) and accuracy.update(0.6, 2) and not accuracy.update(0.55, 3) and accuracy.should_stop
    assert not EarlyStopping(patience=0).enabled and not EarlyStopping(patience=0, state={"bad_evals": 9}).should_stop
