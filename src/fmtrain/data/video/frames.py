"""Sequence folders of frames: find a split, list its sequences, sort frames by number.

The layout is `ROOT/<split>/<stream>/<sequence>/<frame>.<ext>`, one folder per stream
("blur", "sharp", "spike_vox", ...). Frames are ordered by `natural_sort_key`, so "2.png"
comes before "10.png" whatever the zero padding. A frame is matched across streams by its
stem (file name without extension), so `blur/seq/7.png` pairs with `spike_vox/seq/7.npy`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FrameSequence",
    "SequenceListing",
    "check_split",
    "list_sequences",
    "natural_sort_key",
]

_CHUNKS = re.compile(r"(\d+)")


def natural_sort_key(name: str) -> tuple:
    """A sort key that orders the digit runs of `name` by value, the rest case-insensitively.

    "2.png" < "10.png" < "frame_11.png": digit chunks sort before text chunks at the same
    position, so bare numbers come before prefixed names. The name itself is the last
    element, so "01.png" and "1.png" still have a fixed order.

    Args:
        name: a file name (or any string).

    Returns:
        A tuple usable as `key=` in `sorted`.
    """
    parts: list[tuple[int, int | str]] = []
    for chunk in _CHUNKS.split(name):
        if not chunk:
            continue
        # (0, int) before (1, str): ints and strs are never compared with each other
        parts.append((0, int(chunk)) if chunk.isdigit() else (1, chunk.lower()))
    return (tuple(parts), name)


@dataclass(frozen=True)
class FrameSequence:
    """One sequence: the same frames in every stream.

    Attributes:
        name: the sequence folder's name.
        frames: stream name -> frame paths, in natural order; every stream has the same
            number of frames, matched by stem.
    """

    name: str
    frames: dict[str, tuple[Path, ...]]

    def __len__(self) -> int:
        return len(next(iter(self.frames.values()), ()))

    @property
    def stems(self) -> tuple[str, ...]:
        """Frame names without extension, in order (the same in every stream)."""
        return tuple(p.stem for p in next(iter(self.frames.values()), ()))


@dataclass
class SequenceListing:
    """What `list_sequences` found.

    Attributes:
        root: the split folder that was listed.
        streams: the streams asked for.
        sequences: sequences whose streams agree, in natural order of their names.
        refused: sequence name -> why it was left out (missing in a stream, frame counts
            or names that differ between streams).
    """

    root: Path
    streams: tuple[str, ...]
    sequences: list[FrameSequence] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per outcome, for logs: counts, then each refused sequence and why."""
        frames = sum(len(s) for s in self.sequences)
        lines = [
            f"{self.root}: {len(self.sequences)} sequence(s), {frames} frame(s) in streams "
            f"{list(self.streams)}; {len(self.refused)} refused"
        ]
        lines += [f"  refused {name!r}: {why}" for name, why in self.refused.items()]
        return "\n".join(lines)


def check_split(root: str | Path, split: str) -> Path:
    """The folder `root/split`, or a ValueError that lists the splits there are.

    Args:
        root: the dataset root.
        split: the split's folder name, matched exactly (case included).

    Returns:
        The split folder.

    Raises:
        ValueError: `root` is not a folder, or has no folder named `split`; the message names
            the splits found and, when only case differs, the one that was meant.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset root {str(root)!r} is not a folder (split {split!r} asked)")
    path = root / split
    # is_dir alone is not enough: on a case-insensitive filesystem "train" finds "Train"
    found = sorted((p.name for p in root.iterdir() if p.is_dir()), key=natural_sort_key)
    if split in found:
        return path
    message = f"split {split!r} not found under {root}; found {found}"
    same_case = [name for name in found if name.lower() == split.lower()]
    close = same_case or difflib.get_close_matches(split, found, n=1)
    if close:
        message += f": did you mean {close[0]!r}?"
    raise ValueError(message)


def _frame_files(folder: Path) -> list[Path]:
    # hidden files (".DS_Store", editor swap files) are never frames
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_sort_key(p.name))


def _disagreement(frames: dict[str, list[Path]]) -> str | None:
    """Why the streams of one sequence do not line up, or None when they do."""
    for stream, paths in frames.items():
        stems = [p.stem for p in paths]
        if len(set(stems)) != len(stems):
            dupes = sorted({s for s in stems if stems.count(s) > 1}, key=natural_sort_key)
            return f"stream {stream!r} has several files per frame name: {dupes[:5]}"
    (first, ref), *others = frames.items()
    ref_stems = [p.stem for p in ref]
    for stream, paths in others:
        stems = [p.stem for p in paths]
        if len(stems) != len(ref_stems):
            return f"{len(ref_stems)} frame(s) in {first!r} but {len(stems)} in {stream!r}"
        if stems != ref_stems:
            diff = sorted(set(ref_stems) ^ set(stems), key=natural_sort_key)
            return f"frame names differ between {first!r} and {stream!r}: {diff[:5]}"
    return None


def list_sequences(
    root: str | Path, split: str, streams: SequenceABC[str] = ("blur", "sharp")
) -> SequenceListing:
    """Every sequence of a split with its frame paths per stream, sorted numerically.

    A sequence is kept only when it exists in every stream and every stream holds the same
    frame names (stems); others go to `refused` with the reason, never silently dropped.
    Empty sequence folders are refused too.

    Args:
        root: the dataset root (the folder that holds the splits).
        split: the split folder, e.g. "train" (case must match; see `check_split`).
        streams: stream folders to read, the first one leading the comparison.

    Returns:
        A `SequenceListing` with the kept sequences and the refused ones.

    Raises:
        ValueError: the split or a stream folder is missing (the message names the path),
            `streams` is empty, or no sequence is left (the message lists why each was
            refused).
    """
    streams = tuple(streams)
    if not streams:
        raise ValueError("streams is empty: name at least one stream folder, e.g. ('blur',)")
    split_dir = check_split(root, split)
    missing = [split_dir / s for s in streams if not (split_dir / s).is_dir()]
    if missing:
        there = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        raise ValueError(
            f"stream folder(s) {[str(p) for p in missing]} missing; {split_dir} holds {there}"
        )
    names_per_stream = {
        s: {p.name for p in (split_dir / s).iterdir() if p.is_dir()} for s in streams
    }
    every = sorted(set().union(*names_per_stream.values()), key=natural_sort_key)
    listing = SequenceListing(root=split_dir, streams=streams)
    for name in every:
        absent = [s for s in streams if name not in names_per_stream[s]]
        if absent:
            listing.refused[name] = f"missing from stream(s) {absent}"
            continue
        frames = {s: _frame_files(split_dir / s / name) for s in streams}
        why = _disagreement(frames)
        if why is None and not frames[streams[0]]:
            why = "no frame files"
        if why is not None:
            listing.refused[name] = why
            continue
        listing.sequences.append(FrameSequence(name, {s: tuple(p) for s, p in frames.items()}))
    if not listing.sequences:
        raise ValueError(f"no usable sequence in {split_dir}:\n{listing.summary()}")
    return listing
