"""A prepared signal dataset: quality-checked, normalised windows in zarr, from disk or a bucket.

Layout under the output location (a folder or a URL prefix)::

    prepare.json        the parameters it was made with (channels, rate, window, hop, ...)
    splits.json         participant id -> split
    windows.zarr/<split>/<index>   float16 [n_windows, channels, window], one chunk per window
    progress/<split>/   one JSON record per finished recording (the resume points)
    samples.json        per split, the recordings written, their window counts and provenance
    summary.json        counts, refused recordings and rejected windows by reason; written
                        last, and ``"complete": true`` marks a usable dataset

A window is one sample: its key is its recording's key (labels join on it) and its group
for splits and bootstrap intervals is its participant.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from fmtrain.core.storage import exists, is_remote, join, read_bytes

__all__ = ["PreparedSignalSplit", "PreparedSignals", "open_windows_group"]


def open_windows_group(url: str, storage_options: dict[str, Any] | None, mode: str):
    """The ``windows.zarr`` group of a prepared signal dataset at `url`."""
    import zarr

    target = join(url, "windows.zarr")
    if is_remote(target):
        return zarr.open_group(target, mode=mode, storage_options=storage_options or {})
    return zarr.open_group(target.removeprefix("file://"), mode=mode)


def array_name(split: str, index: int) -> str:
    """Name of recording `index`'s window array inside ``windows.zarr``."""
    return f"{split}/{index:07d}"


class PreparedSignalSplit:
    """One split's windows, flattened over recordings; `load(i)` is float32 [C, window].

    `samples[i]` describes window i (key, participant_id, device, attributes, recording,
    window). A recording's windows are read in one request the first time one of them is
    needed and kept in memory up to `cache_mb` per process: a window is a few kB, and a
    store request per window would cost more than the training step. Safe to pickle into
    loader workers: each process opens the store itself.

    Args:
        url: the prepared dataset.
        split: split name.
        recordings: the split's records from ``samples.json``.
        storage_options: fsspec options.
        cache_mb: memory for whole recordings' windows, per process (0: read each window).
    """

    def __init__(
        self,
        url: str,
        split: str,
        recordings: list[dict],
        storage_options: dict | None = None,
        cache_mb: float = 1024.0,
    ) -> None:
        self.url, self.split, self.storage_options = url, split, storage_options
        self.recordings = recordings
        self.cache_bytes = int(cache_mb * 2**20)
        self.samples = [
            {**{k: r[k] for k in ("key", "participant_id", "device", "attributes")},
             "recording": r["index"], "window": w}
            for r in recordings
            for w in range(r["windows"])
        ]  # fmt: skip
        self._group = None
        self._arrays: dict[int, Any] = {}
        self._cached: dict[int, np.ndarray] = {}
        self._cached_bytes = 0

    def value_records(self) -> list[dict]:
        """One record per stored recording (``key``, ``stats``: finite, range; see prepare)."""
        return self.recordings

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_group": None, "_arrays": {}, "_cached": {}, "_cached_bytes": 0}

    def _array(self, recording: int):
        if recording not in self._arrays:
            if self._group is None:
                self._group = open_windows_group(self.url, self.storage_options, "r")
            self._arrays[recording] = self._group[array_name(self.split, recording)]
        return self._arrays[recording]

    def load(self, index: int) -> torch.Tensor:
        sample = self.samples[index]
        recording = sample["recording"]
        if recording in self._cached:
            window = self._cached[recording][sample["window"]]
        else:
            array = self._array(recording)
            size = int(np.prod(array.shape)) * array.dtype.itemsize
            if self._cached_bytes + size <= self.cache_bytes:
                self._cached[recording] = np.asarray(array[:])
                self._cached_bytes += size
                window = self._cached[recording][sample["window"]]
            else:
                window = array[sample["window"]]
        return torch.from_numpy(np.asarray(window, dtype=np.float32))


class PreparedSignals:
    """A complete prepared signal dataset, opened for reading.

    Raises:
        FileNotFoundError: when `url` holds no complete prepared dataset; the message says
            how to make one.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url, self.storage_options = url, storage_options
        summary_url = join(url, "summary.json")
        if not exists(summary_url, storage_options):
            raise FileNotFoundError(
                f"no prepared signal dataset at {url} (looked for {summary_url}); set "
                "data.source so training prepares it, or run `fmtrain prepare-signals`"
            )
        self.summary = self._json("summary.json")
        if not self.summary.get("complete"):
            raise FileNotFoundError(
                f"the prepared signal dataset at {url} is incomplete ({summary_url}: "
                f"{self.summary.get('failure', 'interrupted')}); run it again to finish"
            )
        self.params = self._json("prepare.json")
        self.samples: dict[str, list[dict]] = self._json("samples.json")

    def _json(self, name: str) -> Any:
        return json.loads(read_bytes(join(self.url, name), self.storage_options))

    def split(self, name: str) -> PreparedSignalSplit:
        """The windows of split `name`.

        Raises:
            ValueError: when the split is missing or empty, listing the splits there are.
        """
        recordings = self.samples.get(name, [])
        if not recordings:
            sizes = {k: sum(r["windows"] for r in v) for k, v in self.samples.items()}
            raise ValueError(
                f"split {name!r} of the prepared signals at {self.url} is "
                f"{'empty' if name in self.samples else 'missing'}; windows per split: {sizes}. "
                "Check data.train_split / data.val_split and data.split_fractions."
            )
        return PreparedSignalSplit(self.url, name, recordings, self.storage_options)
