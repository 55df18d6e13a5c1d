"""Clips of a restoration dataset: blurry frames, sharp targets and spike voxels, aligned.

A split folder holds streams `blur/`, `sharp/` and optionally `spike_vox/` (one `.npy` of
[bins, H, W] per blurry frame), each with the same sequences and frame names. A clip is
`clip_length` consecutive frames of one sequence, read from RAM when the frame cache holds
them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmtrain.data.video.clips import ClipIndex, FrameCache
from fmtrain.data.video.frame_io import as_rgb, read_frame
from fmtrain.data.video.frames import list_sequences

log = logging.getLogger("fmtrain.data")

__all__ = ["RestorationClips"]

SPIKE_STREAM = "spike_vox"


class RestorationClips:
    """Indexable clips of one split.

    Args:
        root: dataset root (holds the split folders).
        split: split folder name (case must match; a near miss is named in the error).
        clip_length: frames per clip.
        stride: frames between consecutive clip starts.
        spikes: also read `spike_vox/`.
        cache: a shared `FrameCache`, or None to read from disk every time.

    Attributes:
        samples: per clip, a description dict (``key``, ``sequence``, ``start``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        clip_length: int,
        stride: int = 1,
        spikes: bool = False,
        cache: FrameCache | None = None,
    ) -> None:
        streams: tuple[str, ...] = ("blur", "sharp") + ((SPIKE_STREAM,) if spikes else ())
        self.listing = list_sequences(root, split, streams)
        for name, why in self.listing.refused.items():
            log.warning("split %r: sequence %r refused: %s", split, name, why)
        self.index = ClipIndex(self.listing.sequences, clip_length, stride)
        if self.index.short_sequences:
            log.warning("split %r: %s", split, self.index.summary())
        self.sequences = {s.name: s for s in self.listing.sequences}
        self.streams, self.spikes, self.cache = streams, spikes, cache
        self.clip_length = clip_length
        self.samples = [
            {"key": f"{c.sequence}/{c.start}", "sequence": c.sequence, "start": c.start}
            for c in self.index.clips
        ]

    def __len__(self) -> int:
        return len(self.index)

    def _frame(self, path: Path) -> np.ndarray:
        return read_frame(path) if self.cache is None else self.cache.get(path, read_frame)

    def frame_paths(self, index: int) -> dict[str, Sequence[Path]]:
        clip = self.index[index]
        frames = self.sequences[clip.sequence].frames
        stop = clip.start + self.clip_length
        return {s: frames[s][clip.start : stop] for s in self.streams}

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Clip `index`: ``blur`` and ``sharp`` uint8 [T, H, W, 3] (gray frames repeated to 3
        channels), ``spike_vox`` float32 [T, bins, H, W] when spikes are read."""
        out = {}
        for stream, paths in self.frame_paths(index).items():
            frames = [self._frame(p) for p in paths]
            if stream != SPIKE_STREAM:
                frames = [as_rgb(f) for f in frames]
            out[stream] = np.stack(frames)
        if SPIKE_STREAM in out:
            out[SPIKE_STREAM] = out[SPIKE_STREAM].astype(np.float32)
        shapes = {s: a.shape[1:3] if s != SPIKE_STREAM else a.shape[2:] for s, a in out.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"clip {self.samples[index]['key']}: frame sizes differ: {shapes}")
        return out

    def fill_cache(self) -> dict:
        """Read frames into the cache, in clip order, until its budget is full; its report."""
        if self.cache is None:
            raise ValueError("no cache to fill: give RestorationClips a FrameCache")
        used = {c.sequence for c in self.index.clips}  # frames of too-short sequences: never read
        for seq in self.listing.sequences:
            if seq.name not in used:
                continue
            for stream in self.streams:
                for path in seq.frames[stream]:
                    self.cache.get(path, read_frame)
                    if path not in self.cache:  # full: the first frame that did not fit
                        return self.cache.report()
        return self.cache.report()
