"""Find the checkpoint to resume from: the newest one that actually loads.

A killed run can leave temporary files (never named ``*.ckpt``, see `checkpoint_io`), remote
checkpoints without their commit marker, or a file damaged by something else. None of those may
be picked: candidates are ordered by the ``global_step`` stored inside (the file's mtime breaks
ties and stands in when the step cannot be read), and the newest that loads in full wins.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from fmtrain.core.storage import filesystem, is_remote, join
from fmtrain.engine.announce import announce
from fmtrain.engine.checkpoint_io import read_marker

log = logging.getLogger("fmtrain")


def _load(url: str, storage_options: dict[str, Any] | None, *, mmap: bool = False) -> dict:
    if is_remote(url):
        read_marker(url, storage_options)
        fs, path = filesystem(url, storage_options)
        with fs.open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=False)
    # mmap reads the header and leaves tensor bytes on disk: cheap for ordering many files.
    return torch.load(url, map_location="cpu", weights_only=False, mmap=mmap)


def checkpoint_files(dirpath: str, storage_options: dict[str, Any] | None) -> list[str]:
    """The ``*.ckpt`` files in `dirpath` (not temporaries of an atomic save), sorted."""
    fs, path = filesystem(dirpath, storage_options)
    if not fs.isdir(path):
        return []
    names = [p for p in fs.ls(path, detail=False) if p.endswith(".ckpt")]
    # Hidden names are temporaries of an atomic save; markers end in `.complete`, not `.ckpt`.
    names = [p for p in names if not os.path.basename(p).startswith(".")]
    # Named under `dirpath` as given, so a caller gets back the spelling it used.
    return sorted(join(dirpath, os.path.basename(p)) for p in names)


def _order_key(url: str, storage_options: dict[str, Any] | None) -> tuple[int, float]:
    """(global_step, mtime), read cheaply: the marker for URLs, an mmap load for local files."""
    fs, path = filesystem(url, storage_options)
    info = fs.info(path)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0.0
    mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
    if is_remote(url):
        step = read_marker(url, storage_options).get("global_step")
    else:
        step = _load(url, storage_options, mmap=True).get("global_step")
    return (step if isinstance(step, int) else -1, mtime)


def find_last_good_checkpoint(
    dirpath: str | Sequence[str], storage_options: dict[str, Any] | None = None
) -> str | None:
    """The newest loadable ``*.ckpt`` in `dirpath` (a folder or URL, or several), or None.

    Args:
        dirpath: folder (local path or URL) holding checkpoints; a list searches several.
        storage_options: fsspec options for URLs.

    Returns:
        The path or URL of the checkpoint with the highest stored ``global_step`` that loads
        with ``torch.load``; None when there is none. Files skipped are logged with the reason.
    """
    found = _newest_loadable(
        [dirpath] if isinstance(dirpath, str) else list(dirpath), storage_options
    )
    return found[0] if found else None


def _newest_loadable(
    dirs: list[str], storage_options: dict[str, Any] | None
) -> tuple[str, int | None] | None:
    keyed: list[tuple[tuple[int, float], str]] = []
    for url in (c for d in dirs for c in checkpoint_files(d, storage_options)):
        try:
            keyed.append((_order_key(url, storage_options), url))
        except Exception as err:  # any damage at all disqualifies the file
            log.warning("skipping checkpoint %s: %s: %s", url, type(err).__name__, err)
    for _, url in sorted(keyed, reverse=True):
        try:
            state = _load(url, storage_options)
        except Exception as err:  # IncompleteCheckpointError included
            log.warning("skipping checkpoint %s: %s: %s", url, type(err).__name__, err)
            continue
        return url, state.get("global_step")
    return None


def resume_checkpoint(trainer: pl.Trainer) -> str | None:
    """What `fmtrain fit --resume=true` resumes from, announced: a checkpoint path or None.

    Searches `checkpoint_dirs(trainer)` with the checkpoint IO's storage options.
    """
    dirs = checkpoint_dirs(trainer)
    options = getattr(trainer.strategy.checkpoint_io, "storage_options", None)
    found = _newest_loadable(dirs, options)
    if found is None:
        announce(
            f"--resume: no loadable checkpoint in {', '.join(dirs) or '(none)'}; starting fresh"
        )
        return None
    announce(f"--resume: resuming from {found[0]} (global_step {found[1]})")
    return found[0]


def checkpoint_dirs(trainer: pl.Trainer) -> list[str]:
    """The folders where this trainer's `ModelCheckpoint` writes or earlier runs wrote.

    `checkpoint.dirpath` when set. Otherwise Lightning resolves the folder only inside `fit`
    (``<logger save_dir>/<name>/<version>/checkpoints``, or ``<default_root_dir>/checkpoints``
    without a logger), and an auto-numbered logger gives every run a new ``version_N``: so the
    same rule is applied here, and with an auto-numbered version every ``version_*`` sibling
    is searched, since the run being resumed wrote into an earlier one.
    """
    callback = trainer.checkpoint_callback
    if callback is None:
        return []
    if callback.dirpath is not None:
        return [os.fspath(callback.dirpath)]
    if not trainer.loggers:
        return [os.path.join(trainer.default_root_dir, "checkpoints")]
    logger = trainer.loggers[0]
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    base = os.path.join(save_dir, str(logger.name))
    dirs = [os.path.join(base, version, "checkpoints")]
    if re.fullmatch(r"version_\d+", version):
        fs, path = filesystem(base)
        siblings = fs.glob(f"{path}/version_*/checkpoints") if fs.isdir(path) else []
        dirs += sorted(fs.unstrip_protocol(p) if is_remote(base) else p for p in siblings)
    return list(dict.fromkeys(dirs))
