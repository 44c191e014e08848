"""serve.kernels: the packed oneDNN linear path computes what F.linear computes, and only while active."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from serve.kernels import PackedLinears, packed_linear_available

pytestmark = pytest.mark.skipif(not packed_linear_available(), reason="oneDNN packed linear not available")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8, bias=False))


def test_packed_matches_plain_and_is_only_used_while_active():
    model = _model().eval()
    packed = PackedLinears(model, min_rows=4)
    assert len(packed.linears) == 2
    for shape in [(1, 16), (3, 16), (4, 16), (32, 16), (8, 1, 16), (5, 7, 16)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x)
            with packed.active():
                out = model(x)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), packed.active():
        model(torch.randn(8, 16))
    assert model[0]._packed_weight is not None  # the batched call went through oneDNN
    assert "forward" not in vars(model[0]) and "forward" not in vars(model[2])  # restored on exit
    with packed.active(enabled=False):
        assert "forward" not in vars(model[0])


def test_nested_blocks_and_gradients_and_weight_updates():
    model = _model()
    packed = PackedLinears(model, min_rows=1)
    x = torch.randn(6, 16, requires_grad=True)
    with packed.active(), packed.active():
        pass
    assert "forward" not in vars(model[0])
    with packed.active():
        model(x).sum().backward()  # needs gradients: takes F.linear, so autograd works
        assert x.grad is not None and model[0].weight.grad is not None
        with torch.no_grad():
            before = model(x)
            model[0].weight.mul_(2.0)  # changed in place: packed again before its next use
            after = model(x)
            ref = F.linear(F.gelu(F.linear(x, model[0].weight, model[0].bias)), model[2].weight)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, rtol=1e-5, atol=1e-5)
