"""Paths are URLs: local files stay local, ``s3://``, ``gs://``, ``memory://`` go through fsspec.

Everything that reads or writes data goes through these few functions, so a bucket gets the
same code as a local folder. `storage_options` are passed to fsspec unchanged (e.g.
``{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}`` for an S3-compatible server).
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
from fsspec.core import url_to_fs

__all__ = [
    "exists",
    "filesystem",
    "is_remote",
    "join",
    "local_path",
    "read_bytes",
    "write_bytes",
]


def is_remote(url: str | os.PathLike) -> bool:
    """True for URLs with a scheme other than ``file://``."""
    text = os.fspath(url)
    return "://" in text and not text.startswith("file://")


def filesystem(url: str | os.PathLike, storage_options: dict[str, Any] | None = None):
    """The fsspec filesystem and the path inside it for `url`."""
    return url_to_fs(os.fspath(url), **(storage_options or {}))


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path parts with ``/``, for local paths and URLs alike."""
    out = os.fspath(base).rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def exists(url: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


def read_bytes(url: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> bytes:
    fs, path = filesystem(url, storage_options)
    return fs.cat_file(path)


def write_bytes(
    url: str | os.PathLike, data: bytes, storage_options: dict[str, Any] | None = None
) -> None:
    """Write a whole object. Local files go to a temporary name first and are renamed, so a
    reader never sees half a file; an object store's PUT is already all-or-nothing."""
    fs, path = filesystem(url, storage_options)
    if is_remote(url):
        fs.pipe_file(path, data)
        return
    fs.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def local_path(
    url: str | os.PathLike,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> str:
    """A local file holding `url`'s bytes: the path itself when local, else a cached copy.

    Remote files are fetched once into `cache_dir` (fsspec's ``filecache``; a temporary
    folder when None) and reused while the remote object is unchanged.
    """
    if not is_remote(url):
        return os.fspath(url).removeprefix("file://")
    protocol = os.fspath(url).split("://", 1)[0]
    options = {protocol: storage_options or {}}
    cache = {"cache_storage": cache_dir} if cache_dir else {}
    with fsspec.open(f"filecache::{os.fspath(url)}", filecache=cache, **options) as f:
        return f.name
