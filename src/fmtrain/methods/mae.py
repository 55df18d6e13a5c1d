"""Masked autoencoding (He et al.) on 1D, 2D and 3D token grids.

The encoder sees the visible tokens only; a narrow decoder gets them back with one learned
mask token at every hidden position (each with its position) and predicts the hidden
patches' voxels; the loss is the mean squared error on the hidden patches alone, against
per-patch normalised targets by default (MAE's `norm_pix_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fmtrain.losses.regression import masked_patch_mse, patchify, per_patch_normalized
from fmtrain.methods.base import MethodOutput, PretrainMethod
from fmtrain.methods.configs import DecoderConfig, OptimizerConfig
from fmtrain.nn.decoder import MAEDecoder
from fmtrain.nn.encoder import EncoderSpec, ViTEncoder
from fmtrain.nn.tokens import expect_tokens

__all__ = ["MAE", "MAEModule", "MAEOutput"]


@dataclass
class MAEOutput(MethodOutput):
    """`features` are the encoder's tokens at the visible positions [B, Nc, D]."""

    predictions: list[torch.Tensor] = field(default_factory=list)  # per family [B, Nt, P]


def expect_patch_width(
    prediction: torch.Tensor, patches: torch.Tensor, patch_size: Sequence[int]
) -> torch.Tensor:
    """Insist that the decoder predicts exactly one patch's values per hidden token.

    A decoder projection built for another patch size than the data's is otherwise a
    broadcasting error inside the loss, or worse, a silent reshape.
    """
    if prediction.shape[-1] != patches.shape[-1]:
        chans = patches.shape[-1] // math.prod(patch_size)
        raise ValueError(
            f"model.init_args.decoder predicts {prediction.shape[-1]} values per hidden patch, "
            f"but a patch of model.init_args.patch_size={list(patch_size)} x {chans} "
            f"channel(s) holds {patches.shape[-1]}. Build the decoder's output from the "
            "token grid's patch size (MAEDecoder does), not from a separate setting."
        )
    return prediction


class MAE(nn.Module):
    """Encoder on visible tokens + decoder predicting the hidden patches.

    Args:
        encoder: any fmtrain encoder (`forward_features(x, keep=...)` encodes only `keep`).
        decoder: mask-token decoder from encoder tokens to patch voxels.
        patch_size: patch extent per axis, to cut the targets the way tokens are cut.
        normalize_targets: regress per-patch normalised voxels (MAE's default choice).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: MAEDecoder,
        patch_size: Sequence[int],
        normalize_targets: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.patch_size = tuple(patch_size)
        self.normalize_targets = normalize_targets

    def forward(
        self,
        inputs: torch.Tensor,
        contexts: Sequence[torch.Tensor],
        targets: Sequence[torch.Tensor],
    ) -> MAEOutput:
        """One MAE step per mask family: encode visible, decode hidden, compare.

        Args:
            inputs: [B, C, *input_size].
            contexts: per mask family, int64 [B, Nc] visible token indices.
            targets: per mask family, int64 [B, Nt] hidden token indices.
        """
        # 1. Targets: every patch's voxels, normalised per patch (only hidden ones are read).
        raw = patchify(inputs, self.patch_size)
        patches = per_patch_normalized(raw) if self.normalize_targets else raw
        losses, predictions, features, logs = [], [], None, {}
        for visible, hidden in zip(contexts, targets, strict=True):
            # 2. Encode the visible tokens only.
            z = expect_tokens(self.encoder(inputs, keep=visible), *visible.shape)
            # 3. Decode: mask tokens at the hidden positions predict their voxels.
            prediction = expect_patch_width(
                self.decoder(z, visible, hidden), patches, self.patch_size
            )
            # 4. Loss on the hidden patches alone, and what a variant adds to it.
            loss = masked_patch_mse(prediction, patches, hidden)
            extra, extra_logs = self.extra_loss(inputs, raw, prediction, hidden)
            logs |= {"mse": loss.detach(), **extra_logs}  # the last family's
            losses.append(loss if extra is None else loss + extra)
            predictions.append(prediction)
            features = z if features is None else features
        return MAEOutput(
            loss=torch.stack(losses).mean(),
            loss_per_mask=losses,
            logs=logs,
            features=features,
            predictions=predictions,
        )

    def extra_loss(
        self,
        inputs: torch.Tensor,
        raw: torch.Tensor,
        prediction: torch.Tensor,
        hidden: torch.Tensor,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """A term a variant adds to one mask family's masked-patch MSE, and its logs: none
        here. `raw` holds the input's patches before any normalisation."""
        return None, {}


class MAEModule(PretrainMethod):
    """Masked autoencoder pretraining.

    Args:
        input_size: spatial input shape (linked from `data.input_size`).
        patch_size: patch extent per axis; input_size must be divisible by it.
        in_chans: input channels (linked from the datamodule).
        encoder: encoder configuration (default ViT-B; any `EncoderSpec` by `class_path`).
        decoder: decoder architecture.
        normalize_targets: per-patch normalised targets (MAE's `norm_pix_loss`).
        optimizer: AdamW and its schedules (MAE: lr 1.5e-4 x batch/256, weight decay 0.05).
        compile: compile every transformer block with torch.compile.
        compile_backend: torch.compile backend.
        max_consecutive_bad_steps: stop after this many skipped non-finite steps in a row.
        attention_backend: SDPA kernels: auto, flash, efficient, math or cudnn (see
            `PretrainMethod`).
    """

    num_mask_families = 1
    # the model the encoder and decoder go into (a variant subclasses MAE and names it here)
    model_class: type[MAE] = MAE

    def __init__(
        self,
        *,
        input_size: tuple[int, ...],
        patch_size: tuple[int, ...] = (4, 16, 16),
        in_chans: int = 1,
        encoder: EncoderSpec = ViTEncoder(),  # noqa: B008 (frozen: a safe default)
        decoder: DecoderConfig | None = None,
        normalize_targets: bool = True,
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
        d = decoder or DecoderConfig()
        enc = self.build_encoder()
        dec = MAEDecoder(
            grid=self.grid,
            encoder_dim=enc.embed_dim,
            in_chans=in_chans,
            embed_dim=d.embed_dim,
            depth=d.depth,
            num_heads=d.num_heads,
        )
        dec.set_grad_checkpointing(getattr(self.encoder_spec, "activation_checkpointing", False))
        self.method = self.model_class(enc, dec, self.grid.patch_size, normalize_targets)

    def forward_batch(self, batch) -> MAEOutput:
        if not batch.contexts:
            raise ValueError(
                "MAE needs masks: set data.init_args.masks (e.g. class_path: "
                "fmtrain.masks.RandomPatch, init_args: {ratio: 0.75})"
            )
        return self.method(batch.inputs, batch.contexts, batch.targets)

    def evaluation_encoder(self) -> nn.Module:
        return self.method.encoder

    def stage_widths(self) -> dict[str, int]:
        return {"decoder": math.prod(self.grid.patch_size) * self.in_chans}
