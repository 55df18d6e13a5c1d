"""The recipe's description of a restoration network: typed, JSON-serialisable, rebuildable.

`VRTNetwork` is an `EncoderSpec`, so checkpoints carry it and `fmtrain.load_encoder` rebuilds
the trained restorer without Lightning, like any pretrained encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from fmtrain.core.grid import TokenGrid
from fmtrain.nn.encoder import EncoderSpec
from fmtrain.nn.restoration.vrt import VRT_SIZES, VRTLite

__all__ = ["VRTNetwork"]


@dataclass(frozen=True, kw_only=True)
class VRTNetwork(EncoderSpec):
    """A `VRTLite` by size.

    Args:
        size: `test` (debug), `tiny` (~0.2 M parameters, CPU), `small` (~2.8 M) or `base`
            (~8.6 M); see VRT_SIZES.
        spike_bins: spike voxel bins per frame, 0 for none (the method links it from the data).
        drop_path: stochastic depth of the deepest block.
        activation_checkpointing: recompute each attention block in backward (non-reentrant,
            so it composes with torch.compile).
    """

    recipe_key = "model.init_args.network"  # a plain setting of the method, not a class_path

    size: Literal["test", "tiny", "small", "base"] = "small"
    spike_bins: int = 0
    drop_path: float = 0.1
    activation_checkpointing: bool = False

    def input_multiple(self) -> tuple[int, int, int]:
        """(T, H, W) of a clip must be multiples of this (window x 2**(scales - 1))."""
        if self.size not in VRT_SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose one of {sorted(VRT_SIZES)}")
        spec = VRT_SIZES[self.size]
        f = 2 ** (len(spec.depths) - 1)
        return spec.window[0], spec.window[1] * f, spec.window[2] * f

    def build(self, grid: TokenGrid, in_chans: int) -> nn.Module:
        network = VRTLite.from_size(
            self.size,
            in_chans=in_chans,
            spike_bins=self.spike_bins,
            drop_path=self.drop_path,
            checkpointing=self.activation_checkpointing,
        )
        network.check_input_shape(*grid.input_size)
        return network
