"""Write a restoration dataset (blurry, sharp and spike voxel frames) from one real video."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from fmtrain.data.video.decode import read_video
from fmtrain.data.video.frame_io import write_png
from fmtrain.data.video.synthesis import simulate_spikes, spike_voxels, synthesize_blur

__all__ = ["SpikeConfig", "write_restoration_pairs"]

STREAMS = ("blur", "sharp", "spike_vox")


@dataclass(frozen=True, kw_only=True)
class SpikeConfig:
    """The simulated spike camera (see `simulate_spikes`) and its voxel binning.

    Attributes:
        threshold: accumulated intensity that fires a spike.
        gain: intensity added per time step for a white pixel (<= threshold).
        noise_std: Gaussian noise per step on the accumulator (0: none).
        substeps: spike time steps per sharp frame.
        bins: voxel bins per blurry frame; None gives one bin per sharp frame (`window`).
            Must divide `window * substeps`.
    """

    threshold: float = 1.0
    gain: float = 1.0
    noise_std: float = 0.0
    substeps: int = 4
    bins: int | None = None


def _spike_config(spike: SpikeConfig | Mapping | None) -> SpikeConfig | None:
    if spike is None or isinstance(spike, SpikeConfig):
        return spike
    known = {f.name for f in fields(SpikeConfig)}
    unknown = sorted(set(spike) - known)
    if unknown:
        # a misspelled key must not fall back to a default without a word
        raise ValueError(f"unknown spike option(s) {unknown}; known: {sorted(known)}")
    return SpikeConfig(**spike)


def write_restoration_pairs(
    video_path: str | Path,
    out_root: str | Path,
    *,
    split: str = "train",
    sequence: str | None = None,
    window: int = 7,
    clip_frames: int | None = None,
    size: tuple[int, int] | None = None,
    spike: SpikeConfig | Mapping | None = None,
    seed: int = 0,
    gamma: float = 2.2,
    overwrite: bool = False,
) -> dict:
    """Decode a video and write blurry/sharp pairs and spike voxels as sequence folders.

    Blurry frame `k` averages sharp frames `[k * window, (k + 1) * window)` (in linear
    light, see `synthesize_blur`); its target is the middle one, `k * window + window // 2`.
    The spike stream is simulated from all those sharp frames, `substeps` steps each, and
    binned per blurry frame. Files, with integer names that are not zero-padded::

        out_root/<split>/blur/<sequence>/<k>.png       uint8 RGB [H, W, 3]
        out_root/<split>/sharp/<sequence>/<k>.png      uint8 RGB [H, W, 3]
        out_root/<split>/spike_vox/<sequence>/<k>.npy  float32 [bins, H, W] spike counts

    Args:
        video_path: a video PyAV can decode.
        out_root: dataset root to write under.
        split: split folder name.
        sequence: sequence folder name; None uses the video's file stem.
        window: sharp frames per blurry frame.
        clip_frames: decode at most this many frames from the start; None: all. Frames past
            the last full window are not used.
        size: (height, width) to resize to; None keeps the video's size.
        spike: `SpikeConfig` or a dict of its fields; None uses the defaults. A misspelled
            key (`{"substep": 2}`) is a ValueError, not a silent default.
        seed: seeds the spike noise (used only when `noise_std > 0`).
        gamma: the blur's gamma (1 averages stored values).
        overwrite: replace existing files of this sequence; without it an existing,
            non-empty sequence folder is an error (stale frames would mix with new ones).

    Returns:
        dict(split, sequence, pairs, sharp_frames, spike_steps, bins, height, width, spike)
        with `pairs` the number of blurry frames written per stream.

    Raises:
        ValueError: the video is unreadable or shorter than `window`, a spike option is
            unknown or inconsistent, or the sequence already exists without `overwrite`.
    """
    config = _spike_config(spike) or SpikeConfig()
    bins = config.bins if config.bins is not None else window
    steps_per_pair = window * config.substeps
    if bins < 1 or steps_per_pair % bins:
        raise ValueError(
            f"spike bins={bins} must divide window * substeps = {window} * "
            f"{config.substeps} = {steps_per_pair}"
        )
    sequence = sequence if sequence is not None else Path(video_path).stem
    split_dir = Path(out_root) / split
    targets = {stream: split_dir / stream / sequence for stream in STREAMS}
    for folder in targets.values():
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise ValueError(
                    f"{folder} already holds files; pass overwrite=True or another sequence"
                )
            shutil.rmtree(folder)

    frames = read_video(video_path, max_frames=clip_frames, size=size)
    blurred, middle = synthesize_blur(frames, window, gamma=gamma)
    used = blurred.shape[0] * window
    spikes = simulate_spikes(
        frames[:used],
        threshold=config.threshold,
        gain=config.gain,
        noise_std=config.noise_std,
        rng=np.random.default_rng(seed),
        substeps=config.substeps,
    )
    voxels = spike_voxels(spikes, blurred.shape[0], bins)

    for k in range(blurred.shape[0]):
        write_png(targets["blur"] / f"{k}.png", blurred[k])
        write_png(targets["sharp"] / f"{k}.png", frames[middle[k]])
        targets["spike_vox"].mkdir(parents=True, exist_ok=True)
        np.save(targets["spike_vox"] / f"{k}.npy", voxels[k])
    return {
        "split": split,
        "sequence": sequence,
        "pairs": int(blurred.shape[0]),
        "sharp_frames": int(used),
        "spike_steps": int(spikes.shape[0]),
        "spikes": int(spikes.sum(dtype=np.int64)),
        "bins": int(bins),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
        "spike": asdict(config),
    }
