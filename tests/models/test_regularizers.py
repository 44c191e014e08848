"""Regularisers: formulas, parameter selection, and WEISSI's invariance to layer-against-layer rescaling."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from liaotian.models.regularizers import REGULARIZERS, build_regularizer, regularized_weights


class ReluNet(nn.Module):
    """A positively homogeneous 3-layer ReLU MLP, with an embedding and a LayerNorm to be ignored."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.l1, self.l2, self.l3 = nn.Linear(4, 8), nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return ReluNet()


def norms(net):
    return [net.l1.weight.norm().item(), net.l2.weight.norm().item(), net.l3.weight.norm().item()]


def test_selects_linear_weights_only(net):
    assert [id(w) for w in regularized_weights(net)] == [id(net.l1.weight), id(net.l2.weight), id(net.l3.weight)]


def test_l2_formula(net):
    expected = 0.01 * sum(n**2 for n in norms(net))
    assert build_regularizer("l2", 0.01).penalty(net).item() == pytest.approx(expected, rel=1e-5)
    assert build_regularizer("l2", 0.01).weight_decay == 0.0


def test_weissi_formula(net):
    expected = 0.1 * sum(math.log(n) for n in norms(net))
    assert build_regularizer("weissi", 0.1).penalty(net).item() == pytest.approx(expected, rel=1e-5)
    l1_dir = sum((w / w.norm()).abs().sum().item() for w in regularized_weights(net))
    got = build_regularizer("weissi", 0.1, direction_l1=0.01).penalty(net).item()
    assert got == pytest.approx(expected + 0.01 * l1_dir, rel=1e-5)


def test_weissi_clamps_zero_weights():
    lin = nn.Linear(3, 3)
    nn.init.zeros_(lin.weight)
    value = build_regularizer("weissi", 1.0, eps=1e-3).penalty(lin).item()
    assert value == pytest.approx(math.log(1e-3), rel=1e-5)


def test_none_and_decoupled_wd(net):
    assert build_regularizer("none", 0.5).penalty(net).item() == 0.0
    wd = build_regularizer("decoupled_wd", 0.05)
    assert wd.penalty(net).item() == 0.0 and wd.weight_decay == 0.05
    groups = wd.param_groups(net)
    assert groups[0]["weight_decay"] == 0.05 and len(groups[0]["params"]) == 3
    assert groups[1]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    torch.optim.AdamW(groups, lr=1e-3)  # accepted by the optimiser


@pytest.mark.parametrize("c", [3.0, 0.2])
def test_weissi_invariant_to_layer_rescaling_while_l2_changes(net, c):
    x = torch.randn(5, 4)
    before_out = net(x)
    weissi, l2 = build_regularizer("weissi", 1.0, direction_l1=0.3), build_regularizer("l2", 1.0)
    before_w, before_l2 = weissi.penalty(net).item(), l2.penalty(net).item()
    with torch.no_grad():  # W1·c, b1·c, W2/c: the ReLU network computes the same function
        net.l1.weight.mul_(c)
        net.l1.bias.mul_(c)
        net.l2.weight.div_(c)
    assert torch.allclose(net(x), before_out, atol=1e-5)
    assert weissi.penalty(net).item() == pytest.approx(before_w, abs=1e-5)
    assert abs(l2.penalty(net).item() - before_l2) > 0.1 * before_l2


def test_weissi_gradient_is_per_layer_decay(net):
    penalty = build_regularizer("weissi", 0.7).penalty(net)
    penalty.backward()
    w = net.l2.weight
    assert torch.allclose(w.grad, 0.7 * w.detach() / w.detach().norm() ** 2, atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="unknown regulariser 'l1'"):
        build_regularizer("l1", 0.1)
    with pytest.raises(ValueError, match=">= 0"):
        build_regularizer("l2", -1.0)
    with pytest.raises(ValueError, match="takes only a strength"):
        build_regularizer("l2", 0.1, direction_l1=0.1)
    assert set(REGULARIZERS) == {"none", "l2", "decoupled_wd", "weissi"}
