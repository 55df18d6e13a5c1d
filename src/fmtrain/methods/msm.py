"""Masked signal modeling: MAE on 1D signal grids, plus a multi-resolution STFT loss.

The encoder sees the visible patches; the decoder predicts the hidden ones; the loss is the
masked-patch MSE plus `stft.weight` x the multi-resolution STFT loss between the input and
its reconstruction (visible patches as given, hidden patches as predicted), per channel.
The production setup this reproduces: ECG + PPG windows [B, 2, 1024] at 125 Hz, 40% of
patches hidden, loss = MSE + 0.3 x STFT(FFT 256/512, hops 64/128).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fmtrain.losses.regression import (
    patchify,
    unpatchify,
)
from fmtrain.losses.spectral import (
    STFTLossConfig,
    multi_resolution_stft_loss,
    validate_stft_lengths,
)
from fmtrain.methods.configs import DecoderConfig, OptimizerConfig
from fmtrain.methods.mae import MAE, MAEModule
from fmtrain.nn.encoder import EncoderSpec, ViTEncoder

__all__ = ["MaskedSignalModel", "MaskedSignalModule"]


class MaskedSignalModel(MAE):
    """MAE whose reconstruction is also compared with the input in the frequency domain.

    Args:
        encoder, decoder, patch_size: as for `MAE`.
        normalize_targets: regress per-patch normalised samples (off for signals: windows
            are already normalised, and the STFT compares real amplitudes).
        input_size: the input's shape without channels ((C, T) per channel, (T,) across).
        stft: the STFT loss's resolutions and weight; None for the MSE alone.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        patch_size: Sequence[int],
        normalize_targets: bool = False,
        input_size: Sequence[int] = (),
        stft: STFTLossConfig | None = None,
    ) -> None:
        super().__init__(encoder, decoder, patch_size, normalize_targets)  # type: ignore[arg-type]
        self.spectra(input_size, stft)

    def spectra(self, input_size: Sequence[int], stft: STFTLossConfig | None) -> None:
        """Compare reconstructions of windows of `input_size` with `stft` (None: MSE only);
        the module sets them after building the model as an MAE."""
        self.input_size, self.stft = tuple(input_size), stft

    def reconstruct(
        self, patches: torch.Tensor, prediction: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor:
        """[B, C, *input_size]: the input's patches, with the hidden ones as predicted."""
        if self.normalize_targets:  # back to signal units with each hidden patch's statistics
            target = torch.gather(patches, 1, hidden[..., None].expand(-1, -1, patches.shape[-1]))
            mean = target.mean(dim=-1, keepdim=True)
            std = (target.var(dim=-1, keepdim=True, unbiased=False) + 1e-6).sqrt()
            prediction = prediction.float() * std + mean
        index = hidden[..., None].expand(-1, -1, patches.shape[-1])
        filled = patches.float().scatter(1, index, prediction.float())
        return unpatchify(filled, self.input_size, self.patch_size)

    def extra_loss(
        self,
        inputs: torch.Tensor,
        raw: torch.Tensor,
        prediction: torch.Tensor,
        hidden: torch.Tensor,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """`stft.weight` x the spectra of the reconstruction against the input's, channel
        by channel (visible patches as given, hidden ones as predicted)."""
        if self.stft is None or self.stft.weight <= 0:
            return None, {}
        signal = self.reconstruct(raw, prediction, hidden)
        b, t = inputs.shape[0], inputs.shape[-1]
        spectral = multi_resolution_stft_loss(
            signal.reshape(b, -1, t), inputs.float().reshape(b, -1, t), self.stft
        )
        return self.stft.weight * spectral, {"stft": spectral.detach()}


class MaskedSignalModule(MAEModule):
    """Masked signal modeling (ECG, PPG, ...) with an optional multi-resolution STFT loss.

    Args:
        input_size: the input's shape without channels (linked from the datamodule).
        patch_size: [1, L] for per-channel tokens, [L] across channels.
        in_chans: input channels (linked from the datamodule).
        encoder: encoder configuration (fmtrain's ViT, or a pretrained time-series encoder
            such as `fmtrain.nn.timeseries.PatchTSMixerEncoder`).
        decoder: decoder architecture.
        normalize_targets: per-patch normalised targets (off: windows are normalised).
        stft: multi-resolution STFT loss (FFT sizes, hops, weight); `null` for MSE only.
            Every FFT size must fit the window (checked when the recipe is read).
        optimizer: AdamW and its schedules.
        compile: compile every transformer block with torch.compile.
        compile_backend: torch.compile backend.
        max_consecutive_bad_steps: stop after this many skipped non-finite steps in a row.
        attention_backend: SDPA kernels: auto, flash, efficient, math or cudnn (see
            `PretrainMethod`).
    """

    model_class = MaskedSignalModel

    def __init__(
        self,
        *,
        input_size: tuple[int, ...],
        patch_size: tuple[int, ...] = (1, 64),
        in_chans: int = 1,
        encoder: EncoderSpec = ViTEncoder(size="vit_small"),  # noqa: B008 (frozen)
        decoder: DecoderConfig | None = None,
        normalize_targets: bool = False,
        stft: STFTLossConfig | None = STFTLossConfig(),  # noqa: B008 (frozen)
        optimizer: OptimizerConfig | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        max_consecutive_bad_steps: int = 5,
        attention_backend: str = "auto",
    ) -> None:
        if stft is not None:  # before any weight is built: a bad recipe fails fast
            validate_stft_lengths(stft, int(input_size[-1]))
        super().__init__(
            input_size=input_size,
            patch_size=patch_size,
            in_chans=in_chans,
            encoder=encoder,
            decoder=decoder,
            normalize_targets=normalize_targets,
            optimizer=optimizer,
            compile=compile,
            compile_backend=compile_backend,
            max_consecutive_bad_steps=max_consecutive_bad_steps,
            attention_backend=attention_backend,
        )
        self.save_hyperparameters()
        self.method.spectra(self.grid.input_size, stft)

    @torch.no_grad()
    def reconstruction(self, batch) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
        """The first mask family's reconstruction of `batch`, and where it was hidden: one
        pass of the training forward, its prediction put back among the visible patches."""
        model = self.method
        inputs, visible, hidden = batch.inputs, batch.contexts[0], batch.targets[0]
        prediction = model(inputs, [visible], [hidden]).predictions[0]
        raw = patchify(inputs, model.patch_size)
        signal = model.reconstruct(raw, prediction, hidden)
        flags = torch.zeros_like(raw, dtype=torch.bool)
        flags.scatter_(1, hidden[..., None].expand(-1, -1, raw.shape[-1]), True)
        shown = unpatchify(flags.float(), model.input_size, model.patch_size) > 0.5
        return {"inputs": inputs.float(), "reconstruction": signal, "hidden": shown}
