"""Each loss against its formula, evaluated by hand with `math` on small cases."""
from __future__ import annotations

import math

import pytest
import torch

from liaotian.models.losses import LOSSES, build_loss, inverse_frequency_weights

LOGITS = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0], [1.0, -1.0, 0.5]]
TARGETS = [0, 2, 2, 1]
COUNTS = [60, 30, 10]


def softmax(row):
    z = [math.exp(v) for v in row]
    s = sum(z)
    return [v / s for v in z]


def probs():
    return [softmax(r) for r in LOGITS]


def call(name, **kw):
    loss = build_loss(name, **kw)
    return loss(torch.tensor(LOGITS), torch.tensor(TARGETS)).item()


def test_ce():
    expected = sum(-math.log(p[y]) for p, y in zip(probs(), TARGETS)) / 4
    assert call("ce") == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_weights_and_value():
    w = [100 / (3 * 60), 100 / (3 * 30), 100 / (3 * 10)]
    assert inverse_frequency_weights(COUNTS).tolist() == pytest.approx(w, rel=1e-6)
    assert sum(n * wi for n, wi in zip(COUNTS, w)) == pytest.approx(100)
    expected = sum(-w[y] * math.log(p[y]) for p, y in zip(probs(), TARGETS)) / 4
    assert call("weighted_ce", class_counts=COUNTS) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.5])
def test_focal(gamma):
    expected = sum(-((1 - p[y]) ** gamma) * math.log(p[y]) for p, y in zip(probs(), TARGETS)) / 4
    assert call("focal", gamma=gamma) == pytest.approx(expected, rel=1e-6)


def test_focal_gamma0_is_ce_and_alpha_per_class():
    assert call("focal", gamma=0.0) == pytest.approx(call("ce"), rel=1e-6)
    alpha = [0.2, 0.3, 0.5]
    expected = sum(-alpha[y] * (1 - p[y]) ** 2 * math.log(p[y]) for p, y in zip(probs(), TARGETS)) / 4
    assert call("focal", alpha=alpha) == pytest.approx(expected, rel=1e-6)


def test_focal_binary_scalar_alpha():
    logits, targets = [[0.0, 1.0], [2.0, -1.0]], [1, 0]
    ps = [softmax(r) for r in logits]
    a = {1: 0.25, 0: 0.75}
    expected = sum(-a[y] * (1 - p[y]) ** 2 * math.log(p[y]) for p, y in zip(ps, targets)) / 2
    got = build_loss("focal", alpha=0.25)(torch.tensor(logits), torch.tensor(targets)).item()
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_logit_adjusted_matches_pairwise_form(tau):
    pi = [c / 100 for c in COUNTS]
    expected = 0.0
    for row, y in zip(LOGITS, TARGETS):  # log[1 + Σ_{i≠y} (π_i/π_y)^τ e^{f_i − f_y}]
        expected += math.log(1 + sum((pi[i] / pi[y]) ** tau * math.exp(row[i] - row[y]) for i in range(3) if i != y))
    assert call("logit_adjusted", class_counts=COUNTS, tau=tau) == pytest.approx(expected / 4, rel=1e-5)
    loss = build_loss("logit_adjusted", class_counts=COUNTS, tau=tau)
    assert torch.equal(loss.predict_logits(torch.tensor(LOGITS)), torch.tensor(LOGITS))


def test_posthoc_la_trains_with_ce_and_shifts_prediction():
    assert call("posthoc_la", class_counts=COUNTS, tau=1.0) == pytest.approx(call("ce"), rel=1e-6)
    loss = build_loss("posthoc_la", class_counts=COUNTS, tau=2.0)
    adjusted = loss.predict_logits(torch.tensor([[0.0, 0.0, 0.0]]))[0].tolist()
    assert adjusted == pytest.approx([-2 * math.log(0.6), -2 * math.log(0.3), -2 * math.log(0.1)], rel=1e-5)
    # equal logits: the rarest class wins after adjustment
    assert max(range(3), key=lambda i: adjusted[i]) == 2


def test_smooth_acc():
    expected = 1 - sum(p[y] for p, y in zip(probs(), TARGETS)) / 4
    assert call("smooth_acc") == pytest.approx(expected, rel=1e-6)


def test_smooth_f1_macro_soft_f1():
    ps = probs()
    terms = []
    for c in range(3):
        tp = sum(p[c] for p, y in zip(ps, TARGETS) if y == c)
        support = sum(1 for y in TARGETS if y == c)
        terms.append(-math.log(2 * tp / (sum(p[c] for p in ps) + support)))
    assert call("smooth_f1") == pytest.approx(sum(terms) / 3, rel=1e-5)


def test_smooth_f1_gradient_is_stop_gradient_weighted_ce():
    """The smooth-F1 gradient: −∇log F1_c = Σ_pos (1/TP − 1/S) q_i ∇(−log q_i) + Σ_neg (1 − q_i)/S ∇(−log(1 − q_i))."""
    torch.manual_seed(0)
    logits = torch.randn(12, 3, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 2, 0, 1, 1, 0, 2, 1, 0, 0])
    g_loss = torch.autograd.grad(build_loss("smooth_f1")(logits, targets), logits)[0]
    weighted = 0.0
    for c in range(3):
        q = torch.softmax(logits, -1)[:, c]
        pos = targets == c
        tp, s = q[pos].sum(), q.sum() + pos.sum()
        w = torch.where(pos, (1 / tp - 1 / s) * q, (1 - q) / s).detach()  # stop-gradient weights
        ce = torch.where(pos, -torch.log(q), -torch.log(1 - q))
        weighted = weighted + (w * ce).sum() / 3
    g_derived = torch.autograd.grad(weighted, logits)[0]
    assert torch.allclose(g_loss, g_derived, atol=1e-5)


def test_smooth_f1_skips_classes_absent_from_batch():
    only_one = build_loss("smooth_f1")(torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([1]))
    p1 = softmax([0.0, 2.0, 0.0])[1]
    assert only_one.item() == pytest.approx(-math.log(2 * p1 / (p1 + 1)), rel=1e-5)


def test_all_losses_backprop_and_decrease_under_sgd():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0.8).long()  # imbalanced binary
    counts = torch.bincount(y, minlength=2).tolist()
    for name in LOSSES:
        torch.manual_seed(1)
        lin = torch.nn.Linear(5, 2)
        loss_fn = build_loss(name, class_counts=counts)
        opt = torch.optim.SGD(lin.parameters(), lr=0.5)
        first = loss_fn(lin(x), y).item()
        for _ in range(30):
            opt.zero_grad()
            loss_fn(lin(x), y).backward()
            opt.step()
        assert loss_fn(lin(x), y).item() < first, name


def test_errors():
    with pytest.raises(ValueError, match="unknown loss 'dice'"):
        build_loss("dice")
    for name in ("weighted_ce", "logit_adjusted", "posthoc_la"):
        with pytest.raises(ValueError, match="needs class_counts"):
            build_loss(name)
    with pytest.raises(ValueError, match="positive"):
        build_loss("weighted_ce", class_counts=[3, 0])
    with pytest.raises(ValueError, match="built for 3 classes"):
        build_loss("weighted_ce", class_counts=COUNTS)(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets must be \(B,\)"):
        build_loss("ce")(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
