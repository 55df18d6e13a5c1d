"""Held-out evaluation of a restoration network on whole sequences, against two baselines.

Training validates on centre crops; this scores full frames of every sequence of a split:
the network's output, the blurry input itself (what a model that learned nothing returns,
since the network starts as the identity) and a frame average (each blurry frame averaged
with its neighbours, the simplest way to use several frames). PSNR and SSIM per frame,
means with percentile bootstrap intervals over frames, and paired differences (model minus
each baseline) resampled on the same frames.

Frames of one video are not independent, so the intervals are narrower than they would be
over many videos: they say how stable the mean is over these frames, not over footage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from fmtrain.data.video.frame_io import as_rgb, read_frame
from fmtrain.data.video.frames import list_sequences
from fmtrain.eval.bootstrap import bootstrap_ci, paired_bootstrap_diff

__all__ = [
    "BASELINES",
    "evaluate_restoration",
    "format_restoration_table",
    "frame_average",
    "restore_sequence",
    "save_restoration_picture",
]

SPIKE_STREAM = "spike_vox"


def frame_average(blur: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Each frame averaged with its `radius` neighbours on either side (fewer at the ends).

    Args:
        blur: frames [T, C, H, W].
        radius: neighbours per side; 0 returns the frames unchanged.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    t = blur.shape[0]
    out = torch.empty_like(blur)
    for i in range(t):
        out[i] = blur[max(i - radius, 0) : min(i + radius + 1, t)].mean(dim=0)
    return out


# name -> (blurry frames [T, C, H, W]) -> prediction; the rows every table reports
BASELINES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "blurry input": lambda blur: blur,
    "frame average (3 frames)": lambda blur: frame_average(blur, radius=1),
}


def _clip_starts(num_frames: int, clip_length: int) -> list[int]:
    """Non-overlapping clip starts, plus one ending at the last frame if they miss it."""
    starts = list(range(0, num_frames - clip_length + 1, clip_length))
    if starts[-1] + clip_length < num_frames:
        starts.append(num_frames - clip_length)
    return starts


@torch.no_grad()
def restore_sequence(
    network: nn.Module,
    blur: torch.Tensor,
    spikes: torch.Tensor | None,
    *,
    clip_length: int,
    multiple: Sequence[int],
) -> torch.Tensor:
    """Run the network over a whole sequence, clip by clip, at full frame size.

    Frames are padded (edge replicated) up to the network's spatial multiple and cropped
    back; the last clip is aligned with the sequence's end, so every frame is restored once
    and overlapping frames keep the earlier clip's output.

    Args:
        network: takes (blur [B, T, C, H, W], spikes [B, T, bins, H, W] or None).
        blur: frames [T, C, H, W] in [0, 1].
        spikes: spike voxels [T, bins, H, W], or None.
        clip_length: frames per call (the length it was trained on).
        multiple: (T, H, W) multiples the network needs; T must divide clip_length.

    Returns:
        Restored frames [T, C, H, W], on blur's device, clamped to [0, 1].
    """
    t, _, h, w = blur.shape
    if t < clip_length:
        raise ValueError(f"sequence has {t} frames, fewer than clip_length={clip_length}")
    _, mh, mw = multiple
    pad = (0, -w % mw, 0, -h % mh)  # (left, right, top, bottom) for the last two axes
    device = next(network.parameters()).device
    out = torch.empty_like(blur)
    done = 0
    for start in _clip_starts(t, clip_length):
        stop = start + clip_length
        clip = torch.nn.functional.pad(blur[start:stop], pad, mode="replicate")[None]
        spike_clip = None
        if spikes is not None:
            spike_clip = torch.nn.functional.pad(spikes[start:stop], pad, mode="replicate")[None]
            spike_clip = spike_clip.to(device)
        restored = network(clip.to(device), spike_clip)[0, :, :, :h, :w]
        out[done:stop] = restored[done - start :].to(out.device)
        done = stop
    return out.clamp(0, 1)


def _read_images(paths: Sequence[Path]) -> torch.Tensor:
    """PNG frames -> [T, 3, H, W] float in [0, 1] (gray repeated to 3 channels)."""
    frames = [as_rgb(read_frame(p)) for p in paths]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def _per_frame(pred: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    return psnr.cpu().numpy(), ssim.cpu().numpy()


def _mean(_: np.ndarray, values: np.ndarray) -> float:
    return float(np.mean(values))


def evaluate_restoration(
    network: nn.Module,
    root: str | Path,
    split: str,
    *,
    clip_length: int,
    multiple: Sequence[int],
    spikes: bool,
    n_boot: int = 1000,
    seed: int = 0,
    progress: Callable[[str], None] | None = print,
) -> dict:
    """PSNR and SSIM of the network and of each baseline on every frame of a split.

    Args:
        network: the restoration network (put in eval mode here).
        root: dataset root with `<split>/blur|sharp[|spike_vox]/<sequence>/<frame>`.
        split: the split to score (held out from training).
        clip_length: frames per network call.
        multiple: (T, H, W) multiples the network needs (e.g. `VRTLite.input_multiple`).
        spikes: read `spike_vox/` and give it to the network.
        n_boot: bootstrap resamples over frames.
        seed: resampling seed.
        progress: called with one line per sequence (None: silent).

    Returns:
        dict(frames, sequences, summary, differences, example): `summary` maps each row
        ("model" and every `BASELINES` name) to psnr/ssim intervals; `differences` maps
        "model - <baseline>" to paired psnr/ssim intervals; `example` holds the middle frame
        of the first sequence for each row and the sharp frame ([C, H, W] tensors).
    """
    streams = ("blur", "sharp") + ((SPIKE_STREAM,) if spikes else ())
    listing = list_sequences(root, split, streams)
    if not listing.sequences:
        raise ValueError(f"no sequence to evaluate in {listing.summary()}")
    was_training = network.training
    network.eval()
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    frame_ids: list[str] = []
    example: dict[str, torch.Tensor] = {}
    try:
        for seq in listing.sequences:
            blur, sharp = _read_images(seq.frames["blur"]), _read_images(seq.frames["sharp"])
            voxels = None
            if spikes:
                voxels = torch.from_numpy(
                    np.stack([read_frame(p) for p in seq.frames[SPIKE_STREAM]]).astype(np.float32)
                )
            predictions = {
                "model": restore_sequence(
                    network, blur, voxels, clip_length=clip_length, multiple=multiple
                ),
                **{name: make(blur) for name, make in BASELINES.items()},
            }
            for name, pred in predictions.items():
                psnr, ssim = _per_frame(pred, sharp)
                scores.setdefault(name, {"psnr": [], "ssim": []})
                scores[name]["psnr"].append(psnr)
                scores[name]["ssim"].append(ssim)
            frame_ids += [f"{seq.name}/{stem}" for stem in seq.stems]
            if not example:
                middle = len(seq) // 2
                example = {name: p[middle] for name, p in predictions.items()}
                example["sharp"] = sharp[middle]
                example["frame"] = f"{seq.name}/{seq.stems[middle]}"
            if progress is not None:
                psnr_model = float(np.mean(scores["model"]["psnr"][-1]))
                psnr_blur = float(np.mean(scores["blurry input"]["psnr"][-1]))
                progress(
                    f"[eval] {seq.name}: {len(seq)} frames, PSNR {psnr_model:.2f} dB "
                    f"(blurry input {psnr_blur:.2f} dB)"
                )
    finally:
        network.train(was_training)

    groups = np.arange(len(frame_ids))  # frames are the resampling unit (see module doc)
    dummy = np.zeros(len(frame_ids))
    values = {n: {m: np.concatenate(v) for m, v in s.items()} for n, s in scores.items()}
    summary = {
        name: {
            metric: bootstrap_ci(_mean, dummy, v, groups, n_boot=n_boot, seed=seed).to_dict()
            for metric, v in per.items()
        }
        for name, per in values.items()
    }
    differences = {
        f"model - {name}": {
            metric: paired_bootstrap_diff(
                _mean,
                dummy,
                values["model"][metric],
                values[name][metric],
                groups,
                n_boot=n_boot,
                seed=seed,
            ).to_dict()
            for metric in ("psnr", "ssim")
        }
        for name in BASELINES
    }
    return {
        "frames": len(frame_ids),
        "sequences": [s.name for s in listing.sequences],
        "summary": summary,
        "differences": differences,
        "example": example,
    }


def _cell(interval: dict, digits: int, signed: bool = False) -> str:
    sign = "+" if signed else ""
    point, low, high = interval["value"], interval["low"], interval["high"]
    return f"{point:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def format_restoration_table(result: dict) -> str:
    """Markdown: PSNR and SSIM per row with 95% intervals, then the paired differences."""
    lines = [
        f"Held-out frames: {result['frames']} ({', '.join(result['sequences'])})",
        "",
        "| prediction | PSNR (dB) [95% CI] | SSIM [95% CI] |",
        "| --- | --- | --- |",
    ]
    for name, per in result["summary"].items():
        lines.append(f"| {name} | {_cell(per['psnr'], 2)} | {_cell(per['ssim'], 4)} |")
    lines += [
        "",
        "| paired difference | PSNR (dB) [95% CI] | SSIM [95% CI] |",
        "| --- | --- | --- |",
    ]
    for name, per in result["differences"].items():
        psnr, ssim = _cell(per["psnr"], 2, True), _cell(per["ssim"], 4, True)
        lines.append(f"| {name} | {psnr} | {ssim} |")
    return "\n".join(lines)


def save_restoration_picture(result: dict, out_png: str | Path) -> str:
    """One held-out frame: blurry input | frame average | restored | sharp, PSNR in titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    example = result["example"]
    sharp = example["sharp"]
    panels = [*BASELINES, "model", "sharp"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, name in zip(axes[0], panels, strict=True):
        image = example[name]
        title = "sharp (target)" if name == "sharp" else name
        if name != "sharp":
            psnr = float(peak_signal_noise_ratio(image, sharp, data_range=1.0))
            title = f"{'restored' if name == 'model' else name}\n{psnr:.2f} dB"
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"held-out frame {example['frame']}")
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # leave the suptitle its own row
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return str(out_png)
