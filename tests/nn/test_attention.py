"""Attention chooses its SDPA kernels explicitly: never cuDNN's (non-finite steps on H100)."""

import torch
import torch.nn.functional as F

from fmtrain.nn.transformer import Attention


def test_attention_never_offers_sdpa_the_cudnn_kernel(monkeypatch):
    offered = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        cuda = torch.backends.cuda
        offered.append((cuda.cudnn_sdp_enabled(), cuda.flash_sdp_enabled()))
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x = torch.randn(2, 5, 16)
    out = Attention(16, 2)(x)
    assert out.shape == x.shape
    assert offered == [(False, True)]  # cuDNN off, flash (and the others) on
    assert torch.backends.cuda.cudnn_sdp_enabled()  # only inside attention, not globally
