"""Restoration clips through the datamodule: aligned crops, resumable order, clear refusals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import skvideo
import torch

from fmtrain.data.video.frame_io import write_png
from fmtrain.data.video.pairs import write_restoration_pairs
from fmtrain.datamodules.restoration import RestorationDataModule

VIDEOS = Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data"


def _write_split(root: Path, split: str, lengths: dict[str, int], same: bool, seed: int = 0):
    """PNG sequences whose blur equals sharp when `same` (to see crops line up), and spike
    voxels whose first bin holds the frame's mean gray level."""
    rng = np.random.default_rng(seed)
    for name, n in lengths.items():
        for k in range(n):
            sharp = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
            blur = sharp if same else (sharp // 2).astype(np.uint8)
            for stream, frame in (("sharp", sharp), ("blur", blur)):
                write_png(root / split / stream / name / f"{k}.png", frame)
            vox = np.repeat(sharp.mean(-1, keepdims=True).transpose(2, 0, 1), 3, axis=0)
            path = root / split / "spike_vox" / name / f"{k}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vox.astype(np.float32))


@pytest.fixture
def toy(tmp_path) -> Path:
    _write_split(tmp_path, "train", {"a": 7, "b": 12, "short": 2}, same=True)
    _write_split(tmp_path, "test", {"c": 6}, same=True, seed=1)
    return tmp_path


def _dm(root, **kwargs) -> RestorationDataModule:
    args = dict(root=str(root), clip_length=4, crop=(16, 16), batch_size=3, num_workers=0)
    dm = RestorationDataModule(**(args | kwargs))
    dm.setup("fit")
    return dm


def test_batches_are_aligned_crops_of_every_stream(toy):
    dm = _dm(toy, spike_bins=3)
    assert dm.input_size == (4, 16, 16) and dm.channels == 3 and dm.spike_bins == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch.inputs.shape == batch.sharp.shape == (3, 4, 3, 16, 16)
    assert batch.spikes.shape == (3, 4, 3, 16, 16)
    assert float(batch.inputs.min()) >= 0.0 and float(batch.inputs.max()) <= 1.0
    # blur == sharp on disk: any misaligned crop or flip between streams would show here
    torch.testing.assert_close(batch.inputs, batch.sharp)
    # the spike voxels went through the same crop and flips as the images
    gray = batch.sharp.mean(2) * 255.0
    torch.testing.assert_close(batch.spikes[:, :, 0], gray, atol=0.6, rtol=0)
    val = next(iter(dm.val_dataloader()))
    assert val.inputs.shape[1:] == (4, 3, 16, 16)


def test_order_and_augmentation_resume_exactly(toy):
    first = _dm(toy)
    second = _dm(toy)
    a = [b.inputs for _, b in zip(range(4), iter(first.train_dataloader()), strict=False)]
    b = [b.inputs for _, b in zip(range(4), iter(second.train_dataloader()), strict=False)]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], a[1])


def test_short_sequences_are_named_and_too_long_clips_refused(toy, caplog):
    with caplog.at_level("WARNING", logger="fmtrain.data"):
        dm = _dm(toy)
    assert "short" in caplog.text  # 2 frames < clip_length 4: counted and named
    assert {s["sequence"] for s in dm.train_set.samples} == {"a", "b"}
    with pytest.raises(ValueError, match=r"clip_length.*12"):
        _dm(toy, clip_length=20)


def test_split_names_are_checked_with_the_near_miss(toy):
    with pytest.raises(ValueError, match=r"'Train'.*did you mean 'train'"):
        _dm(toy, train_split="Train")


def test_frame_cache_reports_and_refuses_to_start_empty(toy, caplog):
    with caplog.at_level("INFO", logger="fmtrain.data"):
        dm = _dm(toy, cache_bytes=10**7)
    report = dm.cache.report()
    assert report["items"] == 2 * (7 + 12) and report["bytes"] == report["items"] * 24 * 32 * 3
    assert "frame cache" in caplog.text
    next(iter(dm.train_dataloader()))
    assert dm.cache.report()["hits"] > 0
    with pytest.raises(ValueError, match=r"data\.init_args\.cache_bytes=100:.*2304 bytes"):
        _dm(toy, cache_bytes=100)


def test_crop_larger_than_the_frames_is_refused(toy):
    with pytest.raises(ValueError, match=r"data\.init_args\.crop=\[32, 32\].*24 x 32"):
        _dm(toy, crop=(32, 32))


def test_pairs_from_a_real_video_train_batches(tmp_path):
    for split, video in (("train", "carphone_pristine.mp4"), ("test", "bikes.mp4")):
        write_restoration_pairs(
            VIDEOS / video, tmp_path, split=split, window=5, clip_frames=40, size=(48, 64)
        )
    dm = _dm(tmp_path, spike_bins=5, crop=(32, 32))
    batch = next(iter(dm.train_dataloader()))
    assert batch.inputs.shape == (3, 4, 3, 32, 32) and batch.spikes.shape[:2] == (3, 4)
    # synthesized blur is not the sharp frame, and is closer to it than noise would be
    diff = (batch.inputs - batch.sharp).abs().mean()
    assert 0.0 < float(diff) < 0.2


def test_spike_bins_are_checked_against_the_files(toy):
    with pytest.raises(ValueError, match=r"data\.init_args\.spike_bins=4, but .*0\.npy holds 3"):
        _dm(toy, spike_bins=4)
