"""Supervised video restoration: blurry frames (+ spike voxels) in, sharp frames out.

The step: restore the clip, compare with the sharp frames by Charbonnier (fp32, eps checked)
plus a weighted download-free perceptual term (Fourier magnitudes and image gradients).
Validation reports PSNR and SSIM of the restored clip and of the blurry input (the baseline
the model must beat), and logs blur | restored | sharp pictures to TensorBoard.

It rides the same shell as pretraining (AdamW groups, schedules, numerics guard, resume,
checkpoints with the network's description, so `fmtrain.load_encoder` rebuilds the
restorer). The clip's (frames, height, width) play the role of the input size, and the
network's window x 2**(scales - 1) the role of the patch: a clip they do not divide is
refused when the recipe is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from fmtrain.core.grid import TokenGrid
from fmtrain.losses.restoration import charbonnier, check_charbonnier_eps, frequency_gradient_loss
from fmtrain.methods.base import MethodOutput, PretrainMethod
from fmtrain.methods.configs import OptimizerConfig
from fmtrain.methods.links import RecipeLink
from fmtrain.nn.restoration.spec import VRTNetwork

__all__ = ["RestorationLossConfig", "RestorationModule", "RestorationOutput", "Restorer"]

_KEY = "model.init_args"


@dataclass(kw_only=True)
class RestorationLossConfig:
    """Charbonnier + weight x perceptual (frequency and gradient) loss.

    Args:
        charbonnier_eps: eps of sqrt(d^2 + eps^2), in image units ([0, 1]); 1e-3 as in VRT.
            The loss is computed in fp32 whatever the training precision; an eps whose
            square underflows there is refused.
        perceptual_weight: weight of the frequency + gradient term (0: Charbonnier only).
    """

    charbonnier_eps: float = 1e-3
    perceptual_weight: float = 0.05

    def __post_init__(self) -> None:
        check_charbonnier_eps(
            self.charbonnier_eps, torch.float32, key=f"{_KEY}.loss.charbonnier_eps"
        )
        w = self.perceptual_weight
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"{_KEY}.loss.perceptual_weight={w} must be finite and >= 0")


@dataclass
class RestorationOutput(MethodOutput):
    """`restored`: the network's output [B, T, C, H, W]."""

    restored: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


class Restorer(nn.Module):
    """The network and its loss."""

    def __init__(self, network: nn.Module, loss: RestorationLossConfig) -> None:
        super().__init__()
        self.network = network
        self.loss = loss

    def forward(
        self, blur: torch.Tensor, sharp: torch.Tensor, spikes: torch.Tensor | None = None
    ) -> RestorationOutput:
        restored = self.network(blur, spikes)
        fidelity = charbonnier(restored, sharp, self.loss.charbonnier_eps)
        loss = fidelity
        logs: dict[str, torch.Tensor | float] = {"charbonnier": fidelity.detach()}
        if self.loss.perceptual_weight > 0:
            perceptual = frequency_gradient_loss(restored, sharp)
            loss = loss + self.loss.perceptual_weight * perceptual
            logs["perceptual"] = perceptual.detach()
        return RestorationOutput(loss=loss, logs=logs, restored=restored)


def _frames(x: torch.Tensor) -> torch.Tensor:
    """[B, T, C, H, W] -> [B * T, C, H, W] in [0, 1], fp32, for the image metrics."""
    return x.float().clamp(0, 1).flatten(0, 1)


class RestorationModule(PretrainMethod):
    """Video deblurring (VRT-style network), optionally guided by a spike stream.

    Args:
        input_size: (frames, height, width) of a clip (linked from the data).
        in_chans: image channels (linked from the data).
        spike_bins: spike voxel bins per frame, 0 for none (linked from the data).
        network: the restoration network (`fmtrain.nn.restoration.VRTNetwork`).
        loss: Charbonnier eps and perceptual weight.
        optimizer: AdamW and its schedules (VRT: Adam 4e-4, cosine).
        channels_last: run the network's 4D (per-frame) convolutions in channels_last; the
            attention stages stay in the default format (5D tensors have no channels_last).
        compile: compile the whole network with torch.compile (works with checkpointing).
        compile_backend: torch.compile backend.
        max_consecutive_bad_steps: stop after this many skipped non-finite steps in a row.
    """

    def __init__(
        self,
        *,
        input_size: tuple[int, int, int],
        in_chans: int = 3,
        spike_bins: int = 0,
        network: VRTNetwork = VRTNetwork(),  # noqa: B008 (frozen: a safe default)
        loss: RestorationLossConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_backend: str = "inductor",
        max_consecutive_bad_steps: int = 5,
    ) -> None:
        multiple = network.input_multiple()
        # the clip must tile into the network's windows at every scale: say so in recipe keys
        TokenGrid.from_sizes(
            input_size,
            multiple,
            input_key="data.init_args (clip_length, crop)",
            patch_key=f"{_KEY}.network (window x 2**(scales-1) of size {network.size!r})",
        )
        super().__init__(
            input_size=input_size,
            patch_size=multiple,
            in_chans=in_chans,
            encoder=replace(network, spike_bins=spike_bins),
            optimizer=optimizer,
            compile=compile,
            compile_backend=compile_backend,
            max_consecutive_bad_steps=max_consecutive_bad_steps,
        )
        self.save_hyperparameters()
        self.method = Restorer(self.build_encoder(), loss or RestorationLossConfig())
        if channels_last:
            self._channels_last()

    def _channels_last(self) -> None:
        network = self.method.network
        parts = getattr(network, "channels_last_modules", None)
        five_d = [n for n, m in network.named_modules() if isinstance(m, nn.Conv3d)]
        if parts is None or five_d:
            raise ValueError(
                f"{_KEY}.channels_last=true: the network "
                + (
                    f"has 3D convolutions on 5D tensors ({', '.join(five_d[:3])}), "
                    "which channels_last (a 4D layout) does not apply to"
                    if five_d
                    else "does not say which of its parts are 4D (channels_last_modules())"
                )
                + "; set it false, or use channels_last_3d in your own network"
            )
        for module in parts():
            module.to(memory_format=torch.channels_last)

    @classmethod
    def recipe_links(cls) -> list[RecipeLink]:
        # the clip's shape, channels and spike bins are decided by the data
        return [
            RecipeLink("data", "model.init_args.input_size", "input_size"),
            RecipeLink("data", "model.init_args.in_chans", "channels"),
            RecipeLink("data", "model.init_args.spike_bins", "spike_bins"),
        ]

    channel_axis = 2

    def expected_input_shape(self, batch_size: int) -> tuple[int, ...]:
        t, h, w = self.grid.input_size
        return (batch_size, t, self.in_chans, h, w)

    def forward_batch(self, batch) -> RestorationOutput:  # type: ignore[no-untyped-def]
        return self.method(batch.inputs, batch.sharp, batch.spikes)

    def evaluation_encoder(self) -> nn.Module:
        return self.method.network

    def _compile_blocks(self) -> None:
        """The whole network, not only transformer blocks: its graph is static."""
        self._compiled = True
        try:
            self.method.network.compile(backend=self.compile_backend)
        except Exception as err:
            raise ValueError(f"{_KEY}.compile_backend={self.compile_backend!r}: {err}") from err

    def validation_step(self, batch, batch_idx: int) -> dict:  # type: ignore[no-untyped-def]
        out = self.forward_batch(batch)
        restored, sharp, blur = _frames(out.restored), _frames(batch.sharp), _frames(batch.inputs)
        metrics = {
            "val/loss": out.loss,
            "val/psnr": peak_signal_noise_ratio(restored, sharp, data_range=1.0),
            "val/ssim": structural_similarity_index_measure(restored, sharp, data_range=1.0),
            "val/psnr_input": peak_signal_noise_ratio(blur, sharp, data_range=1.0),
            "val/ssim_input": structural_similarity_index_measure(blur, sharp, data_range=1.0),
        }
        self.log_dict(metrics, batch_size=batch.inputs.shape[0], sync_dist=True)
        if batch_idx == 0:
            self._log_pictures(batch.inputs[0], out.restored[0], batch.sharp[0])
        return {"loss": out.loss, "output": out}

    def _log_pictures(self, blur: torch.Tensor, restored: torch.Tensor, sharp: torch.Tensor):
        """blur | restored | sharp of a clip's middle frame, for TensorBoard."""
        loggers = self.loggers if self._trainer is not None else []
        t = blur.shape[0] // 2
        picture = torch.cat([blur[t], restored[t], sharp[t]], dim=-1).float().clamp(0, 1)
        for logger in loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("val/blur_restored_sharp", picture, self.global_step)
