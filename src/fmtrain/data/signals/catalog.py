"""What to read: the recordings of a manifest, a file list or a folder.

A *source* is one of:

- a TSV/CSV table with a ``filepath`` (or ``path``) column and optionally ``participant_id``
  and ``device``; every other column (e.g. ``sampling_rate``, ``channel_names`` for CSV/NPZ
  files, or labels) rides along as an item attribute. The synthetic generator writes one;
- a folder, searched recursively for ``*.hea`` (WFDB), ``*.vital``, ``*.edf``, ``*.bdf``,
  ``*.dcm`` (DICOM waveforms) and ``*.npz``.

Relative paths are resolved against the table's folder. A bad row is skipped and counted
(reason ``bad_manifest_row``), never fatal on its own.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
from collections.abc import Sequence

from fmtrain.core.storage import filesystem, is_remote, join, read_bytes
from fmtrain.data.items import CatalogItem
from fmtrain.data.signals.errors import SignalReadError

log = logging.getLogger("fmtrain.data")

__all__ = ["SIGNAL_SUFFIXES", "read_signal_catalog"]

SIGNAL_SUFFIXES = (".hea", ".vital", ".edf", ".bdf", ".dcm", ".npz")


def _skip(where: str, detail: str) -> dict[str, str]:
    log.warning("skipping row %s: %s", where, detail)
    return {"path": where, "reason": "bad_manifest_row", "detail": detail}


def _resolve(base: str, path: str) -> str:
    return path if "://" in path or posixpath.isabs(path) else join(base, path)


def _from_table(source: str, text: str) -> tuple[list[CatalogItem], list[dict]]:
    first = next((line for line in text.splitlines() if line.strip()), "")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if "\t" in first else ",")
    header = [h.strip() for h in reader.fieldnames or []]
    column = "filepath" if "filepath" in header else "path" if "path" in header else None
    if column is None:
        raise ValueError(
            f"{source}: a signal manifest needs a 'filepath' (or 'path') column; found {header}"
        )
    base = source.rstrip("/").rsplit("/", 1)[0] if "/" in source else "."
    items, skipped = [], []
    for row in reader:
        where = f"{source}:{reader.line_num}"
        if None in row or any(v is None for v in row.values()):
            skipped.append(_skip(where, "wrong number of fields"))
            continue
        row = {k.strip(): v.strip() for k, v in row.items()}
        path = row.pop(column)
        if not path:
            skipped.append(_skip(where, f"empty {column}"))
            continue
        items.append(
            CatalogItem(
                key=path,
                paths=(_resolve(base, path),),
                participant_id=row.pop("participant_id", "") or path,
                device=row.pop("device", "") or "unknown",
                attributes={k: v for k, v in row.items() if v},
            )
        )
    return items, skipped


def read_signal_catalog(
    source: str, storage_options: dict | None = None, more_suffixes: Sequence[str] = ()
) -> tuple[list[CatalogItem], list[dict]]:
    """(items, skipped rows) of a signal manifest, file list or folder; a folder is searched
    for `SIGNAL_SUFFIXES` and `more_suffixes` (formats a recipe adds a reader for).

    Raises:
        SignalReadError: (``missing_file``) when `source` does not exist.
        ValueError: when nothing usable is listed; the message says what was searched.
    """
    fs, path = filesystem(source, storage_options)
    if not fs.exists(path):
        raise SignalReadError("missing_file", source, "no manifest, file list or folder here")
    if fs.isdir(path):
        protocol = source.split("://", 1)[0] + "://" if is_remote(source) else ""
        suffixes = (*SIGNAL_SUFFIXES, *(s.lower() for s in more_suffixes))
        files = sorted(p for p in fs.find(path) if p.lower().endswith(suffixes))
        items = [
            CatalogItem(
                key=posixpath.relpath(p, path),
                paths=(protocol + p,),
                participant_id=posixpath.relpath(p, path),
            )
            for p in files
        ]
        skipped: list[dict] = []
        searched = ", ".join(f"*{s}" for s in suffixes)
    else:
        items, skipped = _from_table(
            source, read_bytes(source, storage_options).decode("utf-8-sig")
        )
        searched = "rows with a filepath"
    if not items:
        raise ValueError(f"{source}: no recordings found ({searched}); {len(skipped)} rows skipped")
    return items, skipped
