"""One encoder interface for volumes, video and signals, and how a recipe chooses one.

An encoder is any `nn.Module` that offers:

- `forward_features(x, keep=None) -> [B, N, D]` tokens (also its `forward`); `keep` holds
  int64 [B, K] indices of the tokens to encode (the others are never seen);
- `forward_intermediates(x, layers, keep=None) -> list of [B, N, D]`;
- `no_weight_decay() -> set[str]` and `set_grad_checkpointing(enable)`;
- `embed_dim`, the width D of its tokens.

What it offers beyond that, it declares (`fmtrain.nn.features`): a method asks for a
capability, never the encoder's class.

A recipe names an `EncoderSpec` (its configuration) under `model.init_args.encoder`, by
`class_path` or, for the built-in ViT, by its fields alone (`encoder: {size: vit_small}`).
The method calls `spec.build(grid, in_chans)`: the grid and channels come from the data,
so the encoder is always built for the inputs it will get. Pooling is never part of an
encoder: see `fmtrain.nn.heads`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from fmtrain.core.grid import TokenGrid
from fmtrain.core.imports import import_object
from fmtrain.nn.checkpointing import checked_setting

__all__ = ["Encoder", "EncoderSpec", "ViTEncoder", "spec_from_config", "spec_to_config"]


@runtime_checkable
class Encoder(Protocol):
    """The methods every encoder offers (see the module docstring)."""

    embed_dim: int

    def forward_features(
        self, x: torch.Tensor, keep: torch.Tensor | None = None
    ) -> torch.Tensor: ...

    def forward_intermediates(
        self, x: torch.Tensor, layers: list[int], keep: torch.Tensor | None = None
    ) -> list[torch.Tensor]: ...

    def no_weight_decay(self) -> set[str]: ...

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...


class EncoderSpec:
    """Base class of encoder configurations. Subclasses are keyword-only dataclasses
    (so recipes are typed and their fields JSON-serialisable) with a `build` method."""

    # where the spec sits in a recipe, for messages (a restoration network overrides it)
    recipe_key = "model.init_args.encoder.init_args"

    def __post_init__(self) -> None:
        rate = getattr(self, "drop_path", 0.0)
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and 0 <= rate < 1):
            raise ValueError(
                f"{self.recipe_key}.drop_path={rate}: expected a stochastic-depth rate in "
                "[0, 1) (0.1 is usual)"
            )

    def build(self, grid: TokenGrid, in_chans: int) -> nn.Module:
        """Build the encoder for `grid` and `in_chans` input channels."""
        raise NotImplementedError


def spec_to_config(spec: EncoderSpec) -> dict[str, Any]:
    """`{"class_path", "init_args"}` of a dataclass spec: JSON for export, a recipe's form."""
    if not dataclasses.is_dataclass(spec):
        raise TypeError(f"{type(spec).__name__} must be a dataclass to be saved with a model")
    cls = type(spec)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": _jsonable(spec)}


def _jsonable(spec: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(spec):
        if f.init:
            value = getattr(spec, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def spec_from_config(config: dict[str, Any]) -> EncoderSpec:
    """Rebuild a spec saved by `spec_to_config` (imports its class by path)."""
    cls = import_object(config["class_path"])
    return cls(**config.get("init_args", {}))


@dataclass(frozen=True, kw_only=True)
class ViTEncoder(EncoderSpec):
    """The built-in Vision Transformer over 1D, 2D or 3D token grids.

    Args:
        size: registered size (`vit_test` is a 2-block debug model; see `VIT_SIZES`).
        drop_path: stochastic depth rate of the last block.
        activation_checkpointing: recompute block activations in backward (less memory,
            about a third more compute for the blocks that do): true for every block, false
            for none, a number of blocks (e.g. 6) or a fraction of them (e.g. 0.5), spread
            evenly over the encoder and, with the same setting, over the predictor/decoder.
    """

    size: Literal["vit_test", "vit_micro", "vit_tiny", "vit_small", "vit_base", "vit_large"] = (
        "vit_base"
    )
    drop_path: float = 0.0
    activation_checkpointing: bool | int | float = False

    def __post_init__(self) -> None:
        super().__post_init__()
        key = f"{self.recipe_key}.activation_checkpointing"
        checked_setting(self.activation_checkpointing, key)

    def build(self, grid: TokenGrid, in_chans: int) -> nn.Module:
        from fmtrain.nn.vit import VisionTransformer

        encoder = VisionTransformer.from_size(
            self.size, grid=grid, in_chans=in_chans, drop_path=self.drop_path
        )
        encoder.set_grad_checkpointing(self.activation_checkpointing)
        return encoder
