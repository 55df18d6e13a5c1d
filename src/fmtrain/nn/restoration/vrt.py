"""VRTLite: a compact VRT-style video restoration U-Net of TMSA stages (Liang et al. 2022).

Blurry frames (and optionally a spike-camera voxel per frame) in, a residual out, added to
the blurry input. Left out of the paper's model: optical flow and deformable-conv parallel
warping, and relative position bias (a learned in-window position embedding stands in).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from fmtrain.nn.restoration.frames import (
    PixelShuffleUp,
    PixelUnshuffleDown,
    SpikeEncoder,
    frames_to_tokens,
    tokens_to_frames,
)
from fmtrain.nn.restoration.tmsa import TMSAStage
from fmtrain.nn.restoration.windows import Size3
from fmtrain.nn.transformer import init_vit_weights


@dataclass(frozen=True)
class VRTSize:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: int
    window: Size3 = (2, 8, 8)
    mlp_ratio: float = 2.0


# "test" builds the real code path in well under a second on a CPU; "tiny" (~0.2 M) is the
# largest that trains to a measurable held-out gain on a CPU in half an hour.
VRT_SIZES: dict[str, VRTSize] = {
    "test": VRTSize(embed_dim=16, depths=(2, 2), num_heads=2, window=(2, 4, 4)),
    "tiny": VRTSize(embed_dim=32, depths=(2, 2, 2), num_heads=2),
    "small": VRTSize(embed_dim=96, depths=(4, 4, 4), num_heads=6),
    "base": VRTSize(embed_dim=120, depths=(6, 6, 6, 6), num_heads=6),
}


def _nearest_multiples(value: int, multiple: int) -> str:
    below, above = value // multiple * multiple, -(-value // multiple) * multiple
    return f"{above}" if below == 0 else f"{below} or {above}"


class VRTLite(nn.Module):
    """Video deblurring with temporal mutual self-attention at several scales.

    Shallow 3x3 conv per frame (fused with a spike-voxel encoder when `spike_bins > 0`),
    then a U-Net of TMSA stages: `depths[i]` blocks at scale 1 / 2**i on the way down, the
    last entry as the bottleneck, and mirrored stages on the way up (pixel-unshuffle + linear
    down, linear + pixel-shuffle up, additive skips). A conv after the body plus a long skip
    from the shallow features feeds a two-conv reconstruction head whose last conv starts at
    zero, so the untrained model is exactly the identity on the blurry input.

    Args:
        in_chans: image channels C.
        spike_bins: spike voxel bins per frame; 0 builds no spike branch.
        embed_dim: feature width at every scale.
        depths: TMSA blocks per scale, finest first; len(depths) is the number of scales.
        num_heads: attention heads in every block.
        window: (wt, wh, ww) attention window in frames, rows and columns.
        mlp_ratio: MLP hidden width / embed_dim.
        drop_path: stochastic depth of the last block, rising linearly from 0.
        checkpointing: start with activation checkpointing on (see `set_grad_checkpointing`).
    """

    def __init__(
        self,
        *,
        in_chans: int = 3,
        spike_bins: int = 0,
        embed_dim: int = 32,
        depths: tuple[int, ...] = (2, 2, 2),
        num_heads: int = 4,
        window: Size3 = (2, 8, 8),
        mlp_ratio: float = 2.0,
        drop_path: float = 0.1,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if not depths:
            raise ValueError("depths must name at least one scale, e.g. (2, 2, 2)")
        self.in_chans, self.spike_bins = in_chans, spike_bins
        self.window = tuple(window)
        self.num_scales = len(depths)
        d = embed_dim
        self.conv_first = nn.Conv2d(in_chans, d, 3, padding=1)
        self.spike_encoder = SpikeEncoder(spike_bins, d) if spike_bins > 0 else None
        # Concatenate image and spike features and mix them per pixel.
        self.spike_fuse = nn.Conv2d(2 * d, d, 1) if spike_bins > 0 else None

        run_order = list(depths) + list(depths[-2::-1])  # down, bottleneck, up
        total = sum(run_order)
        rates = [drop_path * i / max(total - 1, 1) for i in range(total)]
        stages, start = [], 0
        for depth in run_order:
            stage = TMSAStage(
                d,
                depth,
                num_heads,
                self.window,
                mlp_ratio=mlp_ratio,
                drop_rates=rates[start : start + depth],
            )
            stages.append(stage)
            start += depth
        n = self.num_scales - 1
        self.encoders = nn.ModuleList(stages[:n])
        self.bottleneck = stages[n]
        self.decoders = nn.ModuleList(stages[n + 1 :])
        self.downs = nn.ModuleList(PixelUnshuffleDown(d) for _ in range(n))
        self.ups = nn.ModuleList(PixelShuffleUp(d) for _ in range(n))
        self.norm = nn.LayerNorm(d)
        self.conv_after = nn.Conv2d(d, d, 3, padding=1)
        self.head = nn.Sequential(
            nn.Conv2d(d, d, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(d, in_chans, 3, padding=1)
        )
        self.apply(init_vit_weights)
        # Zero residual at init: training starts from "output = blurry input", not from noise.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.set_grad_checkpointing(checkpointing)

    @classmethod
    def from_size(cls, size: str, **kwargs: object) -> VRTLite:
        """Build a registered size (see `VRT_SIZES`); kwargs (spike_bins, depths...) override it."""
        if size not in VRT_SIZES:
            raise ValueError(f"unknown VRTLite size {size!r}; choose one of {sorted(VRT_SIZES)}")
        return cls(**{**asdict(VRT_SIZES[size]), **kwargs})

    @property
    def input_multiple(self) -> Size3:
        """(T, H, W) must be multiples of this: the window, times 2**(scales - 1) spatially."""
        f = 2 ** (self.num_scales - 1)
        return self.window[0], self.window[1] * f, self.window[2] * f

    def check_input_shape(self, t: int, h: int, w: int) -> None:
        """Raise ValueError naming the sizes and the nearest valid ones unless (T, H, W) fit."""
        bad = [
            f"{name}={value} (nearest valid: {_nearest_multiples(value, m)})"
            for name, value, m in zip("THW", (t, h, w), self.input_multiple, strict=True)
            if value <= 0 or value % m
        ]
        if bad:
            mt, mh, mw = self.input_multiple
            raise ValueError(
                f"VRTLite needs T divisible by {mt} (temporal window) and H, W divisible by "
                f"{mh}, {mw} (window {self.window[1:]} x 2**{self.num_scales - 1} for "
                f"{self.num_scales} scales); got " + ", ".join(bad) + ". Crop or pad the clip."
            )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each TMSA block's activations in backward (non-reentrant checkpoint)."""
        for stage in (*self.encoders, self.bottleneck, *self.decoders):
            stage.grad_checkpointing = enable

    def channels_last_modules(self) -> list[nn.Module]:
        """The parts that run 4D 2D convs on [B * T, C, H, W]; only these may be channels_last.

        `for m in model.channels_last_modules(): m.to(memory_format=torch.channels_last)` is
        safe; the attention stages work on 5D tokens and must stay in the default format.
        """
        parts = [self.conv_first, self.spike_encoder, self.spike_fuse, self.conv_after, self.head]
        return [m for m in parts if m is not None]

    def no_weight_decay(self) -> set[str]:
        """The in-window position embeddings (biases and norms are excluded by the caller)."""
        return {name for name, _ in self.named_parameters() if name.endswith("pos_embed")}

    def _check_inputs(self, blur: torch.Tensor, spikes: torch.Tensor | None) -> None:
        if blur.ndim != 5 or blur.shape[2] != self.in_chans:
            raise ValueError(
                f"blur must be [B, T, {self.in_chans}, H, W]; got shape {tuple(blur.shape)}"
            )
        b, t, _, h, w = blur.shape
        if self.spike_bins and spikes is None:
            raise ValueError(
                f"this VRTLite has a spike branch (spike_bins={self.spike_bins}) but spikes=None; "
                f"pass spikes [B, T, {self.spike_bins}, H, W] or build it with spike_bins=0"
            )
        if not self.spike_bins and spikes is not None:
            raise ValueError(
                "this VRTLite has no spike branch (spike_bins=0) but spikes were given; "
                "drop them or build the model with spike_bins > 0"
            )
        if spikes is not None and tuple(spikes.shape) != (b, t, self.spike_bins, h, w):
            raise ValueError(
                f"spikes must be [B, T, spike_bins, H, W] = {(b, t, self.spike_bins, h, w)}; "
                f"got {tuple(spikes.shape)}"
            )
        self.check_input_shape(t, h, w)

    def forward(self, blur: torch.Tensor, spikes: torch.Tensor | None = None) -> torch.Tensor:
        """Restore a clip.

        Args:
            blur: blurry frames [B, T, C, H, W] (see `check_input_shape` for T, H, W).
            spikes: spike voxels [B, T, spike_bins, H, W], required iff spike_bins > 0.

        Returns:
            restored frames [B, T, C, H, W] = blur + predicted residual.
        """
        self._check_inputs(blur, spikes)
        b, t, c, h, w = blur.shape
        frames = self.conv_first(blur.reshape(b * t, c, h, w))
        if self.spike_encoder is not None and self.spike_fuse is not None and spikes is not None:
            spike_feat = self.spike_encoder(spikes.reshape(b * t, self.spike_bins, h, w))
            frames = self.spike_fuse(torch.cat([frames, spike_feat], dim=1))
        shallow = frames_to_tokens(frames, b)

        x, skips = shallow, []
        for stage, down in zip(self.encoders, self.downs, strict=True):
            x = stage(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for up, stage in zip(self.ups, self.decoders, strict=True):
            x = stage(up(x) + skips.pop())

        body = self.conv_after(tokens_to_frames(self.norm(x))) + tokens_to_frames(shallow)
        residual = self.head(body)
        return blur + residual.reshape(b, t, c, h, w)
