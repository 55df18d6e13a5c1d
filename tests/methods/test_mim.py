"""MiM on SparK and ViT encoders: shapes and losses at every input size, locality of the
finer levels, learning on a fixed batch, and refusals that name the recipe key."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fmtrain.masks import HierarchicalMask, RandomPatch
from fmtrain.methods.configs import DecoderConfig
from fmtrain.methods.mim import CrossLevelConfig, MiMModule
from fmtrain.nn.encoder import EncoderSpec, ViTEncoder
from fmtrain.nn.features import FeatureInfo, FeatureScale, feature_info
from fmtrain.nn.sparse_cnn import SparseCNNEncoder

OCT_STRIDES = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 1, 1))  # patch 4x8x8
STRIDES_8 = ((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1))  # patch 8^3

CASES = {
    "spark-32": (SparseCNNEncoder(size="test", strides=STRIDES_8), (32, 32, 32), (8, 8, 8), 2),
    "spark-64": (SparseCNNEncoder(size="test"), (64, 64, 64), (16, 16, 16), 2),
    "spark-128": (SparseCNNEncoder(size="test"), (128, 128, 128), (16, 16, 16), 3),
    "spark-oct": (SparseCNNEncoder(size="test", strides=OCT_STRIDES), (16, 64, 64), (4, 8, 8), 2),
    "vit-64": (ViTEncoder(size="vit_micro"), (64, 64, 64), (16, 16, 16), 2),
    "vit-oct": (ViTEncoder(size="vit_micro"), (16, 64, 64), (4, 8, 8), 2),
}


def build(case: str, **kwargs) -> tuple[MiMModule, HierarchicalMask]:
    encoder, size, patch, levels = CASES[case]
    module = MiMModule(
        input_size=size,
        patch_size=patch,
        num_mask_families=levels,
        encoder=encoder,
        decoder=DecoderConfig(embed_dim=32, depth=1, num_heads=4),
        **kwargs,
    )
    return module, HierarchicalMask(levels=levels)


def masks(sampler, module, batch, seed=0):
    """Per level: contexts, targets and boxes, as the batch carries them."""
    pairs = sampler.sample(module.grid.shape, batch, np.random.default_rng(seed))
    return [p.context for p in pairs], [p.target for p in pairs], [p.region for p in pairs]


@pytest.mark.parametrize("case", [c for c in CASES if c != "spark-128"])
def test_shapes_and_losses_at_every_size(case):
    torch.manual_seed(0)
    module, sampler = build(case, cross_level=CrossLevelConfig(infonce_weight=0.1))
    contexts, targets, regions = masks(sampler, module, batch=2)
    x = torch.randn(2, 1, *module.grid.input_size)
    out = module.method(x, contexts, targets, regions)
    assert torch.isfinite(out.loss) and out.loss.ndim == 0
    assert len(out.level_losses) == sampler.levels
    assert all(torch.isfinite(v) for v in out.level_losses)
    assert {"location_loss", "location_accuracy", "infonce_loss"} <= set(out.logs)
    encoder = module.evaluation_encoder()
    assert out.features.shape == (2, contexts[0].shape[1], encoder.embed_dim)
    out.loss.backward()
    missing = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    # the evaluation encoder alone encodes the whole grid, as probes use it
    with torch.no_grad():
        tokens = encoder(x)
    assert tokens.shape == (2, module.grid.num_tokens, encoder.embed_dim)


def test_128_cubed_three_levels_forward_shapes():
    """128^3 on a CPU: one sample, forward only (a training step there takes ~20 s)."""
    torch.manual_seed(0)
    module, sampler = build("spark-128")
    contexts, targets, regions = masks(sampler, module, batch=1)
    with torch.no_grad():
        out = module.method(torch.randn(1, 1, 128, 128, 128), contexts, targets, regions)
    assert len(out.level_losses) == 3 and torch.isfinite(out.loss)
    assert out.features.shape[:2] == contexts[0].shape


@pytest.mark.parametrize("grid", [(2, 2, 2), (4, 4, 4)])
def test_small_grids_never_leave_a_level_without_visible_tokens(grid):
    levels = 1 if grid == (2, 2, 2) else 2
    sampler = HierarchicalMask(levels=levels, min_level_tokens=8)
    rng = np.random.default_rng(0)
    for _ in range(200):
        for pair in sampler.sample(grid, 4, rng):
            assert pair.context.shape[1] >= 1 and pair.target.shape[1] >= 1
    with pytest.raises(ValueError, match=r"data\.init_args\.masks\.init_args\.levels"):
        HierarchicalMask(levels=levels + 1).validate(grid)


def test_a_finer_level_reads_only_its_own_box():
    """Level 1 encodes its box: voxels outside it cannot change its features or loss."""
    torch.manual_seed(0)
    module, sampler = build("spark-64")
    module.eval()
    contexts, targets, regions = masks(sampler, module, batch=2, seed=3)
    x = torch.randn(2, 1, 64, 64, 64)
    region = regions[1]
    outside = torch.ones_like(x, dtype=torch.bool)
    for b, start in enumerate(region.start.tolist()):
        box = tuple(slice(16 * s, 16 * (s + e)) for s, e in zip(start, region.shape, strict=True))
        outside[(b, slice(None), *box)] = False
    y = torch.where(outside, torch.randn_like(x) * 5, x)
    with torch.no_grad():
        a = module.method.level(x, region, contexts[1], targets[1], module.grid.shape)
        b = module.method.level(y, region, contexts[1], targets[1], module.grid.shape)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


@pytest.mark.parametrize(
    ("case", "location_loss"), [("spark-oct", "cross_entropy"), ("vit-oct", "byol")]
)
def test_learns_on_a_fixed_batch(case, location_loss):
    torch.manual_seed(0)
    cross = CrossLevelConfig(location_loss=location_loss, infonce_weight=0.1)
    module, sampler = build(case, cross_level=cross)
    contexts, targets, regions = masks(sampler, module, batch=4)
    # smooth inputs: something a reconstruction can learn in a few steps
    x = torch.nn.functional.avg_pool3d(torch.randn(4, 1, 16, 64, 64), 5, 1, 2)
    opt = torch.optim.AdamW(module.method.parameters(), lr=2e-3)
    first = None
    for _ in range(25):
        out = module.method(x, contexts, targets, regions)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = float(out.loss.detach()) if first is None else first
    assert float(out.loss.detach()) < 0.8 * first


def test_refusals_name_the_key():
    with pytest.raises(ValueError, match=r"model\.init_args\.level_weights"):
        build("spark-64", level_weights=[1.0])
    with pytest.raises(ValueError, match=r"model\.init_args\.level_weights"):
        build("spark-64", level_weights=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"cross_level\.location_temperature"):
        CrossLevelConfig(location_temperature=0.0)
    with pytest.raises(ValueError, match=r"cross_level\.infonce_weight"):
        CrossLevelConfig(infonce_weight=float("nan"))
    module, _ = build("spark-64")
    pairs = RandomPatch(ratio=0.6).sample(module.grid.shape, 2, np.random.default_rng(0))
    x = torch.randn(2, 1, 64, 64, 64)
    # masks drawn over the whole grid carry no box: not levels MiM can nest
    with pytest.raises(ValueError, match="HierarchicalMask"):
        module.method(x, [pairs[0].context] * 2, [pairs[0].target] * 2, [pairs[0].region] * 2)
    with pytest.raises(ValueError, match=r"\d level\(s\) but the batch carries 1"):
        module.forward_batch(type("B", (), {"contexts": [pairs[0].context], "targets": []})())


def test_vit_levels_do_not_reveal_where_their_box_was_cut():
    """The ViT encodes a finer level's box at the grid's origin: the same content cut at two
    places gives the same features, so the location term cannot read position embeddings."""
    torch.manual_seed(0)
    module, _ = build("vit-64")
    module.eval()
    from fmtrain.masks.regions import LevelRegion

    grid = module.grid.shape  # 4x4x4 tokens of 16^3
    content = torch.randn(1, 1, 32, 32, 32)
    x = torch.randn(1, 1, 64, 64, 64)
    y = x.clone()
    x[..., :32, :32, :32] = content  # box at token (0, 0, 0)
    y[..., 32:, 32:, 32:] = content  # the same box at token (2, 2, 2)
    local = torch.tensor([0, 3, 5])  # visible tokens of the 2x2x2 box, the rest hidden
    hidden = torch.tensor([1, 2, 4, 6, 7])

    def full(start):
        coords = torch.stack(torch.unravel_index(torch.arange(8), (2, 2, 2)), -1) + start
        flat = (coords[:, 0] * grid[1] + coords[:, 1]) * grid[2] + coords[:, 2]
        return flat[local][None], flat[hidden][None]

    with torch.no_grad():
        outs = []
        for inputs, start in ((x, 0), (y, 2)):
            region = LevelRegion(start=torch.full((1, 3), start), shape=(2, 2, 2))
            context, target = full(start)
            outs.append(module.method.level(inputs, region, context, target, grid))
    torch.testing.assert_close(outs[0][1], outs[1][1])
    torch.testing.assert_close(outs[0][0], outs[1][0])


class _OutsidePyramid(torch.nn.Module):
    """A multi-scale encoder that is not fmtrain's class: it wraps one and declares what it
    offers, as an encoder written outside fmtrain would."""

    def __init__(self, inner: torch.nn.Module, declare_pyramid: bool = True) -> None:
        super().__init__()
        self.inner, self.embed_dim = inner, inner.embed_dim
        info = inner.feature_info
        self.feature_info = info if declare_pyramid else FeatureInfo(embed_dim=info.embed_dim)

    def forward_pyramid(self, x, keep=None):
        return self.inner.forward_pyramid(x, keep)

    def scale_masks(self, keep, grid_shape=None):
        return self.inner.scale_masks(keep, grid_shape)

    def forward(self, x, keep=None):
        return self.inner(x, keep)

    def no_weight_decay(self) -> set[str]:
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.inner.set_grad_checkpointing(enable)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _OutsideSpec(EncoderSpec):
    declare_pyramid: bool = True

    def build(self, grid, in_chans):
        inner = SparseCNNEncoder(size="test", strides=STRIDES_8).build(grid, in_chans)
        return _OutsidePyramid(inner, self.declare_pyramid)


@pytest.mark.parametrize("declare_pyramid", [True, False])
def test_mim_asks_the_encoder_for_a_pyramid_not_for_its_class(declare_pyramid):
    torch.manual_seed(0)
    module = MiMModule(
        input_size=(32, 32, 32),
        patch_size=(8, 8, 8),
        num_mask_families=2,
        encoder=_OutsideSpec(declare_pyramid=declare_pyramid),
        decoder=DecoderConfig(embed_dim=32, depth=1, num_heads=4),
    )
    level = type(module.method.level).__name__
    assert level == ("SparKLevel" if declare_pyramid else "TokenLevel")
    if declare_pyramid:
        contexts, targets, regions = masks(HierarchicalMask(levels=2), module, batch=2)
        out = module.method(torch.randn(2, 1, 32, 32, 32), contexts, targets, regions)
        assert torch.isfinite(out.loss)


def test_a_declared_pyramid_without_its_methods_is_refused():
    class Declares(torch.nn.Module):
        embed_dim = 8
        feature_info = FeatureInfo(embed_dim=8, scales=(FeatureScale(8, (2, 2, 2)),))

    with pytest.raises(TypeError, match="forward_pyramid"):
        feature_info(Declares())
