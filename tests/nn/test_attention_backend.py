"""The attention kernels are a recipe setting (`model.init_args.attention_backend`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend

from fmtrain.datamodules.batch import MaskCollator
from fmtrain.masks import MultiBlock
from fmtrain.methods import VJEPAModule
from fmtrain.methods.configs import PredictorConfig
from fmtrain.nn.encoder import ViTEncoder
from fmtrain.nn.transformer import ATTENTION_BACKENDS, Attention


def _module(backend: str) -> VJEPAModule:
    torch.manual_seed(0)
    return VJEPAModule(
        input_size=(8, 32, 32),
        patch_size=(2, 8, 8),
        encoder=ViTEncoder(size="vit_test"),
        predictor=PredictorConfig(embed_dim=32, depth=1, num_heads=2),
        attention_backend=backend,
    )


def _batch(module: VJEPAModule):
    collate = MaskCollator(MultiBlock(families=[{"num_blocks": 2}]), module.grid.shape)
    return collate([torch.randn(1, 8, 32, 32) for _ in range(2)], [0, 1], np.random.default_rng(0))


def test_every_attention_of_every_part_gets_the_recipe_kernel():
    module = _module("math")
    attentions = [m for m in module.method.modules() if isinstance(m, Attention)]
    assert len(attentions) == 2 * 2 + 1  # encoder, its EMA twin, predictor
    assert all(a.kernels == [SDPBackend.MATH] for a in attentions)
    # auto leaves cuDNN out (it produced non-finite steps on an H100)
    auto = [m for m in _module("auto").method.modules() if isinstance(m, Attention)]
    assert all(a.kernels == ATTENTION_BACKENDS for a in auto)
    assert SDPBackend.CUDNN_ATTENTION not in ATTENTION_BACKENDS


def test_kernels_agree_where_both_run():
    x = torch.randn(2, 10, 32)
    attn = Attention(32, 2)
    attn.set_attention_backend("math")
    reference = attn(x)
    attn.set_attention_backend("flash")  # PyTorch has a CPU flash kernel for fp32
    torch.testing.assert_close(attn(x), reference, rtol=1e-5, atol=1e-6)


def test_a_kernel_that_cannot_run_here_stops_the_step_naming_the_key():
    if torch.cuda.is_available():
        pytest.skip("the memory-efficient kernel runs on a GPU")
    module = _module("efficient")  # a GPU kernel: nothing to fall back to on a CPU
    with pytest.raises(RuntimeError, match=r"model.init_args.attention_backend='efficient'"):
        module.run_forward(_batch(module))
    assert _module("auto").run_forward(_batch(module)).loss.isfinite()


def test_an_unknown_backend_is_refused_when_the_method_is_built():
    with pytest.raises(ValueError, match=r"attention_backend='fast'.*auto, flash, efficient"):
        _module("fast")
