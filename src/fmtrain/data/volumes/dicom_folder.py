"""The DICOM files of one folder -> what to read: one entry per series, one per multi-frame file.

An export from an image archive puts the single-slice files of several series side by side,
under names that say nothing, with segmentations, RT objects and reports among them. So each
file's header is read (without pixels): single-frame images are grouped by
SeriesInstanceUID (the series reader sorts each group along the slice normal), multi-frame
files stand alone, objects that are not images are set aside with a reason, and files whose
header does not parse stand alone so that the reader names what is wrong with them.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from fmtrain.data.volumes.dicom_objects import not_an_image
from fmtrain.data.volumes.dicom_reader import PIXEL_KEYWORDS

log = logging.getLogger("fmtrain.data")

__all__ = ["DicomEntry", "scan_dicom_folder"]

_ATTRIBUTES = {
    "series_uid": "SeriesInstanceUID",
    "series_number": "SeriesNumber",
    "series_description": "SeriesDescription",
    "modality": "Modality",
}


@dataclass(frozen=True)
class DicomEntry:
    """One volume to read from a folder.

    Attributes:
        paths: its files (several for a series of single-frame files).
        name: how to tell it from the folder's other entries: ``""`` when it is the folder's
            only series, the file name for a file read alone, else ``series-<number>`` with
            the series description (and the UID where those repeat).
        person: for one of several series, the PatientID of its files (``""`` when absent):
            the folder's series of one person are one participant, so that no split holds
            one person's T1 while another holds their T2. None: the entry is its own.
        attributes: series_uid, series_number, series_description and modality, when known.
    """

    paths: tuple[str, ...]
    name: str
    person: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


def scan_dicom_folder(
    fs: Any, paths: Sequence[str]
) -> tuple[list[DicomEntry], list[dict[str, str]]]:
    """Group one folder's DICOM files into entries; set aside the objects that are no images.

    Args:
        fs: the fsspec filesystem that holds `paths`.
        paths: the folder's DICOM files, as `fs` names them.

    Returns:
        The entries, and one skip record (path, reason ``not_an_image``, detail) per file
        set aside, each also logged.
    """
    series: dict[str, list[tuple[str, Dataset]]] = {}
    alone: list[DicomEntry] = []
    skipped: list[dict[str, str]] = []
    for path in paths:
        header = _header(fs, path)
        if header is None:  # the reader says what is wrong with it, and prepare counts it
            alone.append(DicomEntry((path,), _file_name(path)))
            continue
        has_pixels = any(keyword in header for keyword in PIXEL_KEYWORDS)
        problem = not_an_image(header, has_pixels=has_pixels)
        if problem:
            log.warning("skipping %s: not_an_image: %s", path, problem)
            skipped.append({"path": path, "reason": "not_an_image", "detail": problem})
        elif _frames(header) > 1:
            alone.append(_entry([(path, header)], _file_name(path)))
        else:
            uid = str(header.get("SeriesInstanceUID", "") or "")
            series.setdefault(uid, []).append((path, header))
    if len(paths) == 1 and series:  # a lone file keeps its own name, series or not
        return [_entry(next(iter(series.values())), _file_name(paths[0]))], skipped
    if len(series) == 1:
        return [*alone, _entry(next(iter(series.values())), "")], skipped
    return [*alone, *_named_series(series)], skipped


def _header(fs: Any, path: str) -> Dataset | None:
    """The file's header (large values, the pixels among them, deferred: not read), or None
    when it does not parse.

    As in the reader (`dicom_reader.open_dataset`): files without the DICM prefix count only
    when they hold Rows and Columns, and a file that ends early is no header, for pydicom
    then only warns and returns what it read (which would pass for an object without pixels).
    """
    for force in (False, True):
        try:
            with fs.open(path, "rb") as f, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(f, force=force, defer_size=1024)
        except InvalidDicomError:
            continue
        except Exception:  # damaged files raise in many ways; the reader names each
            return None
        if any("End of file" in str(w.message) or "EOF" in str(w.message) for w in caught):
            return None
        if not force or ("Rows" in ds and "Columns" in ds):
            return ds
    return None


def _frames(header: Dataset) -> int:
    try:
        return int(header.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1  # the reader refuses the value, naming it


def _entry(files: list[tuple[str, Dataset]], name: str) -> DicomEntry:
    first = files[0][1]
    attributes = {}
    for key, keyword in _ATTRIBUTES.items():
        value = str(first.get(keyword, "") or "").strip()
        if value:
            attributes[key] = value
    return DicomEntry(paths=tuple(path for path, _ in files), name=name, attributes=attributes)


def _named_series(series: dict[str, list[tuple[str, Dataset]]]) -> list[DicomEntry]:
    """One entry per series, named by number and description; the UID is added to names
    that would otherwise repeat (two studies' series 2, or series without a number)."""
    entries = [_entry(files, "") for files in series.values()]
    people = [str(files[0][1].get("PatientID", "") or "").strip() for files in series.values()]
    names = [_series_name(entry.attributes) for entry in entries]
    repeated = {n for n in names if names.count(n) > 1}
    return [
        DicomEntry(
            entry.paths,
            f"{name}-{entry.attributes.get('series_uid', 'no-uid')}" if name in repeated else name,
            person,
            entry.attributes,
        )
        for entry, name, person in zip(entries, names, people, strict=True)
    ]


def _series_name(attributes: dict[str, str]) -> str:
    name = f"series-{attributes.get('series_number', '')}".rstrip("-")
    description = re.sub(r"[^A-Za-z0-9.+-]+", "_", attributes.get("series_description", ""))
    description = description.strip("_")[:48]
    return f"{name}-{description}" if description else name


def _file_name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]
