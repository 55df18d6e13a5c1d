"""Regression losses against hand computations: patchify order, per-patch norm, masked MSE."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fmtrain.losses import (
    feature_regression,
    layer_normed,
    masked_patch_mse,
    patchify,
    per_patch_normalized,
)


def patchify_by_hand(x: torch.Tensor, patch_size: tuple[int, ...]) -> torch.Tensor:
    """Token by token in row-major grid order; each patch's voxels row-major, channels last."""
    b, c, *spatial = x.shape
    grid = [s // p for s, p in zip(spatial, patch_size, strict=True)]
    out = torch.empty(b, math.prod(grid), math.prod(patch_size) * c, dtype=x.dtype)
    for i in range(b):
        for token, cell in enumerate(itertools.product(*(range(g) for g in grid))):
            values = []
            for offset in itertools.product(*(range(p) for p in patch_size)):
                pos = tuple(g * p + o for g, p, o in zip(cell, patch_size, offset, strict=True))
                for ch in range(c):
                    values.append(x[(i, ch, *pos)])
            out[i, token] = torch.stack(values)
    return out


@pytest.mark.parametrize(
    ("spatial", "patch_size", "channels"),
    [
        ((12,), (4,), 1),
        ((12,), (3,), 2),
        ((6, 8), (2, 4), 3),
        ((4, 6), (4, 3), 1),
        ((4, 6, 4), (2, 3, 2), 2),
        ((2, 2, 2), (1, 1, 1), 3),
    ],
)
def test_patchify_matches_a_hand_loop(spatial, patch_size, channels):
    x = torch.arange(2 * channels * math.prod(spatial), dtype=torch.float32)
    x = x.reshape(2, channels, *spatial)
    got = patchify(x, patch_size)
    n = math.prod(s // p for s, p in zip(spatial, patch_size, strict=True))
    assert got.shape == (2, n, math.prod(patch_size) * channels)
    assert torch.equal(got, patchify_by_hand(x, patch_size))


def test_patchify_rejects_a_rank_mismatch():
    with pytest.raises(ValueError, match="spatial axes"):
        patchify(torch.zeros(1, 1, 8, 8), (4,))


def test_per_patch_normalized_matches_a_hand_computation():
    torch.manual_seed(0)
    patches = torch.randn(2, 5, 12) * 3 + 1
    got = per_patch_normalized(patches)
    want = torch.empty_like(patches)
    for i in range(2):
        for j in range(5):
            p = patches[i, j]
            mean = p.sum() / p.numel()
            var = ((p - mean) ** 2).sum() / p.numel()  # unbiased=False
            want[i, j] = (p - mean) / torch.sqrt(var + 1e-6)
    torch.testing.assert_close(got, want)
    assert got.dtype == torch.float32


def test_per_patch_normalized_keeps_a_constant_patch_finite():
    got = per_patch_normalized(torch.full((1, 1, 8), 5.0))
    assert torch.isfinite(got).all() and torch.equal(got, torch.zeros(1, 1, 8))


def test_per_patch_normalized_is_fp32_for_half_inputs():
    patches = torch.randn(1, 3, 8).to(torch.bfloat16)
    assert per_patch_normalized(patches).dtype == torch.float32


def test_masked_patch_mse_matches_hand_gathered_mse():
    torch.manual_seed(0)
    patches = torch.randn(2, 6, 4)
    target_idx = torch.tensor([[0, 3, 5], [1, 2, 4]], dtype=torch.int64)
    prediction = torch.randn(2, 3, 4)
    total, count = 0.0, 0
    for b in range(2):
        for k, t in enumerate(target_idx[b].tolist()):
            total += float(((prediction[b, k] - patches[b, t]) ** 2).sum())
            count += patches.shape[-1]
    got = masked_patch_mse(prediction, patches, target_idx)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor(total / count))


def test_masked_patch_mse_ignores_visible_patches():
    torch.manual_seed(1)
    patches = torch.randn(2, 6, 4)
    target_idx = torch.tensor([[0, 3, 5], [1, 2, 4]], dtype=torch.int64)
    prediction = torch.randn(2, 3, 4)
    before = masked_patch_mse(prediction, patches, target_idx)
    changed = patches.clone()
    changed[0, 1] += 100.0  # position 1 is not a target in sample 0
    changed[1, 5] = float("nan")  # nor position 5 in sample 1
    assert torch.equal(masked_patch_mse(prediction, changed, target_idx), before)
    changed[0, 3] += 1.0  # a target position does count
    assert not torch.equal(masked_patch_mse(prediction, changed, target_idx), before)


def test_masked_patch_mse_is_zero_for_a_perfect_prediction():
    patches = torch.randn(1, 5, 3)
    target_idx = torch.tensor([[4, 1]])
    assert float(masked_patch_mse(patches[:, [4, 1]], patches, target_idx)) == 0.0


@pytest.mark.parametrize(("kind", "reference"), [("l1", F.l1_loss), ("l2", F.mse_loss)])
def test_feature_regression_matches_functional(kind, reference):
    torch.manual_seed(0)
    prediction, target = torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    got = feature_regression(prediction, target, kind)
    torch.testing.assert_close(got, reference(prediction, target))
    half = feature_regression(prediction.bfloat16(), target.bfloat16(), kind)
    assert half.dtype == torch.float32


def test_feature_regression_defaults_to_l1():
    prediction, target = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(
        feature_regression(prediction, target), F.l1_loss(prediction, target)
    )


def test_layer_normed_matches_functional_layer_norm():
    torch.manual_seed(0)
    tokens = torch.randn(2, 5, 32) * 4 + 2
    got = layer_normed(tokens)
    torch.testing.assert_close(got, F.layer_norm(tokens, (32,)))
    torch.testing.assert_close(got.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3, rtol=0)
