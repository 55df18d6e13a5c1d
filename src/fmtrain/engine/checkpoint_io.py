"""Checkpoints that a kill at any instant cannot leave half-written under their final name.

Local paths: the checkpoint is written to a hidden temporary file in the same folder
(``.<name>.<random>.tmp``, never matching ``*.ckpt``), flushed and fsynced, then renamed onto
the final name with ``os.replace`` (atomic on POSIX), and the folder is fsynced so the rename
survives a power cut. A reader sees the old file or the new one, never a mix.

URLs (``s3://``, ``gs://``, ``memory://``, through fsspec): one PUT is all-or-nothing, but a
run can die between writing a checkpoint and anything after it. The rule, defined here once:

    A remote checkpoint ``<name>`` counts only while its commit marker ``<name>.complete``
    exists and records the object's size. Saving removes the old marker, writes the object,
    then writes the marker; removing deletes the marker first, then the object.

So a checkpoint killed mid-save (or an overwrite of ``last.ckpt`` killed half-way) has no marker
and is refused by `AtomicCheckpointIO.load_checkpoint` and skipped by
`fmtrain.engine.resume.find_last_good_checkpoint`.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO, XLACheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from fmtrain.core.storage import filesystem, is_remote
from fmtrain.engine.xla import is_xla

log = logging.getLogger("fmtrain")

MARKER_SUFFIX = ".complete"
TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0o022)  # read once (the call sets it; put it back at once)
os.umask(_UMASK)


class IncompleteCheckpointError(RuntimeError):
    """A remote checkpoint without a valid commit marker: its save did not finish."""


def marker_url(url: str) -> str:
    """The commit marker that vouches for the remote checkpoint at `url`."""
    return f"{url}{MARKER_SUFFIX}"


def read_marker(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The marker's record for the remote checkpoint `url`, after checking it matches the object.

    Raises:
        IncompleteCheckpointError: no marker, or a marker whose size differs from the object's.
    """
    fs, path = filesystem(url, storage_options)
    marker = marker_url(path)
    # fsspec shares one filesystem per bucket and options in a process, and its listings are
    # cached: a folder listed before the last save would report the old object's size.
    fs.invalidate_cache(path)
    fs.invalidate_cache(marker)
    if not fs.exists(marker):
        raise IncompleteCheckpointError(
            f"{url}: no commit marker {marker_url(url)}, so its save did not finish (the run "
            "stopped between writing the checkpoint and its marker). It is not loaded. Resume "
            "from an earlier checkpoint: `fmtrain fit --resume=true` picks the newest complete one."
        )
    record = json.loads(fs.cat_file(marker))
    size = fs.size(path) if fs.exists(path) else None
    if size != record.get("size"):
        raise IncompleteCheckpointError(
            f"{url}: its commit marker records {record.get('size')} bytes but the object has "
            f"{size}; the checkpoint was replaced or truncated after it was committed. It is not "
            "loaded; resume from an earlier checkpoint (`fmtrain fit --resume=true`)."
        )
    return record


def on_host(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """`checkpoint` with its XLA tensors copied to the host; other tensors are left as they are.

    ``torch.save`` of an XLA tensor records the device, so loading it would need torch-xla and
    the device; a checkpoint must load anywhere (an export on a laptop, a probe on a GPU).
    """
    return apply_to_collection(
        checkpoint, torch.Tensor, lambda t: t.cpu() if t.device.type == "xla" else t
    )


def _fsync_dir(folder: str) -> None:
    # The rename lives in the directory entry; without this a power cut can undo it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO whose saves are atomic, locally and on object storage.

    Args:
        storage_options: fsspec options for URLs (credentials, ``client_kwargs.endpoint_url``);
            a `storage_options` passed to `save_checkpoint` replaces them for that call.
    """

    def __init__(self, storage_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.storage_options = storage_options

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        url = os.fspath(path)
        checkpoint = on_host(checkpoint)
        if is_remote(url):
            self._save_remote(checkpoint, url, storage_options or self.storage_options)
        else:
            self._save_local(checkpoint, url.removeprefix("file://"))

    def _save_local(self, checkpoint: dict[str, Any], path: str) -> None:
        folder, name = os.path.split(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        # Orphans of saves killed earlier: same target, never renamed. Only global rank 0 saves.
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
            os.remove(stale)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=folder)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a plain open() would not
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        _fsync_dir(folder)

    def _save_remote(
        self, checkpoint: dict[str, Any], url: str, storage_options: dict[str, Any] | None
    ) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        fs, path = filesystem(url, storage_options)
        marker = marker_url(path)
        if fs.exists(marker):  # an overwrite (last.ckpt): uncommit before touching the object
            fs.rm(marker)
        fs.pipe_file(path, data)
        record = {"size": len(data), "global_step": checkpoint.get("global_step")}
        fs.pipe_file(marker, json.dumps(record).encode())

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        url = os.fspath(path)
        if not is_remote(url):
            return super().load_checkpoint(path, map_location, weights_only)
        read_marker(url, self.storage_options)  # refuses an uncommitted checkpoint
        fs, inner = filesystem(url, self.storage_options)
        with fs.open(inner, "rb") as f:
            return torch.load(f, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        url = os.fspath(path)
        if not is_remote(url):
            super().remove_checkpoint(path)
            return
        fs, inner = filesystem(url, self.storage_options)
        if fs.exists(marker_url(inner)):
            fs.rm(marker_url(inner))
        if fs.exists(inner):
            fs.rm(inner)


class XLAAtomicCheckpointIO(AtomicCheckpointIO, XLACheckpointIO):
    """`AtomicCheckpointIO` in the type Lightning's XLA strategies require: they accept only
    an `XLACheckpointIO`, whose own saves are a plain ``torch.save`` to the path (a ``gs://``
    URL fails, no commit marker, no atomic rename). The checkpoint's XLA tensors are copied to
    the host first (`on_host`), as Lightning's does. Needs torch-xla to be built."""


class BucketAwareModelCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint` (recipe key ``checkpoint``, same arguments), reaching a
    bucket with the checkpoint IO's storage options.

    Lightning lists, tests and removes the files of the checkpoint folder through an fsspec
    filesystem of its own, built in `setup` from the bare URL: without the options, a bucket
    reached through an endpoint or credentials in `data.storage_options` would be looked for
    at the cloud's default address with the machine's default credentials.
    """

    _storage_options: dict[str, Any] | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._storage_options = getattr(trainer.strategy.checkpoint_io, "storage_options", None)
        super().setup(trainer, pl_module, stage)
        self._reach_bucket()

    def _reach_bucket(self) -> None:
        if self._storage_options and self.dirpath is not None and is_remote(self.dirpath):
            self._fs = filesystem(self.dirpath, self._storage_options)[0]  # Lightning's own

    # Lightning's `setup` rebuilds the bare filesystem and looks into the folder at once,
    # through this (name-mangled) method: the options must be in place before it looks.
    def _ModelCheckpoint__warn_if_dir_not_empty(self, dirpath: Any) -> None:
        self._reach_bucket()
        super()._ModelCheckpoint__warn_if_dir_not_empty(dirpath)  # type: ignore[misc]


def default_checkpoint_io(accelerator: Any, strategy: Any) -> str:
    """The class path of the default `trainer.plugins`: `AtomicCheckpointIO`, or on XLA the
    same in the type Lightning's XLA strategies require."""
    io = XLAAtomicCheckpointIO if is_xla(accelerator, strategy) else AtomicCheckpointIO
    return f"{__name__}.{io.__name__}"
