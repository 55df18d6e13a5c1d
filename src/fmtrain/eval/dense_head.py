"""The linear heads of dense probes, and the frozen features they read.

Token features [N, D, *grid] are standardised per channel with fixed training statistics and
mapped to voxel logits linearly, in one of two ways (:class:`DenseProbeConfig` ``head``):

- ``"upsampled"``: a 1x1x1 convolution gives each token one logit per class, interpolated
  trilinearly to voxels. It cannot draw anything smaller than a token: a ViT token of 4x8x8
  voxels paints a 4x8x8 blur, however much the token knows about the structure inside it.
- ``"per_voxel"``: each token maps linearly to logits for every voxel of its own patch
  (pixel-shuffle style), so a token that encodes where a thin layer runs inside its patch can
  say so. Still linear in the frozen features, and still one token at a time.

Cross-entropy is taken at voxel resolution. Whatever the head segments, the token encoded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from fmtrain.core.grid import TokenGrid
from fmtrain.losses.regression import unpatchify

__all__ = [
    "HEAD_KINDS",
    "DenseProbeConfig",
    "DenseProbeHead",
    "TokenEncoder",
    "as_volume_batch",
    "linear_upsampling_matrix",
    "predict_dense",
    "token_feature_maps",
    "train_dense_probe",
]


def linear_upsampling_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """[n_in, n_out] weights of 1D linear interpolation (``align_corners=False``).

    Trilinear upsampling is separable, so applying one such matrix per axis equals
    ``F.interpolate(..., mode="trilinear")``; as matrix products its backward pass is tens of
    times faster on CPU than the interpolation kernel's.
    """
    eye = torch.eye(n_in)[None]  # each input position as its own channel
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0]


class TokenEncoder(Protocol):
    """What a dense probe needs of an encoder (ViT, SparseCNN3d, ...)."""

    grid: TokenGrid
    training: bool

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> TokenEncoder: ...

    def forward_intermediates(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Tokens [B, N, D_l] per layer, N = prod(grid.shape) in row-major grid order."""
        ...


# how a token's features become voxel logits; see the module docstring
HEAD_KINDS = ("upsampled", "per_voxel")


@dataclass(frozen=True, kw_only=True)
class DenseProbeConfig:
    """Training of the per-token linear head.

    Args:
        steps: AdamW steps; each draws ``batch_size`` volumes.
        lr: Learning rate; a linear head on standardised features tolerates a large one.
        weight_decay: AdamW weight decay on the head's weights.
        batch_size: Volumes per step.
        seed: Seed of the batch draws; with it the trained head is deterministic.
        class_weighting: Weight cross-entropy by inverse square-root class frequency, so thin
            layers and small lesions count and the probe does not settle for the big classes.
        num_threads: CPU threads while training (the previous setting is restored after). The
            head's ops are too small to gain from more; on a CPU shared with data workers or
            a training run, extra threads spin-wait and slow training down a hundred-fold.
        head: ``"upsampled"`` (class logits per token, interpolated to voxels) or
            ``"per_voxel"`` (class logits for every voxel of the token's patch); see the
            module docstring.
    """

    steps: int = 150
    lr: float = 2e-2
    weight_decay: float = 1e-4
    batch_size: int = 8
    seed: int = 0
    class_weighting: bool = True
    num_threads: int = 1
    head: Literal["upsampled", "per_voxel"] = "upsampled"

    def __post_init__(self) -> None:
        if self.head not in HEAD_KINDS:
            raise ValueError(
                f"DenseProbeConfig.head must be one of {HEAD_KINDS}, got {self.head!r}"
            )


class DenseProbeHead(nn.Module):
    """Standardise each feature channel and map each token linearly to voxel logits.

    Args:
        mean: Per-channel feature mean [D] of the training features.
        std: Per-channel feature std [D].
        num_classes: Number of output classes.
        grid_shape: Token grid of the features.
        output_size: Voxel shape of the logits (the encoder's input size).
        kind: ``"upsampled"``: one logit per class and token, interpolated to voxels;
            ``"per_voxel"``: logits for every voxel of the token's patch, which needs
            ``output_size`` to be a whole multiple of ``grid_shape`` on every axis.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        num_classes: int,
        grid_shape: Sequence[int],
        output_size: Sequence[int],
        kind: Literal["upsampled", "per_voxel"] = "upsampled",
    ) -> None:
        super().__init__()
        ndim = len(output_size)
        shape = (1, -1) + (1,) * ndim
        # Fixed statistics (not BatchNorm): the head is then the same function in train and eval.
        self.register_buffer("mean", mean.reshape(shape))
        self.register_buffer("std", std.reshape(shape))
        self.grid_shape = tuple(int(g) for g in grid_shape)
        self.output_size = tuple(int(s) for s in output_size)
        self.kind = kind
        self.num_classes = num_classes
        self.patch = _patch_of(self.grid_shape, self.output_size) if kind == "per_voxel" else None
        outputs = num_classes * (math.prod(self.patch) if self.patch else 1)
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[ndim - 1]
        self.linear = conv(mean.numel(), outputs, kernel_size=1)
        # A zero start makes the (convex) fit independent of any initialisation randomness.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if self.patch:
            return
        for axis, (g, o) in enumerate(zip(self.grid_shape, self.output_size, strict=True)):
            # Derived from the shapes, so not saved with the weights.
            self.register_buffer(
                f"upsample{axis}", linear_upsampling_matrix(g, o), persistent=False
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Features [B, D, *grid] -> logits [B, num_classes, *output_size]."""
        if tuple(features.shape[2:]) != self.grid_shape:
            raise ValueError(
                f"DenseProbeHead: features have shape {tuple(features.shape)}, expected "
                f"[B, D, {', '.join(map(str, self.grid_shape))}] (the grid it was trained on)"
            )
        logits = self.linear((features - self.mean) / self.std)
        if self.patch:
            # each token's channels are its patch's voxels (row-major), classes last: the
            # layout the tokens' own patchify has, so its inverse places them
            tokens = logits.flatten(2).transpose(1, 2)  # [B, N, prod(patch) * classes]
            return unpatchify(tokens, self.output_size, self.patch)
        for axis in range(len(self.grid_shape)):
            matrix = getattr(self, f"upsample{axis}")
            logits = (logits.movedim(axis + 2, -1) @ matrix).movedim(-1, axis + 2)
        return logits


def _patch_of(grid_shape: tuple[int, ...], output_size: tuple[int, ...]) -> tuple[int, ...]:
    if len(grid_shape) != len(output_size) or any(
        o % g for g, o in zip(grid_shape, output_size, strict=True)
    ):
        raise ValueError(
            f"a per-voxel dense head needs voxels {list(output_size)} to be a whole number of "
            f"patches of the token grid {list(grid_shape)} on every axis; use "
            "DenseProbeConfig(head='upsampled') for this encoder"
        )
    return tuple(o // g for g, o in zip(grid_shape, output_size, strict=True))


def as_volume_batch(volumes: ArrayLike | torch.Tensor, grid: TokenGrid, name: str) -> torch.Tensor:
    """Volumes as float32 [N, C, *input_size], adding the channel axis when it is missing."""
    x = torch.as_tensor(np.asarray(volumes) if not torch.is_tensor(volumes) else volumes)
    x = x.float()
    if x.ndim == len(grid.input_size) + 1:
        x = x[:, None]
    if x.ndim != len(grid.input_size) + 2 or tuple(x.shape[2:]) != grid.input_size:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but the encoder expects [N, C, "
            f"{', '.join(map(str, grid.input_size))}] (or without C); prepare volumes to the "
            "encoder's input size first"
        )
    return x


@torch.no_grad()
def token_feature_maps(
    encoder: TokenEncoder,
    volumes: ArrayLike | torch.Tensor,
    *,
    layers: Sequence[int] = (-1,),
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """Frozen token features of every volume, as maps on the token grid.

    Args:
        encoder: Module with ``grid`` and ``forward_intermediates``; run in eval mode, its
            training flag is restored afterwards.
        volumes: [N, C, *input_size] or [N, *input_size].
        layers: Layer (block or stage) indices, negatives allowed.
        batch_size: Volumes per forward pass.
        device: Where to run the encoder; default: where its parameters are.

    Returns:
        One float32 CPU tensor [N, D_l, *grid.shape] per entry of ``layers``.
    """
    grid = encoder.grid
    x = as_volume_batch(volumes, grid, "volumes")
    if device is None:
        param = next(iter(encoder.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = encoder.training
    encoder.train(False)
    outputs: list[list[torch.Tensor]] = [[] for _ in layers]
    try:
        for start in range(0, len(x), batch_size):
            tokens = encoder.forward_intermediates(x[start : start + batch_size].to(device), layers)
            for out, t in zip(outputs, tokens, strict=True):
                if t.shape[1] != grid.num_tokens:
                    raise ValueError(
                        f"encoder returned {t.shape[1]} tokens, expected {grid.num_tokens} for "
                        f"grid {grid.shape}; dense probes need every token (no masking)"
                    )
                # [B, N, D] in row-major grid order -> [B, D, *grid]
                out.append(t.float().transpose(1, 2).reshape(len(t), -1, *grid.shape).cpu())
    finally:
        encoder.train(was_training)
    return [torch.cat(out) for out in outputs]


def _check_pairs(features: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if len(features) != len(labels):
        raise ValueError(
            f"{what}: features have shape {tuple(features.shape)} but labels have shape "
            f"{tuple(labels.shape)}; pass one label map per volume"
        )


def _class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse square-root frequency, scaled so that the average voxel weighs 1."""
    counts = torch.bincount(labels.reshape(-1), minlength=num_classes).double()
    freq = counts / counts.sum()
    weights = torch.where(freq > 0, freq.clamp_min(1e-12).rsqrt(), torch.zeros_like(freq))
    return (weights / (weights * freq).sum()).float()


def train_dense_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: DenseProbeConfig | None = None,
) -> DenseProbeHead:
    """Fit a per-token linear head (``config.head``) to voxel labels by cross-entropy at
    voxel resolution.

    Args:
        features: [N, D, *grid] frozen features.
        labels: [N, *input_size] int64 class ids in [0, num_classes).
        num_classes: Number of classes.
        config: Training settings; defaults to :class:`DenseProbeConfig`.

    Returns:
        The trained head (eval mode, on CPU), mapping [B, D, *grid] to logits
        [B, num_classes, *input_size].
    """
    config = config or DenseProbeConfig()
    features, labels = torch.as_tensor(features).float(), torch.as_tensor(labels).long()
    _check_pairs(features, labels, "train_dense_probe")
    if features.ndim != labels.ndim + 1 or labels.ndim < 2:
        raise ValueError(
            f"train_dense_probe: features {tuple(features.shape)} must be [N, D, *grid] and "
            f"labels {tuple(labels.shape)} [N, *input_size] with as many spatial axes"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"train_dense_probe: labels range over [{int(labels.min())}, {int(labels.max())}] "
            f"but num_classes={num_classes}; class ids must lie in [0, {num_classes})"
        )
    dims = [0, *range(2, features.ndim)]
    std = features.std(dim=dims).clamp_min(1e-6)
    mean = features.mean(dim=dims)
    head = DenseProbeHead(
        mean, std, num_classes, features.shape[2:], labels.shape[1:], kind=config.head
    )
    weight = _class_weights(labels, num_classes) if config.class_weighting else None
    generator = torch.Generator().manual_seed(config.seed)
    head.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    try:
        _fit(head, features, labels, weight, config, generator)
    finally:
        torch.set_num_threads(threads)
    return head.eval()


def _fit(
    head: DenseProbeHead,
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor | None,
    config: DenseProbeConfig,
    generator: torch.Generator,
) -> None:
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.steps):
        batch = torch.randint(
            0, len(features), (min(config.batch_size, len(features)),), generator=generator
        )
        loss = F.cross_entropy(head(features[batch]), labels[batch], weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def predict_dense(
    head: DenseProbeHead, features: torch.Tensor, batch_size: int = 8
) -> torch.Tensor:
    """Class ids [N, *input_size] (int64) of features [N, D, *grid]."""
    parts = [
        head(features[i : i + batch_size].float()).argmax(1)
        for i in range(0, len(features), batch_size)
    ]
    return torch.cat(parts)
