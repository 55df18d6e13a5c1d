"""SparK sparse CNN: hidden voxels never reach visible features; shapes; recipe errors."""

from __future__ import annotations

import pytest
import torch

from fmtrain.core import TokenGrid
from fmtrain.nn import Encoder, SparseCNNEncoder
from fmtrain.nn.sparse_cnn import SparseCNN3d, SparseNorm, keep_to_mask, upsample_mask
from fmtrain.nn.sparse_decoder import SparKDecoder

OCT_STRIDES = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))


def random_keep(batch: int, num_tokens: int, count: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(num_tokens, generator=g)[:count] for _ in range(batch)])


def build(input_size, patch_size=(16, 16, 16), *, size="test", **kw) -> SparseCNN3d:
    grid = TokenGrid.from_sizes(input_size, patch_size)
    return SparseCNNEncoder(size=size, **kw).build(grid, in_chans=2)


@pytest.mark.parametrize(
    ("norm", "train"), [("batch", True), ("batch", False), ("instance", True), ("layer", True)]
)
@pytest.mark.parametrize(
    ("input_size", "patch_size", "strides"),
    [((16, 32, 64), (16, 16, 16), None), ((8, 32, 64), (4, 16, 16), OCT_STRIDES)],
)
def test_hidden_voxels_never_change_visible_features(norm, train, input_size, patch_size, strides):
    torch.manual_seed(0)
    enc = build(input_size, patch_size, norm=norm, strides=strides).train(train)
    b, n = 2, enc.grid.num_tokens
    keep = random_keep(b, n, n * 3 // 8)
    masks = enc.scale_masks(keep)
    x = torch.randn(b, 2, *input_size)
    hidden = ~masks[0].expand_as(x)
    x2 = x.clone()
    x2[hidden] = torch.randn(int(hidden.sum())) * 1e6  # huge values
    x2[hidden & (torch.rand_like(x) < 0.01)] = float("inf")  # and some infinities
    with torch.no_grad():
        ref, alt = enc.forward_pyramid(x, keep), enc.forward_pyramid(x2, keep)
        dense_ref = enc.forward_pyramid(x)  # no keep: every voxel counts
    assert len(ref) == 4
    for stage, (a, c, m) in enumerate(zip(ref, alt, masks[1:], strict=True)):
        m = m.expand_as(a)
        assert torch.isfinite(c).all(), f"stage {stage}: non-finite features"
        assert (a[~m] == 0).all() and (c[~m] == 0).all(), f"stage {stage}: hidden not zero"
        torch.testing.assert_close(c[m], a[m], rtol=1e-5, atol=1e-5, msg=f"stage {stage}")
        assert a[m].abs().sum() > 0, f"stage {stage}: visible features are all zero"
        # Hiding voxels must matter at all (the dense pass sees them): masking is not a no-op.
        assert not torch.allclose(dense_ref[stage][m], a[m])


def test_sparse_norm_statistics_ignore_hidden_positions():
    x = torch.randn(2, 4, 4, 4, 4)
    mask = torch.rand(2, 1, 4, 4, 4) < 0.5
    x = torch.where(mask, x, 0.0)
    for kind in ("batch", "instance", "layer"):
        norm = SparseNorm(kind, 4).train()
        out = norm(x, mask)
        assert (out[~mask.expand_as(out)] == 0).all()
        if kind == "batch":
            vis = out.movedim(1, -1)[mask[:, 0]]
            torch.testing.assert_close(vis.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
        if kind == "instance":
            for i in range(2):
                vis = out[i].movedim(0, -1)[mask[i, 0]]
                torch.testing.assert_close(vis.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_keep_mask_upsamples_by_block():
    keep = torch.tensor([[0, 7]])
    mask = upsample_mask(keep_to_mask(keep, (2, 2, 2)), (1, 2, 3))
    assert mask.shape == (1, 1, 2, 4, 6)
    assert mask[0, 0, 0, :2, :3].all() and mask[0, 0, 1, 2:, 3:].all() and mask.sum() == 12


@pytest.mark.parametrize("input_size", [(32, 32, 32), (64, 64, 64)])
def test_shapes_tokens_pyramid_and_decoder(input_size):
    enc = build(input_size)
    assert isinstance(enc, Encoder)
    b, n = (2 if input_size[0] == 32 else 1), enc.grid.num_tokens
    x = torch.randn(b, 2, *input_size)
    assert enc.forward_features(x).shape == (b, n, enc.embed_dim)
    keep = random_keep(b, n, max(n // 4, 1))
    tokens = enc.forward_features(x, keep)
    assert tokens.shape == (b, keep.shape[1], enc.embed_dim)
    pyramid = enc.forward_pyramid(x, keep)
    sizes = [tuple(s // 2**i for s in input_size) for i in (1, 2, 3, 4)]
    assert [tuple(p.shape[2:]) for p in pyramid] == sizes
    assert [p.shape[1] for p in pyramid] == list(enc.widths)
    # Tokens are the deepest cells in row-major order of the token grid.
    deepest = pyramid[-1].flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, torch.gather(deepest, 1, keep[..., None].expand_as(tokens)))
    inter = enc.forward_intermediates(x, [0, -1], keep)
    assert [t.shape for t in inter] == [(b, keep.shape[1], w) for w in (enc.widths[0], 32)]
    dec = SparKDecoder(enc.widths, out_chans=2, width=32)
    assert dec(pyramid, enc.scale_masks(keep)[1:]).shape == x.shape
    if b == 2:  # dense (fine-tuning) path: no masks
        assert dec(enc.forward_pyramid(x)).shape == x.shape


def test_anisotropic_oct_strides():
    enc = build((16, 64, 64), (4, 16, 16), strides=OCT_STRIDES)
    x = torch.randn(1, 2, 16, 64, 64)
    keep = random_keep(1, 64, 20)
    assert enc.forward_features(x, keep).shape == (1, 20, enc.embed_dim)
    pyramid = enc.forward_pyramid(x, keep)
    assert [tuple(p.shape[2:]) for p in pyramid] == [
        (16, 32, 32),
        (16, 16, 16),
        (8, 8, 8),
        (4,) * 3,
    ]
    dec = SparKDecoder(enc.widths, out_chans=2, width=32, strides=enc.strides)
    assert dec(pyramid, enc.scale_masks(keep)[1:]).shape == x.shape


def test_128_cube_builds_tiny_and_runs_test_size():
    tiny = build((128, 128, 128), size="tiny")
    assert tiny.embed_dim == 256 and tiny.grid.shape == (8, 8, 8)
    enc = build((128, 128, 128))
    keep = random_keep(1, 512, 200)
    with torch.no_grad():  # about 2 s on 2 CPU cores
        tokens = enc.forward_features(torch.randn(1, 2, 128, 128, 128), keep)
    assert tokens.shape == (1, 200, enc.embed_dim)


def test_grad_checkpointing_matches_plain_backward():
    torch.manual_seed(0)
    enc = build((16, 32, 32), norm="instance")
    x, keep = torch.randn(1, 2, 16, 32, 32), random_keep(1, 4, 2)
    enc(x, keep).square().sum().backward()
    plain = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.set_grad_checkpointing(True)
    enc(x, keep).square().sum().backward()
    for a, c in zip(plain, (p.grad for p in enc.parameters()), strict=True):
        torch.testing.assert_close(c, a)


def test_patch_size_mismatch_names_the_key_and_both_values():
    grid = TokenGrid.from_sizes((64, 64, 64), (4, 16, 16))
    with pytest.raises(ValueError) as err:
        SparseCNNEncoder(size="test").build(grid, in_chans=1)
    msg = str(err.value)
    assert "model.init_args.patch_size" in msg
    assert "[16, 16, 16]" in msg and "[4, 16, 16]" in msg
