"""What to read: a list of items (one volume each) from a manifest, a file list or a folder.

A *source* is one of:

- an AI-READI-style ``manifest.tsv`` (columns in `fmtrain.data.volumes.manifest.MANIFEST_COLUMNS`);
- a CSV/TSV file list with a header holding a ``path`` or ``filepath`` column, and optionally
  ``participant_id``, ``device`` (or ``manufacturers_model_name``), ``anatomic_region``,
  ``laterality``; other columns ride along as item attributes;
- a plain text file with one path per line;
- a folder or URL prefix, searched recursively for ``*.nii``, ``*.nii.gz`` and ``*.dcm``.
  Every NIfTI file is one item. A folder's single-frame DICOM files form one item per
  series (SeriesInstanceUID; the reader sorts the slices along the slice normal): keyed by
  the folder when it holds one series, else by ``FOLDER/series-<number>-<description>``,
  with the series UID, number, description and modality among the item's attributes.
  Multi-frame files are items of their own; DICOM objects that are not images
  (segmentations, RT objects, reports: `fmtrain.data.volumes.dicom_objects`) are skipped
  and reported (reason ``not_an_image``). See `fmtrain.data.volumes.dicom_folder`.

Relative paths are resolved against the list's folder, or against `root` when given. A
manifest's ``filepath`` that begins with ``/`` is relative to the dataset's root too, as
AI-READI writes them (``/retinal_oct/structural_oct/...``), unless it names a local file that
exists. A manifest row is skipped and reported (reason ``bad_manifest_row``) only when it
lacks ``participant_id`` or ``filepath`` or has the wrong number of fields; its metadata
columns are hints (`fmtrain.data.volumes.manifest`): a value that does not parse is counted
and warned once per column, and the row is kept.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fmtrain.core.storage import filesystem, is_remote, join, read_bytes
from fmtrain.data.items import CatalogItem
from fmtrain.data.volumes.dicom_folder import DicomEntry, scan_dicom_folder
from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.manifest import HINT_PARSERS, MANIFEST_COLUMNS, HintProblems

log = logging.getLogger("fmtrain.data")

__all__ = ["Catalog", "CatalogItem", "read_catalog"]

_VOLUME_SUFFIXES = (".nii", ".nii.gz", ".dcm")


@dataclass
class Catalog:
    """Items to read and the rows that were skipped while listing them."""

    source: str
    items: list[CatalogItem]
    skipped: list[dict[str, str]]
    # manifest metadata values that did not parse, per column (the rows were kept)
    unread_hints: dict[str, int] = field(default_factory=dict)

    def filter(
        self,
        *,
        devices: Sequence[str] | None = None,
        anatomic_regions: Sequence[str] | None = None,
        lateralities: Sequence[str] | None = None,
    ) -> Catalog:
        """Keep items whose device / region / laterality is listed (case-insensitive)."""
        wanted = {
            "device": devices,
            "anatomic_region": anatomic_regions,
            "laterality": lateralities,
        }
        items = self.items
        for name, values in wanted.items():
            if not values:
                continue
            allowed = {v.lower() for v in values}
            present = sorted({_value(i, name) for i in items})
            items = [i for i in items if _value(i, name).lower() in allowed]
            if not items:
                raise ValueError(
                    f"no items left in {self.source} for {name} in {list(values)}; "
                    f"the source lists {present}"
                )
        return Catalog(self.source, items, self.skipped, self.unread_hints)


def _value(item: CatalogItem, name: str) -> str:
    return item.device if name == "device" else item.attributes.get(name, "")


def _resolve(base: str, path: str, *, rooted: bool = False) -> str:
    """`path` as read from a list in `base`. With `rooted`, a path that begins with "/" is
    relative to `base` (a dataset root) unless it names a local file that exists."""
    if "://" in path:
        return path
    if posixpath.isabs(path):
        if not rooted or os.path.exists(path):
            return path
        return join(base, path.lstrip("/"))
    return join(base, path)


def _folder(source: str) -> str:
    return source.rstrip("/").rsplit("/", 1)[0] if "/" in source else "."


def _from_manifest(
    source: str, rows: list[list[str]], header: list[str], root: str | None
) -> Catalog:
    base, items, skipped = root or _folder(source), [], []
    position = {name: header.index(name) for name in MANIFEST_COLUMNS}
    hints = HintProblems(source)
    for line, fields in rows:
        problem = _manifest_row_problem(fields, header, position)
        if problem:
            skipped.append(_skip(f"{source}:{line}", problem))
            continue
        for name in HINT_PARSERS:  # counted and warned below; never a reason to skip
            hints.parse(name, fields[position[name]], line)
        value = {name: fields[position[name]] for name in MANIFEST_COLUMNS}
        extra = {h: fields[i] for i, h in enumerate(header) if h not in position}
        attributes = {
            k: value[k]
            for k in ("anatomic_region", "laterality", "imaging", "manufacturer")
            if value[k]
        }
        items.append(
            CatalogItem(
                key=value["filepath"],
                paths=(_resolve(base, value["filepath"], rooted=True),),
                participant_id=value["participant_id"],
                device=value["manufacturers_model_name"] or "unknown",
                attributes={**attributes, **extra},
            )
        )
    hints.warn()
    return Catalog(source, items, skipped, dict(hints.counts))


def _manifest_row_problem(fields: list[str], header: list[str], position: dict) -> str:
    if len(fields) != len(header):
        return f"{len(fields)} fields but the header has {len(header)}"
    for name in ("participant_id", "filepath"):
        if not fields[position[name]].strip():
            return f"empty {name}"
    return ""


def _from_file_list(
    source: str, rows: list[list[str]], header: list[str], root: str | None
) -> Catalog:
    base, items, skipped = root or _folder(source), [], []
    path_col = "path" if "path" in header else "filepath"
    for line, fields in rows:
        if len(fields) != len(header):
            skipped.append(_skip(f"{source}:{line}", "wrong number of fields"))
            continue
        row = dict(zip(header, fields, strict=True))
        path = row.pop(path_col).strip()
        if not path:
            skipped.append(_skip(f"{source}:{line}", f"empty {path_col}"))
            continue
        device = row.pop("device", "") or row.pop("manufacturers_model_name", "")
        items.append(
            CatalogItem(
                key=path,
                paths=(_resolve(base, path, rooted=root is not None),),
                participant_id=row.pop("participant_id", "") or path,
                device=device or "unknown",
                attributes={k: v for k, v in row.items() if v},
            )
        )
    return Catalog(source, items, skipped)


def _from_folder(source: str, storage_options: dict | None) -> Catalog:
    fs, root = filesystem(source, storage_options)
    protocol = source.split("://", 1)[0] + "://" if is_remote(source) else ""
    files = sorted(p for p in fs.find(root) if p.lower().endswith(_VOLUME_SUFFIXES))
    items, skipped, dicom_by_folder = [], [], defaultdict(list)
    for path in files:
        if path.lower().endswith(".dcm"):
            dicom_by_folder[posixpath.dirname(path)].append(path)
        else:
            relative = posixpath.relpath(path, root)
            items.append(CatalogItem(relative, (protocol + path,), participant_id=relative))
    for folder, paths in dicom_by_folder.items():
        entries, set_aside = scan_dicom_folder(fs, paths)
        items += [_dicom_item(root, protocol, folder, e) for e in entries]
        skipped += [{**s, "path": protocol + s["path"]} for s in set_aside]
    return Catalog(source, sorted(items, key=lambda i: i.key), skipped)


def _dicom_item(root: str, protocol: str, folder: str, entry: DicomEntry) -> CatalogItem:
    relative = posixpath.relpath(posixpath.join(folder, entry.name) if entry.name else folder, root)
    participant = relative
    if entry.person is not None:  # one of several series: the folder's person
        place = posixpath.relpath(folder, root)
        participant = posixpath.normpath(posixpath.join(place, entry.person or "."))
    return CatalogItem(
        key=relative,
        paths=tuple(protocol + p for p in entry.paths),
        participant_id=participant,
        attributes=dict(entry.attributes),
    )


def _skip(where: str, detail: str) -> dict[str, str]:
    log.warning("skipping row %s: %s", where, detail)
    return {"path": where, "reason": "bad_manifest_row", "detail": detail}


def _parse_table(text: str, source: str) -> tuple[list[str], list[list]]:
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = "\t" if "\t" in first else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip() for h in next(reader, [])]
    rows = []
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            rows.append((line, []))  # an empty row is reported, not silently dropped
            continue
        rows.append((line, fields))
    return header, rows


def read_catalog(
    source: str, storage_options: dict[str, Any] | None = None, root: str | None = None
) -> Catalog:
    """List the volumes of a manifest, file list or folder (local path or URL).

    Args:
        source: the manifest, file list or folder.
        storage_options: fsspec options for URLs.
        root: the dataset root that relative paths of a list (and a manifest's paths that
            begin with "/") start from; default: the list's folder.

    Raises:
        VolumeReadError: (``missing_file``) when `source` does not exist.
        ValueError: when a table has no usable header or nothing is listed; the message
            says what was searched.
    """
    fs, path = filesystem(source, storage_options)
    if not fs.exists(path):
        raise VolumeReadError("missing_file", source, "no manifest, file list or folder here")
    if fs.isdir(path):
        catalog = _from_folder(source, storage_options)
        if not catalog.items and catalog.skipped:
            raise ValueError(
                f"{source}: none of the {len(catalog.skipped)} DICOM files under this folder is "
                f"an image (first: {catalog.skipped[0]['detail']})"
            )
        if not catalog.items:
            raise ValueError(f"{source}: no *.nii, *.nii.gz or *.dcm files found under this folder")
        return catalog
    text = read_bytes(source, storage_options).decode("utf-8-sig")
    header, rows = _parse_table(text, source)
    if all(c in header for c in MANIFEST_COLUMNS):
        catalog = _from_manifest(source, rows, header, root)
    elif "path" in header or "filepath" in header:
        catalog = _from_file_list(source, rows, header, root)
    else:  # one path per line, no header
        lines = [(n, [line.strip()]) for n, line in enumerate(text.splitlines(), 1)]
        catalog = _from_file_list(source, [(n, f) for n, f in lines if f[0]], ["path"], root)
    if not catalog.items:
        raise ValueError(
            f"{source}: no usable rows ({len(catalog.skipped)} skipped; first: "
            f"{catalog.skipped[:3]}). A manifest needs the AI-READI columns; a file list "
            "needs a 'path' or 'filepath' column or one path per line."
        )
    return catalog
