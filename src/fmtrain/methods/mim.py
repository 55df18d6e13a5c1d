"""MiM: hierarchical ("mask in mask") masked modeling for 3D volumes (Zhuang et al.).

Levels come from `fmtrain.masks.HierarchicalMask`: level 0 is the whole token grid, each
next level a box inside the previous one, every level masked on its own. Per level, the
encoder sees that level's visible tokens and a decoder reconstructs its hidden patches
(per-patch normalised MSE, `level_weights`). Adjacent levels are tied by cross-level terms
(`fmtrain.losses.cross_level`) at the same location:

- `location_weight`: MiM's published term — the child level's pooled features must find the
  child's box among every box of its size in the parent level (cross-entropy over those
  candidates; `location_loss: byol` gives the authors' BYOL-style variant instead);
- `infonce_weight`: a spatial InfoNCE between one token location's features at the child
  and parent levels (negatives: the parent's other visible locations). Not in the paper.

What differs from the paper, on purpose: MiM resizes each cropped sub-volume to the
network's input size (a zoom); here a level keeps the native resolution (the SparK encoder
encodes the cropped box, the ViT the box's tokens at their own positions), so one voxel is
the same physical size at every level and the token grids nest exactly. The encoder can be
the SparK sparse CNN (`fmtrain.nn.SparseCNNEncoder`, default) or any ViT encoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from fmtrain.losses.cross_level import (
    byol_location_loss,
    candidate_boxes,
    location_cross_entropy,
    location_label,
    location_logits,
    scatter_to_grid,
    spatial_info_nce,
)
from fmtrain.masks.regions import LevelRegion
from fmtrain.methods.base import MethodOutput, PretrainMethod
from fmtrain.methods.configs import DecoderConfig, OptimizerConfig
from fmtrain.methods.links import RecipeLink
from fmtrain.methods.mim_levels import SparKLevel, TokenLevel
from fmtrain.nn.decoder import MAEDecoder
from fmtrain.nn.encoder import EncoderSpec
from fmtrain.nn.features import feature_info
from fmtrain.nn.sparse_cnn import SparseCNNEncoder
from fmtrain.nn.sparse_decoder import SparKDecoder

__all__ = ["CrossLevelConfig", "MiM", "MiMModule", "MiMOutput"]

_KEY = "model.init_args"


@dataclass(kw_only=True)
class CrossLevelConfig:
    """Cross-level terms between adjacent levels (see `fmtrain.losses.cross_level`).

    Args:
        location_weight: weight of MiM's location term (the authors' default 1e-3, their
            released pretraining script 0.1); 0 turns it off.
        location_loss: `cross_entropy` (MiM's default) or `byol` (their variant).
        location_temperature: temperature of the location logits (MiM: plain cosine, 1.0).
        infonce_weight: weight of the spatial InfoNCE (not in the paper); 0 turns it off.
        infonce_temperature: its softmax temperature.
        projection_dim: width of the projection head both terms compare in.
    """

    location_weight: float = 0.1
    location_loss: Literal["cross_entropy", "byol"] = "cross_entropy"
    location_temperature: float = 1.0
    infonce_weight: float = 0.0
    infonce_temperature: float = 0.1
    projection_dim: int = 128

    def __post_init__(self) -> None:
        for name in ("location_weight", "infonce_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{_KEY}.cross_level.{name} must be finite and >= 0, got {value}")
        for name in ("location_temperature", "infonce_temperature"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{_KEY}.cross_level.{name} must be > 0, got {value}")
        if self.location_loss not in ("cross_entropy", "byol"):
            raise ValueError(
                f"{_KEY}.cross_level.location_loss must be cross_entropy or byol, "
                f"got {self.location_loss!r}"
            )
        if self.projection_dim < 1:
            raise ValueError(f"{_KEY}.cross_level.projection_dim must be >= 1")


def _mlp(width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, out))


@dataclass
class MiMOutput(MethodOutput):
    """`features`: level 0's encoder tokens at its visible positions [B, K, D]."""

    level_losses: list[torch.Tensor] = field(default_factory=list)


class MiM(nn.Module):
    """Per-level masked reconstruction + cross-level terms (see the module docstring).

    Args:
        level: one level's encoder + decoder (`SparKLevel` or `TokenLevel`).
        embed_dim: the encoder's token width.
        grid: token grid shape the masks index.
        level_weights: weight of each level's reconstruction loss (normalised to sum 1).
        cross_level: cross-level terms.
    """

    def __init__(
        self,
        level: SparKLevel | TokenLevel,
        embed_dim: int,
        grid: Sequence[int],
        level_weights: Sequence[float],
        cross_level: CrossLevelConfig,
    ) -> None:
        super().__init__()
        self.level = level
        self.grid = tuple(grid)
        total = float(sum(level_weights))
        self.level_weights = [float(w) / total for w in level_weights]
        self.cross = cross_level
        self.projector = _mlp(embed_dim, cross_level.projection_dim)
        self.predictor = (
            _mlp(cross_level.projection_dim, cross_level.projection_dim)
            if cross_level.location_loss == "byol"
            else None
        )

    @property
    def encoder(self) -> nn.Module:
        """The level model's encoder (a property, so the checkpoint holds it once)."""
        return self.level.encoder

    def forward(
        self,
        inputs: torch.Tensor,
        contexts: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
        regions: Sequence[LevelRegion | None],
    ) -> MiMOutput:
        """Args: inputs [B, C, *input_size]; contexts/targets per level, int64 [B, K] indices
        into the full token grid, and the level's box (`regions`): one `HierarchicalMask`
        family per level, as the batch carries them."""
        if len(regions) != len(contexts) or any(r is None for r in regions):
            raise ValueError(
                "data.init_args.masks: MiM needs each mask family confined to a box of the "
                "token grid, its levels nested; set class_path: fmtrain.masks.HierarchicalMask "
                "(one family per level)."
            )
        # 1. Every level: encode its visible tokens, reconstruct its hidden patches.
        level_losses, features = [], []
        for region, context, target in zip(regions, contexts, targets, strict=True):
            loss, tokens = self.level(inputs, region, context, target, self.grid)
            level_losses.append(loss)
            features.append(tokens)
        loss = sum(w * x for w, x in zip(self.level_weights, level_losses, strict=True))
        logs: dict[str, torch.Tensor | float] = {}
        # 2. Cross-level terms, child level l against its parent l - 1, at the same place.
        location, correct, nce = [], [], []
        for child in range(1, len(regions)):
            parent = child - 1
            if self.cross.location_weight > 0:
                term, hit = self._location(features, contexts, regions, child, parent)
                location.append(term)
                correct.append(hit)
            if self.cross.infonce_weight > 0:
                term, _ = spatial_info_nce(
                    self.projector(features[child]),
                    contexts[child],
                    self.projector(features[parent]),
                    contexts[parent],
                    self.cross.infonce_temperature,
                )
                nce.append(term)
        if location:
            term = torch.stack(location).mean()
            loss = loss + self.cross.location_weight * term
            logs["location_loss"] = term.detach()
            logs["location_accuracy"] = torch.stack(correct).mean()
        if nce:
            term = torch.stack(nce).mean()
            loss = loss + self.cross.infonce_weight * term
            logs["infonce_loss"] = term.detach()
        logs |= {f"reconstruction_level{i}": v.detach() for i, v in enumerate(level_losses)}
        return MiMOutput(
            loss=loss,
            loss_per_mask=level_losses,
            logs=logs,
            features=features[0],
            level_losses=level_losses,
        )

    def _location(
        self,
        features: list[torch.Tensor],
        contexts: Sequence[torch.Tensor],
        regions: list[LevelRegion],
        child: int,
        parent: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MiM's location term for one (child, parent) pair, and its accuracy."""
        query = self.projector(features[child].mean(dim=1))
        # The parent side is a fixed reference (detached): the child learns to locate itself.
        keys = self.projector(features[parent].detach())
        dense, visible = scatter_to_grid(keys, contexts[parent], self.grid)
        p, c = regions[parent], regions[child]
        candidates = candidate_boxes(dense, visible, p.start, p.shape, c.shape)
        label = location_label(c.start, p.start, p.shape, c.shape)
        with torch.no_grad():
            logits = location_logits(query, candidates, self.cross.location_temperature)
            hit = (logits.argmax(-1) == label).float().mean()
        if self.predictor is not None:
            true_box = candidates[torch.arange(label.shape[0], device=label.device), label]
            return byol_location_loss(self.predictor(query), true_box), hit
        return location_cross_entropy(
            query, candidates, label, self.cross.location_temperature
        ), hit


class MiMModule(PretrainMethod):
    """MiM pretraining on a SparK sparse CNN (default) or a ViT encoder.

    Args:
        input_size: spatial input shape (linked from `data.input_size`).
        patch_size: token extent per axis; for the SparK encoder, the product of its strides
            (16 per axis by default).
        in_chans: input channels (linked from the datamodule).
        num_mask_families: levels (linked from `data.masks`, a `HierarchicalMask`).
        encoder: `fmtrain.nn.SparseCNNEncoder` (SparK) or `fmtrain.nn.ViTEncoder`.
        decoder: for a ViT, the MAE decoder; for SparK, `embed_dim` is the UNet decoder's
            deepest width (halving per scale) and depth/num_heads are not used.
        normalize_targets: per-patch normalised voxel targets (MAE's `norm_pix_loss`).
        level_weights: reconstruction weight per level (MiM: 1 each); default equal.
        cross_level: cross-level terms and their weights.
        optimizer: AdamW and its schedules.
        compile: compile every transformer block with torch.compile (ViT encoders).
        compile_backend: torch.compile backend.
        max_consecutive_bad_steps: stop after this many skipped non-finite steps in a row.
        attention_backend: SDPA kernels: auto, flash, efficient, math or cudnn (see
            `PretrainMethod`).
    """

    def __init__(
        self,
        *,
        input_size: tuple[int, ...],
        patch_size: tuple[int, ...] = (16, 16, 16),
        in_chans: int = 1,
        num_mask_families: int = 2,
        encoder: EncoderSpec = SparseCNNEncoder(),  # noqa: B008 (frozen: a safe default)
        decoder: DecoderConfig | None = None,
        normalize_targets: bool = True,
        level_weights: list[float] | None = None,
        cross_level: CrossLevelConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        max_consecutive_bad_steps: int = 5,
        attention_backend: str = "auto",
    ) -> None:
        super().__init__(
            input_size=input_size,
            patch_size=patch_size,
            in_chans=in_chans,
            encoder=encoder,
            optimizer=optimizer,
            compile=compile,
            compile_backend=compile_backend,
            max_consecutive_bad_steps=max_consecutive_bad_steps,
            attention_backend=attention_backend,
        )
        self.save_hyperparameters()
        if num_mask_families < 1:
            raise ValueError(
                "data.init_args.masks: MiM needs one mask family per level; use "
                "class_path: fmtrain.masks.HierarchicalMask (init_args: {levels: 2})."
            )
        self.num_mask_families = num_mask_families
        weights = [1.0] * num_mask_families if level_weights is None else list(level_weights)
        if (
            len(weights) != num_mask_families
            or any(not math.isfinite(w) or w < 0 for w in weights)
            or sum(weights) <= 0
        ):
            raise ValueError(
                f"{_KEY}.level_weights={level_weights} needs one finite weight >= 0 per level "
                f"({num_mask_families} levels from data.init_args.masks.init_args.levels), "
                "not all zero."
            )
        d = decoder or DecoderConfig()
        enc = self.build_encoder()
        level: SparKLevel | TokenLevel
        info = feature_info(enc)
        if info.scales:  # a pyramid: SparK's UNet decoder reads every scale
            dec = SparKDecoder(info.widths, in_chans, width=d.embed_dim, strides=info.strides)
            level = SparKLevel(enc, dec, self.grid.patch_size, normalize_targets)
        else:
            mae_decoder = MAEDecoder(
                grid=self.grid,
                encoder_dim=enc.embed_dim,
                in_chans=in_chans,
                embed_dim=d.embed_dim,
                depth=d.depth,
                num_heads=d.num_heads,
            )
            checkpointing = getattr(self.encoder_spec, "activation_checkpointing", False)
            mae_decoder.set_grad_checkpointing(checkpointing)
            level = TokenLevel(enc, mae_decoder, self.grid.patch_size, normalize_targets)
        self.method = MiM(
            level, enc.embed_dim, self.grid.shape, weights, cross_level or CrossLevelConfig()
        )

    @classmethod
    def recipe_links(cls) -> list[RecipeLink]:
        # one family per level: the model's level count follows the data's masks
        families = RecipeLink("data", "model.init_args.num_mask_families", "num_mask_families")
        return [*super().recipe_links(), families]

    def forward_batch(self, batch) -> MiMOutput:  # type: ignore[no-untyped-def]
        if len(batch.contexts) != self.num_mask_families:
            raise ValueError(
                f"MiM was built for {self.num_mask_families} level(s) but the batch carries "
                f"{len(batch.contexts)} mask families: set data.init_args.masks to "
                "fmtrain.masks.HierarchicalMask and keep model.init_args.num_mask_families "
                "linked to it."
            )
        return self.method(batch.inputs, batch.contexts, batch.targets, batch.regions)

    def evaluation_encoder(self) -> nn.Module:
        return self.method.encoder

    def stage_widths(self) -> dict[str, int]:
        return {"decoder": math.prod(self.grid.patch_size) * self.in_chans}
