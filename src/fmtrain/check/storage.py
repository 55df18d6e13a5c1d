"""Class 4: can the run write where it will write? Probed with a real write and delete."""

from __future__ import annotations

import os
import uuid
from typing import Any

from fmtrain.check.problems import CheckReport

__all__ = ["probe_writable"]

_INSTALL_HINT = {
    "s3": "s3fs",
    "gs": "'fmtrain[gcs]'",
    "gcs": "'fmtrain[gcs]'",
    "az": "adlfs",
    "abfs": "adlfs",
}


def probe_writable(
    report: CheckReport, key: str, location: str, storage_options: dict[str, Any] | None = None
) -> bool:
    """Write and remove a small file under `location` (a folder path or URL); on failure add
    an error naming `key`. Missing local folders are fine (they are created), but only if
    their parent chain can be created. Returns whether the write succeeded."""
    from fsspec.core import url_to_fs

    text = os.fspath(location)
    scheme = text.split("://", 1)[0] if "://" in text else "file"
    try:
        fs, path = url_to_fs(text, **(storage_options or {}))
    except (ValueError, ImportError) as err:
        package = _INSTALL_HINT.get(scheme)
        fix = f"pip install {package}" if package else "use a local path, s3://, gs:// or memory://"
        report.add(
            "error",
            key,
            f"{location!r}: no filesystem for scheme {scheme!r} ({err})",
            fix,
            "storage",
        )
        return False
    probe = f"{path.rstrip('/')}/.fmtrain-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        if scheme == "file":
            fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, b"fmtrain check")
        fs.rm_file(probe)
        return True
    except Exception as err:  # every way of failing to write is the same finding
        report.add(
            "error",
            key,
            f"cannot write to {location!r}: {type(err).__name__}: {err}",
            "point it at a location this machine can write (check the bucket exists, the "
            "credentials, the scheme, and that no path component is a file)",
            "storage",
        )
        return False
