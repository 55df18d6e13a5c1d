"""Clips of consecutive frames over sequences, and a RAM cache of decoded frames.

Both keep a record of what they could not use, so an empty dataset or cache explains
itself instead of training on nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

__all__ = ["Clip", "ClipIndex", "FrameCache"]


class _Sized(Protocol):
    name: str

    def __len__(self) -> int: ...


class Clip(NamedTuple):
    """Frames `[start, start + clip_length)` of one sequence."""

    sequence: str
    start: int


class ClipIndex:
    """Every clip of `clip_length` consecutive frames, starting every `stride` frames.

    Sequences shorter than `clip_length` yield no clip; they are recorded by name in
    `short_sequences` and in `summary()`, never dropped without a trace.

    Args:
        sequences: name -> frame count, or objects with `.name` and `len()` (the
            `FrameSequence`s of `list_sequences(...).sequences`).
        clip_length: frames per clip (>= 1).
        stride: frames between the starts of consecutive clips of a sequence (>= 1).

    Raises:
        ValueError: no sequence given, bad sizes, or no sequence long enough for one clip
            (the message names `clip_length` and the longest sequence's length).
    """

    def __init__(
        self,
        sequences: Mapping[str, int] | Iterable[_Sized],
        clip_length: int,
        stride: int = 1,
    ) -> None:
        if clip_length < 1 or stride < 1:
            raise ValueError(f"clip_length and stride must be >= 1, got {clip_length}, {stride}")
        if isinstance(sequences, Mapping):
            lengths = {str(k): int(v) for k, v in sequences.items()}
        else:
            lengths = {s.name: len(s) for s in sequences}
        if not lengths:
            raise ValueError("ClipIndex got no sequences: check the split and stream folders")
        self.clip_length = clip_length
        self.stride = stride
        self.lengths = lengths
        self.short_sequences: list[tuple[str, int]] = []
        self.clips: list[Clip] = []
        for name, length in lengths.items():
            if length < clip_length:
                self.short_sequences.append((name, length))
                continue
            self.clips += [Clip(name, s) for s in range(0, length - clip_length + 1, stride)]
        if not self.clips:
            longest = max(lengths.items(), key=lambda kv: kv[1])
            raise ValueError(
                f"no clip of clip_length={clip_length} fits: the longest of {len(lengths)} "
                f"sequence(s) is {longest[0]!r} with {longest[1]} frame(s); "
                f"lower clip_length to at most {longest[1]}"
            )

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> Clip:
        return self.clips[index]

    def summary(self) -> str:
        """Counts of clips and sequences, and each short sequence with its length."""
        used = len(self.lengths) - len(self.short_sequences)
        text = (
            f"{len(self.clips)} clip(s) of {self.clip_length} frame(s) (stride {self.stride}) "
            f"from {used} of {len(self.lengths)} sequence(s)"
        )
        if self.short_sequences:
            shorts = ", ".join(f"{n!r} ({k} frames)" for n, k in self.short_sequences)
            text += f"; shorter than {self.clip_length}, skipped: {shorts}"
        return text


class FrameCache:
    """Decoded frames kept in RAM up to a byte budget, keyed by path.

    Fill-until-full, not LRU: the first frames that fit stay for good and later ones are
    read from disk each time. Training reads every frame once per epoch, and under that
    pattern an LRU smaller than the data evicts each frame before it is asked again (no
    hits at all), while a fixed set keeps `budget / data size` of the reads in RAM.

    Args:
        byte_budget: most bytes of array data to hold (>= 0); 0 disables caching.
    """

    def __init__(self, byte_budget: int) -> None:
        if byte_budget < 0:
            raise ValueError(f"byte_budget must be >= 0, got {byte_budget}")
        self.budget = int(byte_budget)
        self._items: dict[str, np.ndarray] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        # the smallest frame that did not fit, as (bytes, shape, dtype): explains emptiness
        self._smallest_refused: tuple[int, tuple[int, ...], str] | None = None

    def get(self, path: str | Path, load: Callable[[Path], np.ndarray]) -> np.ndarray:
        """The frame at `path`: from RAM when cached, else `load(path)`, kept if it fits.

        The returned array is the cached one: treat it as read-only (it is marked so).
        """
        key = str(path)
        cached = self._items.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        frame = load(Path(path))
        size = int(frame.nbytes)
        if self._bytes + size <= self.budget:
            frame.flags.writeable = False  # an in-place augmentation would corrupt the cache
            self._items[key] = frame
            self._bytes += size
        elif self._smallest_refused is None or size < self._smallest_refused[0]:
            self._smallest_refused = (size, tuple(frame.shape), str(frame.dtype))
        return frame

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, path: object) -> bool:
        return str(path) in self._items

    def report(self) -> dict:
        """dict(items, bytes, budget, hits, misses)."""
        return {
            "items": len(self._items),
            "bytes": self._bytes,
            "budget": self.budget,
            "hits": self.hits,
            "misses": self.misses,
        }

    def require_nonempty(self) -> None:
        """Raise a ValueError saying why the cache holds nothing; return if it holds a frame."""
        if self._items:
            return
        if self.misses == 0:
            raise ValueError(
                "FrameCache is empty: no frame was ever requested (an empty dataset or "
                "split upstream?)"
            )
        if self.budget == 0:
            raise ValueError("FrameCache is empty: byte_budget is 0, so caching is off")
        assert self._smallest_refused is not None  # misses > 0 and nothing kept
        size, shape, dtype = self._smallest_refused
        raise ValueError(
            f"FrameCache is empty: one frame is {size} bytes ({dtype} {list(shape)}) but the "
            f"budget is {self.budget} bytes; raise byte_budget to at least {size}"
        )
