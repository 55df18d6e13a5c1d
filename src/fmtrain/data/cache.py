"""Preprocessed volumes cached once as a memory-mapped .npy, shared by loader workers."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger("fmtrain.data")


class VolumeCache:
    """float16 volumes [N, *size] on disk; `load(i)` returns float32 [1, *size].

    Args:
        path: the .npy file (built by `build_volume_cache`).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._array: np.ndarray | None = None
        meta = json.loads(self.path.with_suffix(".json").read_text())
        self.sources: list[str] = meta["sources"]
        self.skipped: list[dict] = meta["skipped"]

    @property
    def array(self) -> np.ndarray:
        # Opened lazily so each forked loader worker maps the file itself.
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return len(self.sources)

    def load(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.array[index], dtype=np.float32))[None]


def cache_key(sources: Sequence[str], params: dict) -> str:
    """Stable key over the source files (path, size, mtime) and preprocessing parameters."""
    h = hashlib.sha1(json.dumps(params, sort_keys=True).encode())
    for src in sources:
        st = os.stat(src)
        h.update(f"{src}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build_volume_cache(
    path: str | Path,
    sources: Sequence[str],
    process: Callable[[str], np.ndarray],
    *,
    size: Sequence[int],
    max_skip_fraction: float,
    desc: str = "caching volumes",
) -> VolumeCache:
    """Run `process` on every source once and store the results; skip-and-log bad files.

    Written to a temporary name and renamed, so an interrupted build never leaves a
    cache that looks complete.

    Raises:
        RuntimeError: when nothing could be read, or more than `max_skip_fraction` of the
            sources failed; the message lists the first failures.
    """
    path = Path(path)
    if path.exists() and path.with_suffix(".json").exists():
        return VolumeCache(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(sources), *size))
    kept, skipped = [], []
    for src in tqdm(sources, desc=desc, unit="vol", leave=False):
        try:
            volume = process(src)
        except Exception as err:  # a bad file is counted and reported, never fatal alone
            log.warning("skipping %s: %s", src, err)
            skipped.append({"path": src, "reason": f"{type(err).__name__}: {err}"})
            continue
        out[len(kept)] = volume
        kept.append(src)
    out.flush()
    del out
    fraction = len(skipped) / max(len(sources), 1)
    if not kept or fraction > max_skip_fraction:
        tmp.unlink(missing_ok=True)
        shown = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        raise RuntimeError(
            f"{len(skipped)} of {len(sources)} volumes could not be read "
            f"(limit data.max_skip_fraction={max_skip_fraction}). First failures: {shown}"
        )
    if skipped:
        log.warning(
            "%d of %d volumes skipped; reasons in %s",
            len(skipped),
            len(sources),
            path.with_suffix(".json"),
        )
    if skipped:  # drop the unused tail rows (written to a second file: `tmp` is mapped)
        compact = tmp.with_name(path.stem + ".compact.npy")
        np.save(compact, np.load(tmp, mmap_mode="r")[: len(kept)])
        os.replace(compact, tmp)
    path.with_suffix(".json").write_text(
        json.dumps({"sources": kept, "skipped": skipped}, indent=1)
    )
    os.replace(tmp, path)
    return VolumeCache(path)
