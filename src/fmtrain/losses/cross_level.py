"""Cross-level terms of hierarchical masked modeling (MiM): the same place, seen at two levels.

A level is a region of the token grid (level 0 the whole grid, level l + 1 a box inside
level l; `fmtrain.masks.HierarchicalMask`). Both terms below compare a child level with its
parent at the SAME location, never pooled images across the batch (the bug that made a
home-grown "cross-level" loss a batch-level contrastive loss that ignored geometry):

- `location_cross_entropy` — MiM's published term (Zhuang et al., "MiM: Mask in Mask
  self-supervised pre-training for 3D medical image analysis"): the child region's pooled
  features must pick out where the child lies inside its parent, among every candidate box
  of the child's size in the parent (cross-entropy over candidates on cosine logits; the
  parent side is detached, as in the authors' code). `byol_location_loss` is the variant
  their code offers (`attn_loss_name: byol`): 2 - 2 cos between a prediction from the child
  and the stop-gradient parent features at the true location only.
- `spatial_info_nce` — not in the paper: an InfoNCE between the features of one token
  location (d, h, w) at two adjacent levels. Positives: the same location, visible at both
  levels; negatives: the parent's other visible locations of the same sample.

Features arrive as the encoder returns them, visible tokens only: [B, K, D] with their
flat indices into the FULL token grid, int64 [B, K].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fmtrain.masks.regions import crop_boxes, ravel_coordinates

__all__ = [
    "byol_location_loss",
    "candidate_boxes",
    "location_cross_entropy",
    "location_label",
    "location_logits",
    "scatter_to_grid",
    "spatial_info_nce",
]

_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def scatter_to_grid(
    features: torch.Tensor, index: torch.Tensor, grid: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Visible tokens -> a dense map and its visibility.

    Args:
        features: [B, K, D] features of the visible tokens.
        index: int64 [B, K] their flat (row-major) indices into `grid`.
        grid: token grid shape.

    Returns:
        (dense [B, D, *grid] with zeros where nothing is visible, visible float [B, 1, *grid]).
    """
    b, _, d = features.shape
    n = math.prod(grid)
    dense = features.new_zeros(b, n, d).scatter(1, index[..., None].expand(-1, -1, d), features)
    visible = features.new_zeros(b, n).scatter(1, index, 1.0)
    return dense.transpose(1, 2).reshape(b, d, *grid), visible.view(b, 1, *grid)


def candidate_boxes(
    dense: torch.Tensor,
    visible: torch.Tensor,
    parent_start: torch.Tensor,
    parent_shape: Sequence[int],
    child_shape: Sequence[int],
) -> torch.Tensor:
    """Mean visible feature of every child-sized box inside each sample's parent region.

    Args:
        dense, visible: `scatter_to_grid` of the parent level.
        parent_start: int64 [B, ndim] first token of each parent region.
        parent_shape, child_shape: region edges per axis (child <= parent).

    Returns:
        [B, M, D], M = prod(parent - child + 1), candidates in row-major order of their
        start offset inside the parent; a box with no visible token gets zeros.
    """
    pool = _POOLS[len(child_shape)]
    parent_feat = crop_boxes(dense, parent_start, parent_shape)
    parent_vis = crop_boxes(visible, parent_start, parent_shape)
    # Box means over visible tokens only: pooled sums of features over pooled counts.
    total = pool(parent_feat, kernel_size=tuple(child_shape), stride=1)
    count = pool(parent_vis, kernel_size=tuple(child_shape), stride=1)
    means = total / count.clamp_min(1e-6) * (count > 0)
    return means.flatten(2).transpose(1, 2)


def location_label(
    child_start: torch.Tensor,
    parent_start: torch.Tensor,
    parent_shape: Sequence[int],
    child_shape: Sequence[int],
) -> torch.Tensor:
    """Index (int64 [B]) of the true child box among `candidate_boxes`' candidates."""
    counts = [p - c + 1 for p, c in zip(parent_shape, child_shape, strict=True)]
    return ravel_coordinates(child_start - parent_start, counts)


def location_logits(
    query: torch.Tensor, candidates: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Cosine similarity of a query [B, D] with each candidate [B, M, D], over temperature."""
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(candidates.float(), dim=-1)
    return torch.einsum("bd,bmd->bm", q, k) / temperature


def location_cross_entropy(
    query: torch.Tensor, candidates: torch.Tensor, label: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """MiM's cross-level term: the child's query must find its own box among the parent's.

    Args:
        query: [B, D] pooled child-level features (after a projection).
        candidates: [B, M, D] from `candidate_boxes` on the parent level (detach it: MiM
            trains the child to locate itself, not the parent to be located).
        label: int64 [B] from `location_label`.
        temperature: MiM uses plain cosine logits, i.e. 1.0; lower sharpens.
    """
    return F.cross_entropy(location_logits(query, candidates, temperature), label)


def byol_location_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MiM's BYOL-style variant: mean of 2 - 2 cos(prediction, stop-gradient target), [B, D]."""
    p = F.normalize(prediction.float(), dim=-1)
    z = F.normalize(target.detach().float(), dim=-1)
    return (2.0 - 2.0 * (p * z).sum(-1)).mean()


def spatial_info_nce(
    child: torch.Tensor,
    child_index: torch.Tensor,
    parent: torch.Tensor,
    parent_index: torch.Tensor,
    temperature: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE between the same token location at a child and its parent level.

    Args:
        child: [B, Kc, D] child-level features of its visible tokens; `child_index` [B, Kc].
        parent: [B, Kp, D] parent-level features of its visible tokens; `parent_index` [B, Kp].
        temperature: softmax temperature on cosine similarities.

    Returns:
        (loss, anchors): the mean over every child token also visible at the parent level,
        whose positive is that parent token and whose negatives are the parent's other
        visible tokens of the same sample; a zero loss (with a graph) when no location is
        visible at both levels. `anchors` is a 0-d tensor, left on the device.
    """
    # Every child token gets a term, weighted 1 when its location is visible at the parent
    # and 0 when not: the anchors are never counted on the host, and the shapes stay fixed.
    same = child_index[:, :, None] == parent_index[:, None, :]  # [B, Kc, Kp]
    weight = same.any(-1).float()  # [B, Kc]
    target = same.float().argmax(-1)  # the parent position of each anchor's location
    c = F.normalize(child.float(), dim=-1)
    p = F.normalize(parent.float(), dim=-1)
    logits = torch.einsum("bkd,bjd->bkj", c, p) / temperature
    terms = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
    anchors = weight.sum()
    return (terms * weight.flatten()).sum() / anchors.clamp_min(1.0), anchors
