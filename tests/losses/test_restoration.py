"""Charbonnier in fp32 with a checked epsilon, and the frequency + gradient term."""

from __future__ import annotations

import math

import pytest
import torch

from fmtrain.losses.restoration import charbonnier, check_charbonnier_eps, frequency_gradient_loss


def test_charbonnier_by_hand_and_finite_gradient_at_zero_difference():
    p = torch.tensor([0.0, 3.0, -4.0])
    t = torch.zeros(3)
    want = (1e-3 + math.sqrt(9 + 1e-6) + math.sqrt(16 + 1e-6)) / 3
    assert float(charbonnier(p, t, eps=1e-3)) == pytest.approx(want, rel=1e-6)
    # half-precision inputs: computed in fp32, so a zero difference keeps a zero gradient
    x = torch.zeros(4, dtype=torch.float16, requires_grad=True)
    charbonnier(x, torch.zeros(4, dtype=torch.float16), eps=1e-4).backward()
    assert torch.equal(x.grad, torch.zeros(4, dtype=torch.float16))


def test_naive_half_precision_charbonnier_is_the_bug_the_check_refuses():
    d = torch.zeros(1, dtype=torch.float16, requires_grad=True)
    eps = torch.tensor(1e-4, dtype=torch.float16)
    torch.sqrt(d * d + eps * eps).sum().backward()  # what an fp16 loss would do
    assert torch.isnan(d.grad).all() or torch.isinf(d.grad).all()
    with pytest.raises(ValueError, match=r"model\.init_args\.loss\.eps=0\.0001.*underflows"):
        check_charbonnier_eps(1e-4, torch.float16, key="model.init_args.loss.eps")
    check_charbonnier_eps(1e-4, torch.float32)  # fine where the loss is computed
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="finite number > 0"):
            check_charbonnier_eps(bad)


def test_frequency_gradient_loss_sees_blur_that_a_mean_keeps():
    g = torch.Generator().manual_seed(0)
    sharp = torch.rand(2, 3, 32, 32, generator=g)
    blurred = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2, count_include_pad=False)
    assert float(frequency_gradient_loss(sharp, sharp)) == 0.0
    assert float(frequency_gradient_loss(blurred, sharp)) > 0.1
    # a brightness shift moves only the DC bin (0.1 * 1024 / sqrt(1024) = 3.2 in every
    # image, 0 in the other 32 x 17 bins) and no gradient: the loss is exactly that
    shifted = sharp + 0.1
    assert float(frequency_gradient_loss(shifted, sharp)) == pytest.approx(3.2 / 544, rel=1e-3)
    with pytest.raises(ValueError, match="differ"):
        frequency_gradient_loss(sharp, sharp[..., :16])
