import math

import pytest
import torch

from liaotian.models.precision import autocast, resolve_precision
from liaotian.models.sizing import check_embedding_dim, min_embedding_dim


def test_min_embedding_dim_is_8_33_ln_n():
    assert math.isclose(min_embedding_dim(10**5), 2 / 0.24 * math.log(10**5))
    assert 95 < min_embedding_dim(10**5) < 97 and 128 < min_embedding_dim(5 * 10**6) < 129
    with pytest.raises(ValueError):
        min_embedding_dim(0)
    with pytest.warns(UserWarning):
        assert not check_embedding_dim(64, 13088)
    assert check_embedding_dim(96, 13088)


def test_resolve_precision_auto_follows_cpu_flags():
    assert resolve_precision("auto", "cpu", flags={"avx2", "avx512_bf16"}) is torch.bfloat16
    assert resolve_precision("auto", "cpu", flags={"avx2", "amx_bf16"}) is torch.bfloat16
    assert resolve_precision("auto", "cpu", flags={"avx2", "avx512f"}) is None
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    assert resolve_precision("fp16", "cpu") is torch.float16
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "cuda") is None
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")


def test_autocast_helper():
    x = torch.randn(4, 4)
    with autocast("cpu", None):
        assert (x @ x).dtype == torch.float32
    with autocast("cpu", torch.bfloat16):
        assert (x @ x).dtype == torch.bfloat16
