"""Shapes through the encoder and predictor for 1D, 2D and 3D token grids."""

import pytest
import torch

from fmtrain.core import TokenGrid
from fmtrain.nn import JEPAPredictor, VisionTransformer
from fmtrain.nn.posembed import sincos_position_embedding


def test_grid_rejects_indivisible_input_naming_both_keys_and_a_fix():
    with pytest.raises(ValueError) as err:
        TokenGrid.from_sizes((64, 380, 384), (4, 16, 16))
    msg = str(err.value)
    assert "data.input_size" in msg and "model.patch_size" in msg
    assert "368 or 384" in msg  # nearest valid sizes for the bad axis


def test_grid_rejects_rank_mismatch():
    with pytest.raises(ValueError, match="same number of axes"):
        TokenGrid.from_sizes((64, 384), (4, 16, 16))


@pytest.mark.parametrize("grid_shape", [(7,), (5, 6), (3, 4, 5)])
def test_sincos_embedding_has_one_distinct_row_per_token(grid_shape):
    pos = sincos_position_embedding(grid_shape, 48)
    n = torch.tensor(grid_shape).prod().item()
    assert pos.shape == (n, 48)
    assert torch.cdist(pos, pos).add(torch.eye(n) * 1e3).min() > 1e-3  # no two tokens alike


@pytest.mark.parametrize(
    ("input_size", "patch_size", "channels"),
    [((1000,), (25,), 12), ((32, 48), (8, 8), 3), ((16, 64, 64), (2, 8, 8), 1)],
)
def test_encoder_returns_tokens_and_predictor_maps_back(input_size, patch_size, channels):
    grid = TokenGrid.from_sizes(input_size, patch_size)
    enc = VisionTransformer.from_size("vit_test", grid=grid, in_chans=channels)
    pred = JEPAPredictor(grid=grid, encoder_dim=64, embed_dim=32, depth=1, num_heads=2)
    x = torch.randn(2, channels, *input_size)
    tokens = enc(x)
    assert tokens.shape == (2, grid.num_tokens, 64)
    ctx = torch.stack([torch.randperm(grid.num_tokens)[:5].sort().values for _ in range(2)])
    tgt = torch.stack([torch.arange(grid.num_tokens)[-3:]] * 2)
    z = enc(x, keep=ctx)
    assert z.shape == (2, 5, 64)
    assert pred(z, ctx, tgt).shape == (2, 3, 64)


def test_production_geometry_on_meta_device():
    """64x384x384 / 4x16x16 -> 9,216 tokens through ViT-B, without computing anything."""
    grid = TokenGrid.from_sizes((64, 384, 384), (4, 16, 16))
    assert grid.shape == (16, 24, 24) and grid.num_tokens == 9216
    with torch.device("meta"):
        enc = VisionTransformer.from_size("vit_base", grid=grid)
        pred = JEPAPredictor(grid=grid, encoder_dim=768, embed_dim=384, depth=12, num_heads=12)
        x = torch.empty(2, 1, 64, 384, 384)
        assert enc(x).shape == (2, 9216, 768)
        ctx = torch.zeros(2, 3000, dtype=torch.long)
        tgt = torch.zeros(2, 6216, dtype=torch.long)
        assert pred(enc(x, keep=ctx), ctx, tgt).shape == (2, 6216, 768)


def test_keep_selects_the_same_embedded_tokens_as_full_then_gather():
    grid = TokenGrid.from_sizes((8, 16, 16), (2, 4, 4))
    enc = VisionTransformer.from_size("vit_test", grid=grid)
    x = torch.randn(2, 1, 8, 16, 16)
    keep = torch.tensor([[0, 5, 63], [1, 2, 62]])
    full = enc.embed(x)
    assert torch.equal(enc.embed(x, keep), torch.stack([full[0, keep[0]], full[1, keep[1]]]))


def test_activation_checkpointing_gives_identical_outputs_and_gradients():
    grid = TokenGrid.from_sizes((8, 16, 16), (2, 4, 4))
    torch.manual_seed(0)
    enc = VisionTransformer.from_size("vit_test", grid=grid)
    x = torch.randn(2, 1, 8, 16, 16)
    enc(x).square().mean().backward()
    plain = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.set_grad_checkpointing(True)
    enc(x).square().mean().backward()
    for g0, p in zip(plain, enc.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g0)
