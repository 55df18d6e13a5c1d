"""Dense probes: Dice arithmetic, learning from informative tokens, determinism, shapes, errors."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fmtrain.core.grid import TokenGrid
from fmtrain.eval.dense_probe import (
    DenseProbeConfig,
    DenseProbeHead,
    compare_dense,
    dense_probe,
    dice_per_volume,
    format_dense_table,
    token_feature_maps,
    train_dense_probe,
)
from fmtrain.nn.vit import VisionTransformer

GRID = TokenGrid.from_sizes((8, 16, 16), (2, 4, 4))
CLASSES = ("background", "bright", "fluid")


class PatchEncoder(nn.Module):
    """Tokens = the voxels of each patch (informative) or seeded noise (uninformative)."""

    def __init__(self, grid: TokenGrid, informative: bool, seed: int = 0) -> None:
        super().__init__()
        self.grid, self.informative, self.seed = grid, informative, seed
        self.scale = nn.Parameter(torch.ones(()))  # so the encoder has a device and a mode

    def forward_intermediates(self, x: torch.Tensor, layers) -> list[torch.Tensor]:
        pd, ph, pw = self.grid.patch_size
        gd, gh, gw = self.grid.shape
        patches = x[:, 0].reshape(len(x), gd, pd, gh, ph, gw, pw)
        tokens = patches.permute(0, 1, 3, 5, 2, 4, 6).reshape(len(x), gd * gh * gw, -1)
        if not self.informative:
            generator = torch.Generator().manual_seed(self.seed)
            tokens = torch.randn(tokens.shape, generator=generator).expand_as(tokens)
        return [tokens * self.scale for _ in layers]


def _smooth_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random volumes [n, 1, 8, 16, 16]; label 1 where the first channel is above 0."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, 2, 4, 4, generator=generator)
    x = F.interpolate(coarse, size=GRID.input_size, mode="trilinear", align_corners=False)
    return x.numpy(), (x[:, 0] > 0).long().numpy()


FAST = DenseProbeConfig(steps=60)


def test_dice_perfect_disjoint_absent_and_partial() -> None:
    target = np.array([[[0, 1, 1, 0]], [[2, 2, 0, 0]]])
    assert np.array_equal(dice_per_volume(target, target, 3)[0, :2], [1.0, 1.0])
    disjoint = np.array([[[1, 0, 0, 1]], [[0, 0, 2, 2]]])
    dice = dice_per_volume(disjoint, target, 3)
    assert dice[0, 1] == 0.0 and dice[1, 2] == 0.0
    # Class 2 is in neither prediction nor truth of volume 0; class 1 in neither in volume 1.
    assert math.isnan(dice[0, 2]) and math.isnan(dice[1, 1])
    partial = dice_per_volume(np.array([[0, 1, 1, 0]]), np.array([[0, 1, 0, 0]]), 2)
    assert partial[0].tolist() == pytest.approx([2 * 2 / 5, 2 * 1 / 3])


def test_dice_refuses_mismatched_shapes_and_out_of_range_ids() -> None:
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 5\)"):
        dice_per_volume(np.zeros((2, 4), int), np.zeros((2, 5), int), 2)
    with pytest.raises(ValueError, match="outside"):
        dice_per_volume(np.full((1, 3), 3), np.zeros((1, 3), int), 2)


@pytest.fixture(scope="module")
def probed() -> tuple[dict, list[dict]]:
    train_x, train_y = _smooth_task(24, seed=0)
    test_x, test_y = _smooth_task(10, seed=1)
    kwargs = {"config": FAST, "lesion_classes": ("fluid",), "n_boot": 200}
    informative = dense_probe(
        PatchEncoder(GRID, True), train_x, train_y, test_x, test_y, CLASSES, **kwargs
    )
    randoms = [
        dense_probe(
            PatchEncoder(GRID, False, s), train_x, train_y, test_x, test_y, CLASSES, **kwargs
        )
        for s in (0, 1)
    ]
    return informative, randoms


def test_informative_tokens_beat_random_ones(probed) -> None:
    informative, randoms = probed
    good = informative["layers"]["-1"]["scores"]["bright"]
    bad = randoms[0]["layers"]["-1"]["scores"]["bright"]
    assert good["value"] > 0.8
    assert good["value"] > bad["value"] + 0.2
    assert good["low"] <= good["value"] <= good["high"]
    # The absent lesion class has no Dice, and the lesion summary neither.
    assert math.isnan(informative["layers"]["-1"]["scores"]["fluid"]["value"])
    assert math.isnan(informative["layers"]["-1"]["scores"]["lesions"]["value"])
    assert informative["summaries"] == {
        "mean_foreground": ["bright", "fluid"],
        "lesions": ["fluid"],
    }


def test_comparison_finds_the_gap_and_serialises(probed) -> None:
    informative, randoms = probed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # absent classes give NaN rows quietly
        comparison = compare_dense(informative, randoms, n_boot=200)
    rows = {row["name"]: row for row in comparison["layers"]["-1"]}
    assert list(rows) == [*CLASSES, "mean_foreground", "lesions"]
    assert rows["bright"]["excludes_zero"] and rows["bright"]["difference"]["low"] > 0
    assert rows["mean_foreground"]["difference"]["value"] == pytest.approx(
        rows["bright"]["difference"]["value"]
    )
    assert not rows["fluid"]["excludes_zero"]
    json.loads(json.dumps(comparison))
    table = format_dense_table(comparison)
    assert "| class | pretrained Dice [95% CI] | random Dice [95% CI] | difference [95% CI] |" in (
        table
    )
    assert "| fluid | n/a | n/a | n/a |" in table
    assert "| bright |" in table and " * |" in table


def test_comparison_refuses_other_test_volumes(probed) -> None:
    informative, randoms = probed
    other = {**randoms[0], "groups": randoms[0]["groups"][:-1]}
    with pytest.raises(ValueError, match="groups"):
        compare_dense(informative, [other])


def test_trained_probe_is_deterministic_for_a_seed() -> None:
    x, y = _smooth_task(12, seed=2)
    (features,) = token_feature_maps(PatchEncoder(GRID, True), x)
    first = train_dense_probe(features, torch.as_tensor(y), 2, FAST)
    again = train_dense_probe(features, torch.as_tensor(y), 2, FAST)
    other = train_dense_probe(features, torch.as_tensor(y), 2, DenseProbeConfig(steps=60, seed=1))
    assert torch.equal(first.linear.weight, again.linear.weight)
    assert not torch.equal(first.linear.weight, other.linear.weight)


def test_feature_maps_follow_the_row_major_token_grid() -> None:
    grid = TokenGrid.from_sizes((4, 32, 16), (2, 8, 8))  # anisotropic grid (2, 4, 2)

    class Indexer(PatchEncoder):
        def forward_intermediates(self, x, layers):
            index = torch.arange(grid.num_tokens, dtype=torch.float32)
            return [index[None, :, None].expand(len(x), -1, 3) for _ in layers]

    (maps,) = token_feature_maps(Indexer(grid, True), np.zeros((5, 4, 32, 16)))
    assert maps.shape == (5, 3, 2, 4, 2)
    expected = torch.arange(grid.num_tokens, dtype=torch.float32).reshape(2, 4, 2)
    assert torch.equal(maps[0, 0], expected)


def test_vit_features_and_head_on_an_anisotropic_grid() -> None:
    grid = TokenGrid.from_sizes((4, 32, 16), (2, 8, 8))
    vit = VisionTransformer(grid=grid, embed_dim=32, depth=2, num_heads=2).train()
    x = torch.randn(3, 1, *grid.input_size)
    maps = token_feature_maps(vit, x, layers=(0, -1), batch_size=2)
    assert [m.shape for m in maps] == [(3, 32, 2, 4, 2)] * 2
    assert vit.training, "the encoder's training flag must be restored"
    labels = torch.randint(0, 4, (3, *grid.input_size))
    head = train_dense_probe(maps[1], labels, 4, DenseProbeConfig(steps=2))
    assert head(maps[1]).shape == (3, 4, *grid.input_size)


def test_mismatched_labels_and_volumes_name_both_shapes() -> None:
    x, y = _smooth_task(6, seed=3)
    encoder = PatchEncoder(GRID, True)
    with pytest.raises(ValueError, match=r"train_labels has shape \(5, 8, 16, 16\).*\(6, 1, 8"):
        dense_probe(encoder, x, y[:5], x, y, CLASSES[:2], config=FAST)
    with pytest.raises(ValueError, match=r"test_labels has shape \(6, 8, 16, 8\).*\(6, 1, 8"):
        dense_probe(encoder, x, y, x, y[..., :8], CLASSES[:2], config=FAST)
    with pytest.raises(ValueError, match=r"features have shape \(6, 32, 4, 4, 4\).*\(5, 8"):
        train_dense_probe(torch.zeros(6, 32, 4, 4, 4), torch.zeros(5, 8, 16, 16).long(), 2)
    with pytest.raises(ValueError, match=r"volumes has shape \(6, 1, 8, 16, 8\)"):
        token_feature_maps(encoder, x[..., :8])


def _stripes_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Thin bright layers inside each token: row 1 of every 4-row patch is bright where a
    coarse field is positive. Structure smaller than a token, known exactly by its voxels."""
    generator = torch.Generator().manual_seed(seed)
    on = torch.randn(n, 1, *GRID.shape, generator=generator) > 0
    voxels = on.repeat_interleave(2, 2).repeat_interleave(4, 3).repeat_interleave(4, 4)
    row_in_patch = torch.arange(GRID.input_size[1]) % 4 == 1
    labels = (voxels[:, 0] & row_in_patch[None, None, :, None]).long()
    x = labels[:, None].float() + 0.05 * torch.randn(labels[:, None].shape, generator=generator)
    return x.numpy(), labels.numpy()


def test_per_voxel_head_draws_structure_inside_a_token_the_upsampled_head_cannot() -> None:
    train_x, train_y = _stripes_task(24, 0)
    test_x, test_y = _stripes_task(12, 1)
    encoder = PatchEncoder(GRID, informative=True)
    scores = {}
    for head in ("upsampled", "per_voxel"):
        result = dense_probe(
            encoder, train_x, train_y, test_x, test_y, ("background", "layer"),
            config=DenseProbeConfig(steps=150, head=head), n_boot=50,
        )  # fmt: skip
        assert result["head"] == head
        scores[head] = result["layers"]["-1"]["scores"]["layer"]["value"]
    # the same tokens; only the per-voxel head can put the layer on its row
    assert scores["per_voxel"] > 0.95
    assert scores["upsampled"] < 0.6


def test_per_voxel_head_orders_voxels_as_the_encoder_patchifies() -> None:
    """Channel j * classes + c of a token is class c at voxel j (row-major) of its own patch:
    the layout of the tokens' own patchify (fmtrain.losses.regression)."""
    grid, patch, classes = (2, 3, 4), (2, 2, 3), 2
    size = tuple(g * p for g, p in zip(grid, patch, strict=True))
    head = DenseProbeHead(torch.zeros(5), torch.ones(5), classes, grid, size, kind="per_voxel")
    with torch.no_grad():  # zero weights: every token outputs its bias, the channel index
        head.linear.bias.copy_(torch.arange(12 * classes, dtype=torch.float32))
    out = head(torch.zeros(1, 5, *grid))[0]
    for voxel in [(0, 0, 0), (1, 2, 5), (3, 5, 11), (2, 4, 7)]:
        offset = [v % p for v, p in zip(voxel, patch, strict=True)]
        j = (offset[0] * patch[1] + offset[1]) * patch[2] + offset[2]
        for c in range(classes):
            assert out[(c, *voxel)] == j * classes + c


def test_per_voxel_head_refuses_a_grid_that_does_not_tile_the_voxels() -> None:
    with pytest.raises(ValueError, match=r"whole number of patches.*upsampled"):
        DenseProbeHead(torch.zeros(3), torch.ones(3), 2, (2, 3), (5, 6), kind="per_voxel")
    with pytest.raises(ValueError, match="head must be one of"):
        DenseProbeConfig(head="pixelshuffle")  # type: ignore[arg-type]


def test_compare_dense_refuses_heads_of_different_kinds(probed) -> None:
    pretrained, randoms = probed
    other = dict(randoms[0], head="per_voxel")
    with pytest.raises(ValueError, match="head"):
        compare_dense(pretrained, [other], n_boot=20)
