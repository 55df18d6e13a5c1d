"""A prepared dataset: preprocessed volumes in zarr, readable from disk or object storage.

Layout under the output location (a folder or a URL prefix)::

    prepare.json        the parameters it was made with (spacing, size, splits, source, ...)
    splits.json         participant id -> split, cut among participants with a readable volume
    volumes.zarr/pool   one float16 array of every listed item, [N, *size], one chunk per
                        volume (format 1 had one array per split instead)
    progress/pool/      one small JSON record per finished volume (written after its chunk),
                        so an interrupted run resumes without redoing finished work
    samples.json        per split, the volumes that were written (``index`` into the pool),
                        with their provenance
    summary.json        counts, skipped files with reasons, shape/spacing histograms per
                        device; written last, and ``"complete": true`` marks a usable dataset

One chunk per volume makes a random sample one object read, locally or from a bucket, which
is what the stateless, exactly-resumable training stream needs.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from fmtrain.core.storage import exists, is_remote, join, read_bytes

__all__ = ["PreparedDataset", "PreparedSplit", "open_zarr_group"]


def open_zarr_group(url: str, storage_options: dict[str, Any] | None, mode: str):
    """The ``volumes.zarr`` group of a prepared dataset at `url` (local path or URL)."""
    import zarr

    target = join(url, "volumes.zarr")
    if is_remote(target):
        return zarr.open_group(target, mode=mode, storage_options=storage_options or {})
    return zarr.open_group(target.removeprefix("file://"), mode=mode)


class PreparedSplit:
    """One split's volumes; `load(i)` returns float32 [1, *size]. Safe to pickle into
    loader workers: each process opens the store itself, on first use."""

    def __init__(
        self,
        url: str,
        split: str,
        indices: list[int],
        samples: list[dict],
        storage_options: dict[str, Any] | None = None,
        array_name: str | None = None,
    ) -> None:
        self.url, self.split = url, split
        self.indices, self.samples = indices, samples
        self.storage_options = storage_options
        self.array_name = array_name or split
        self._array = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    @property
    def array(self):
        if self._array is None:
            self._array = open_zarr_group(self.url, self.storage_options, "r")[self.array_name]
        return self._array

    def value_records(self) -> list[dict]:
        """One record per stored volume (``key``, ``stats``: finite, range; see prepare)."""
        return self.samples

    def load(self, index: int) -> torch.Tensor:
        volume = np.asarray(self.array[self.indices[index]], dtype=np.float32)
        return torch.from_numpy(volume)[None]


class PreparedDataset:
    """A complete prepared dataset, opened for reading.

    Raises:
        FileNotFoundError: when `url` holds no complete prepared dataset; the message says
            what was looked for and how to make one.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url, self.storage_options = url, storage_options
        summary_url = join(url, "summary.json")
        if not exists(summary_url, storage_options):
            raise FileNotFoundError(
                f"no prepared dataset at {url} (looked for {summary_url}); make one with "
                "`fmtrain prepare SOURCE URL`, or set data.source so training "
                "prepares it"
            )
        self.summary = self._json("summary.json")
        if not self.summary.get("complete"):
            raise FileNotFoundError(
                f"the prepared dataset at {url} is incomplete ({summary_url} says "
                f"complete=false: {self.summary.get('failure', 'interrupted')}); rerun "
                "`fmtrain prepare` with the same arguments to finish it"
            )
        self.params = self._json("prepare.json")
        self.samples: dict[str, list[dict]] = self._json("samples.json")

    def _json(self, name: str) -> Any:
        return json.loads(read_bytes(join(self.url, name), self.storage_options))

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(self.params["size"])

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(self.params["spacing"])

    def split(self, name: str) -> PreparedSplit:
        """The volumes of split `name`.

        Raises:
            ValueError: when the split does not exist or is empty; the message lists the
                splits the dataset has and their sizes.
        """
        samples = self.samples.get(name, [])
        if not samples:
            sizes = {k: len(v) for k, v in self.samples.items()}
            raise ValueError(
                f"split {name!r} of the prepared dataset at {self.url} is "
                f"{'empty' if name in self.samples else 'missing'}; it has splits {sizes}. "
                "Check data.train_split / data.val_split and data.split_fractions."
            )
        indices = [s["index"] for s in samples]
        # format 2 stores one pool of volumes; format 1 one array per split
        array = "pool" if self.params.get("format_version", 1) >= 2 else name
        return PreparedSplit(self.url, name, indices, samples, self.storage_options, array)
