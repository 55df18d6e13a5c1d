"""`read_volume`: one entry point for every volume source — a path or URL to a NIfTI file, a
DICOM file, a folder holding one DICOM series, or a list of the files of one series.

The reader is chosen by content, not by name: a NIfTI header (gzipped or not) means NIfTI,
anything else is tried as DICOM. Remote sources (``s3://``, ``gs://``, ``memory://``...) are
fetched to a local cache first through `fmtrain.core.storage`; errors, warnings and
``metadata["path"]`` name the URL, not the cached copy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmtrain.core.storage import filesystem, is_remote, local_path
from fmtrain.data.volumes.dicom_multiframe import read_dicom_file
from fmtrain.data.volumes.dicom_series import read_dicom_series
from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.nifti_reader import nifti_version, read_nifti
from fmtrain.data.volumes.volume import Volume

__all__ = ["read_volume"]

Source = str | os.PathLike


def read_volume(
    source: Source | Sequence[Source],
    *,
    storage_options: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    series_uid: str | None = None,
    allow_missing_spacing: bool = False,
    max_voxels: int = 2_000_000_000,
    images_only: bool = True,
) -> Volume:
    """Read a NIfTI file, a DICOM file, a DICOM series folder or a list of series files.

    Args:
        source: Path or URL of a ``.nii``/``.nii.gz`` or DICOM file (any extension), of a
            folder of single-frame DICOM files, or a list of such files (one series).
        storage_options: fsspec options for remote URLs (credentials, endpoint).
        cache_dir: Where remote files are cached (a temporary folder when None).
        series_uid: The SeriesInstanceUID to read when a folder or list holds several.
        allow_missing_spacing: Use 1.0 mm for spacing a file lacks — logged and listed in
            ``metadata["fallbacks"]`` — instead of raising ``missing_geometry``.
        max_voxels: Refuse images with more voxels than this (checked before decoding).
        images_only: Refuse DICOM objects that carry pixels but are no image (segmentations,
            RT dose grids) as ``not_an_image``, and leave them out of a series; False reads
            their pixels as a volume.

    Returns:
        A `Volume`: array (z, y, x), or with a leading ``"time"`` (4D NIfTI) or ``"color"``
        (RGB DICOM) axis; spacing in mm; direction and origin in LPS patient coordinates.
        ``metadata`` has at least ``path``, ``format`` (``"dicom"``/``"nifti"``) and
        ``fallbacks``; DICOM adds ``modality``, ``manufacturer``, ``model_name``,
        ``patient_id``, ``series_uid``, ``sop_class_uid``, ``number_of_frames``,
        ``laterality``, ``spacing_source``, ``slice_spacing_source``, ``skipped_files``.

    Raises:
        VolumeReadError: For every source that cannot be read; ``reason`` is one of
            `fmtrain.data.volumes.errors.REASONS`.
    """
    options = {
        "allow_missing_spacing": allow_missing_spacing,
        "max_voxels": max_voxels,
        "images_only": images_only,
    }
    if isinstance(source, (list, tuple)):
        urls = [os.fspath(s) for s in source]
        if not urls:
            raise VolumeReadError("empty_series", "[]", "an empty list of files")
        files = {_fetch(url, storage_options, cache_dir): url for url in urls}
        label = _common_folder(urls)
        if len(files) == 1:
            return _read_file(next(iter(files)), urls[0], series_uid, options)
        if any(nifti_version(path) for path in files):
            raise VolumeReadError(
                "unsupported", label, "a list is read as one DICOM series; it holds NIfTI"
            )
        return read_dicom_series(
            list(files), source=label, names=files, series_uid=series_uid, **options
        )
    url = os.fspath(source)
    folder = _list_folder(url, storage_options)
    if folder is None:
        return _read_file(_fetch(url, storage_options, cache_dir), url, series_uid, options)
    if not folder:
        raise VolumeReadError("empty_series", url, "the folder holds no files")
    files = {_fetch(item, storage_options, cache_dir): item for item in folder}
    return read_dicom_series(list(files), source=url, names=files, series_uid=series_uid, **options)


def _common_folder(urls: list[str]) -> str:
    """How errors name a list of files: their common folder, or the first file."""
    try:
        return urls[0] if any(map(is_remote, urls)) else os.path.commonpath(urls)
    except ValueError:  # absolute and relative paths mixed
        return urls[0]


def _read_file(path: str, url: str, series_uid: str | None, options: dict) -> Volume:
    if nifti_version(path) is not None:
        nifti_options = {k: v for k, v in options.items() if k != "images_only"}
        return read_nifti(path, name=url, **nifti_options)
    volume = read_dicom_file(path, name=url, **options)
    if series_uid is not None and volume.metadata["series_uid"] != series_uid:
        raise VolumeReadError(
            "empty_series",
            url,
            f"the file belongs to series {volume.metadata['series_uid']}, not {series_uid}",
        )
    return volume


def _list_folder(url: str, storage_options: dict[str, Any] | None) -> list[str] | None:
    """The files directly inside `url` (sorted, hidden ones left out); None for a file."""
    if not is_remote(url):
        path = Path(url.removeprefix("file://"))
        if not path.exists():
            raise VolumeReadError("missing_file", url, "no such file or folder")
        if not path.is_dir():
            return None
        return [
            str(p) for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")
        ]
    try:
        fs, path = filesystem(url, storage_options)
        if not fs.exists(path):
            raise VolumeReadError("missing_file", url, "no such object or prefix")
        if not fs.isdir(path):
            return None
        found = fs.find(path, maxdepth=1)
    except VolumeReadError:
        raise
    except Exception as exc:  # fsspec backends raise their own errors (auth, network)
        raise VolumeReadError("missing_file", url, f"cannot access: {exc}") from exc
    # Children named from the caller's URL, so errors and metadata read as they wrote it.
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found)  # find() lists files
    return [f"{url.rstrip('/')}/{n}" for n in names if not n.startswith(".")]


def _fetch(url: str, storage_options: dict[str, Any] | None, cache_dir: str | None) -> str:
    """A local path with `url`'s bytes (remote objects are downloaded to the cache)."""
    if not is_remote(url):
        path = url.removeprefix("file://")
        if not os.path.isfile(path):
            raise VolumeReadError("missing_file", url, "no such file")
        return path
    try:
        return local_path(url, storage_options, cache_dir)
    except FileNotFoundError as exc:
        raise VolumeReadError("missing_file", url, "no such object") from exc
    except Exception as exc:  # fsspec backends raise their own errors (auth, network)
        raise VolumeReadError("missing_file", url, f"cannot fetch: {exc}") from exc
