"""Supervised video restoration data: clips of blurry frames (+ spike voxels) and sharp targets.

Reads the sequence-folder layout (`ROOT/<split>/blur|sharp|spike_vox/<sequence>/<frame>`)
through `fmtrain.data.video`: frames in numeric order, split names checked (with the near
miss named), short sequences counted and named. Training batches come from the same
resumable stream as pretraining (batch k is a function of the seed and k); every clip is
randomly cropped to `crop` and flipped, the same way in every stream and frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fmtrain.data.video.clips import FrameCache
from fmtrain.data.video.restoration_clips import SPIKE_STREAM, RestorationClips
from fmtrain.datamodules.settings import (
    require_loader_settings,
    require_positive,
    require_whole,
)
from fmtrain.datamodules.stream import stream_loader, validation_loader
from fmtrain.datamodules.synthetic import synthetic_restoration

log = logging.getLogger("fmtrain.data")

__all__ = ["RestorationBatch", "RestorationDataModule"]


@dataclass
class RestorationBatch:
    """Float tensors in [0, 1] (spike voxels as counts); Lightning moves every field.

    Attributes:
        inputs: blurry frames [B, T, 3, H, W].
        sharp: sharp targets [B, T, 3, H, W].
        spikes: spike voxels [B, T, bins, H, W], or None without a spike stream.
        sample_ids: int64 [B] clip index of each sample.
    """

    inputs: torch.Tensor
    sharp: torch.Tensor
    spikes: torch.Tensor | None = None
    sample_ids: torch.Tensor | None = None

    def head(self, size: int) -> RestorationBatch:
        """The first `size` clips (for single-sample checks)."""
        return RestorationBatch(
            inputs=self.inputs[:size],
            sharp=self.sharp[:size],
            spikes=None if self.spikes is None else self.spikes[:size],
            sample_ids=None if self.sample_ids is None else self.sample_ids[:size],
        )


def _crop_flip(clip: dict[str, np.ndarray], crop: tuple[int, int], rng) -> dict[str, np.ndarray]:
    """The same random crop and flips for every stream and frame of a clip."""
    h, w = clip["blur"].shape[1:3]
    ch, cw = crop
    top = int(rng.integers(0, h - ch + 1)) if rng is not None else (h - ch) // 2
    left = int(rng.integers(0, w - cw + 1)) if rng is not None else (w - cw) // 2
    flip_h = rng is not None and rng.uniform() < 0.5
    flip_v = rng is not None and rng.uniform() < 0.5
    out = {}
    for stream, frames in clip.items():
        # images are [T, H, W, C]; spike voxels [T, bins, H, W]
        hw = (1, 2) if stream != SPIKE_STREAM else (2, 3)
        box = [slice(None)] * frames.ndim
        box[hw[0]], box[hw[1]] = slice(top, top + ch), slice(left, left + cw)
        part = frames[tuple(box)]
        if flip_h:
            part = np.flip(part, axis=hw[1])
        if flip_v:
            part = np.flip(part, axis=hw[0])
        out[stream] = part
    return out


class _ClipTransform:
    """(clip, rng) -> cropped, flipped clip; picklable for loader workers."""

    def __init__(self, crop: tuple[int, int]) -> None:
        self.crop = crop

    def __call__(self, clip: dict[str, np.ndarray], rng) -> dict[str, np.ndarray]:
        return _crop_flip(clip, self.crop, rng)


def _to_batch(clips: list[dict[str, np.ndarray]], ids) -> RestorationBatch:
    def images(stream: str) -> torch.Tensor:
        stacked = np.stack([np.ascontiguousarray(c[stream]) for c in clips])  # [B,T,H,W,C]
        # [B, T, C, H, W], laid out contiguously (the network reshapes frames, not strides)
        return torch.from_numpy(stacked).permute(0, 1, 4, 2, 3).contiguous().float() / 255.0

    spikes = None
    if SPIKE_STREAM in clips[0]:
        spikes = torch.from_numpy(np.stack([np.ascontiguousarray(c[SPIKE_STREAM]) for c in clips]))
    return RestorationBatch(
        inputs=images("blur"),
        sharp=images("sharp"),
        spikes=spikes,
        sample_ids=torch.as_tensor(list(ids), dtype=torch.int64),
    )


def _train_batch(samples, ids, rng) -> RestorationBatch:
    return _to_batch(samples, ids)


class _CentreCropped(Dataset):
    """Validation clips, centre-cropped to the training crop (fixed shapes, no randomness)."""

    def __init__(self, clips: RestorationClips, crop: tuple[int, int]) -> None:
        self.clips, self.crop = clips, crop

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], int]:
        return _crop_flip(self.clips.load(index), self.crop, None), index


def _val_collate(items) -> RestorationBatch:
    return _to_batch([c for c, _ in items], [i for _, i in items])


class RestorationDataModule(pl.LightningDataModule):
    """Clips for supervised deblurring from sequence folders.

    Args:
        root: dataset root holding the split folders (e.g. GoPro-like `train/`, `test/`).
        train_split: split to train on (the folder name, case included).
        val_split: split to validate on; "" turns validation off.
        clip_length: frames per clip (the model's temporal input).
        clip_stride: frames between training clip starts (validation uses clip_length).
        crop: (height, width) of the random training crop and the centre validation crop.
        spike_bins: bins of the `spike_vox/` stream (one .npy of [bins, H, W] per frame) to
            read with every clip; 0 reads no spikes. Checked against the files at setup.
        batch_size: clips per device and step.
        val_batch_size: clips per validation batch (defaults to batch_size).
        num_workers: loader worker processes.
        cache_bytes: RAM for decoded training frames (0: off). Filled before training, in
            clip order, until full; a cache that ends up empty stops the run with the reason.
        seed: seed of clip order and augmentation.
    """

    # a few generated samples in the recipe's geometry (`fmtrain check --synthetic`)
    write_synthetic = classmethod(synthetic_restoration)

    def __init__(
        self,
        *,
        root: str,
        train_split: str = "train",
        val_split: str = "test",
        clip_length: int = 6,
        clip_stride: int = 1,
        crop: tuple[int, int] = (192, 192),
        spike_bins: int = 0,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        cache_bytes: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        require_loader_settings(batch_size, val_batch_size, num_workers)
        require_whole("clip_length", clip_length, 1)
        require_whole("clip_stride", clip_stride, 1)
        require_positive("crop", crop)
        require_whole("cache_bytes", cache_bytes, 0)
        require_whole("spike_bins", spike_bins, 0)
        self.root = root
        self.train_split, self.val_split = train_split, val_split
        self.clip_length, self.clip_stride = clip_length, clip_stride
        self.crop = (int(crop[0]), int(crop[1]))
        self.spike_bins = spike_bins
        self.spikes = spike_bins > 0
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.cache_bytes = cache_bytes
        self.seed = seed
        self.train_set: RestorationClips | None = None
        self.val_set: RestorationClips | None = None
        self.cache: FrameCache | None = None

    # --- what the method and check read ------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int, int]:
        """(frames, height, width) of every batch."""
        return (self.clip_length, *self.crop)

    @property
    def channels(self) -> int:
        return 3

    num_mask_families = 0
    sampler = None
    sample_noun = "clips"
    source_key = "data.init_args.root"
    more_data_fix = (
        "add sequences to the training split, or lower data.init_args.clip_stride so clips "
        "overlap more"
    )

    def describe(self) -> dict:
        return {"input_size": list(self.input_size), "spike_bins": self.spike_bins}

    # --- Lightning hooks ------------------------------------------------------------------------
    def _clips(self, which: str, stride: int, cache: FrameCache | None) -> RestorationClips:
        """Clips of the split named by the setting `which` (train_split or val_split); an
        error is prefixed with the setting it is about, so `check` files it under that key."""
        split = getattr(self, which)
        if not Path(self.root).is_dir():
            raise ValueError(f"data.init_args.root={self.root!r} is not a folder")
        try:
            return RestorationClips(
                Path(self.root),
                split,
                clip_length=self.clip_length,
                stride=stride,
                spikes=self.spikes,
                cache=cache,
            )
        except ValueError as err:
            if "clip_length" in str(err):
                key = f"clip_length={self.clip_length}"
            elif str(err).startswith(f"split {split!r} not found"):
                key = f"{which}={split!r}"
            else:  # a missing stream folder, or no usable sequence
                key = f"root={self.root!r}"
            raise ValueError(f"data.init_args.{key}: {err}") from err

    def setup(self, stage: str | None = None) -> None:
        self.cache = FrameCache(self.cache_bytes) if self.cache_bytes else None
        self.train_set = self._clips("train_split", self.clip_stride, self.cache)
        first_clip = self.train_set.load(0)
        h, w = first_clip["blur"].shape[1:3]
        if h < self.crop[0] or w < self.crop[1]:
            raise ValueError(
                f"data.init_args.crop={list(self.crop)} is larger than the frames "
                f"({h} x {w}) of {self.train_set.samples[0]['key']}"
            )
        if self.spikes:
            first = self.train_set.frame_paths(0)[SPIKE_STREAM][0]
            found = first_clip[SPIKE_STREAM].shape[1]  # [T, bins, H, W]
            if found != self.spike_bins:
                raise ValueError(
                    f"data.init_args.spike_bins={self.spike_bins}, but {first} holds {found} "
                    f"bins: set data.init_args.spike_bins={found}"
                )
        if self.cache is not None:
            report = self.train_set.fill_cache()
            try:
                self.cache.require_nonempty()
            except ValueError as err:
                raise ValueError(f"data.init_args.cache_bytes={self.cache_bytes}: {err}") from err
            log.info("frame cache: %s", report)
        if self.val_split:
            self.val_set = self._clips("val_split", self.clip_length, None)
        log.info(
            "data: %d train / %d val clips of %d frames from %s, crop %s, spike bins %d",
            len(self.train_set),
            len(self.val_set) if self.val_set else 0,
            self.clip_length,
            self.root,
            list(self.crop),
            self.spike_bins,
        )

    def train_dataloader(self) -> DataLoader:
        return stream_loader(
            self.train_set,
            trainer=self.trainer,
            batch_size=self.batch_size,
            make_batch=_train_batch,
            transform=_ClipTransform(self.crop),
            seed=self.seed,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return validation_loader(
            _CentreCropped(self.val_set, self.crop),
            batch_size=self.val_batch_size,
            num_workers=self.num_workers,
            collate_fn=_val_collate,
        )
