"""What an encoder offers besides its tokens, declared as timm's `feature_info` does.

`feature_info` (a `FeatureInfo`) says how many intermediate layers an encoder has and whether
it gives a pyramid of feature maps (a `MultiScaleEncoder`, e.g. SparK's sparse CNN), with each
scale's width and stride. A method asks `feature_info(encoder)` for a capability, never the
encoder's class, so an encoder written outside fmtrain plugs in by declaring what it offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["FeatureInfo", "FeatureScale", "MultiScaleEncoder", "feature_info"]


@dataclass(frozen=True)
class FeatureScale:
    """One map of an encoder's pyramid: `width` channels, after a downsampling of `stride`
    per axis from the previous map (from the input for the first)."""

    width: int
    stride: tuple[int, ...]


@dataclass(frozen=True)
class FeatureInfo:
    """What an encoder offers besides its tokens.

    Attributes:
        embed_dim: width of its tokens.
        layers: how many layers `forward_intermediates` indexes (0: it offers none).
        scales: its pyramid, coarsest last (`MultiScaleEncoder.forward_pyramid`); empty when
            it has none.
    """

    embed_dim: int
    layers: int = 0
    scales: tuple[FeatureScale, ...] = ()

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.scales)

    @property
    def strides(self) -> tuple[tuple[int, ...], ...]:
        return tuple(s.stride for s in self.scales)


@runtime_checkable
class MultiScaleEncoder(Protocol):
    """An encoder with a pyramid (`FeatureInfo.scales`): dense masked maps per scale, and the
    visible masks that go with them, for a decoder that reads every scale (SparK's UNet)."""

    def forward_pyramid(
        self, x: torch.Tensor, keep: torch.Tensor | None = None
    ) -> list[torch.Tensor]: ...

    def scale_masks(
        self, keep: torch.Tensor | None, grid_shape: Any = None
    ) -> list[torch.Tensor | None]: ...


def feature_info(encoder: nn.Module) -> FeatureInfo:
    """The encoder's declared `feature_info`; for one that declares nothing, tokens only."""
    info = getattr(encoder, "feature_info", None)
    if isinstance(info, FeatureInfo):
        if info.scales and not isinstance(encoder, MultiScaleEncoder):
            raise TypeError(
                f"{type(encoder).__name__} declares {len(info.scales)} pyramid scale(s) but "
                "has no forward_pyramid(x, keep) and scale_masks(keep, grid_shape)"
            )
        return info
    return FeatureInfo(embed_dim=int(encoder.embed_dim))
