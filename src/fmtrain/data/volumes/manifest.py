"""AI-READI-style ``manifest.tsv``: one row per imaging file, tab-separated, with a header.

Serialisation, chosen once and used for both reading and writing:

- ``pixel_spacing`` is ``"<row mm>,<column mm>"`` with no spaces or brackets, e.g.
  ``"0.0039,0.0113"`` (the order of DICOM PixelSpacing: row spacing first).
- Floats are written with ``repr``, so they read back exactly.
- ``filepath`` and ``reference_filepath`` are POSIX paths relative to the manifest's folder;
  resolve them with ``manifest_path.parent / row.filepath``.
- Empty reference columns are empty strings.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

__all__ = ["MANIFEST_COLUMNS", "ManifestRow", "read_manifest", "write_manifest"]

MANIFEST_COLUMNS = (
    "participant_id",
    "manufacturer",
    "manufacturers_model_name",
    "anatomic_region",
    "imaging",
    "laterality",
    "height",
    "width",
    "number_of_frames",
    "pixel_spacing",
    "slice_thickness",
    "sop_instance_uid",
    "filepath",
    "reference_instance_uid",
    "reference_filepath",
)


@dataclass(frozen=True)
class ManifestRow:
    """One imaging file listed in a manifest.

    Attributes:
        participant_id: Participant identifier, e.g. ``"1001"``.
        manufacturer: DICOM Manufacturer.
        manufacturers_model_name: DICOM ManufacturerModelName.
        anatomic_region: e.g. ``"macula"``.
        imaging: e.g. ``"oct"``.
        laterality: ``"R"`` or ``"L"``.
        height: Rows per frame.
        width: Columns per frame.
        number_of_frames: Frames (B-scans) in the file.
        pixel_spacing: (row, column) spacing in mm.
        slice_thickness: Distance between frames in mm.
        sop_instance_uid: The file's SOPInstanceUID.
        filepath: Path of the file relative to the manifest's folder (POSIX separators).
        reference_instance_uid: SOPInstanceUID of a related image (e.g. the en-face
            localizer), or ``""``.
        reference_filepath: Relative path of that image, or ``""``.
    """

    participant_id: str
    manufacturer: str
    manufacturers_model_name: str
    anatomic_region: str
    imaging: str
    laterality: str
    height: int
    width: int
    number_of_frames: int
    pixel_spacing: tuple[float, float]
    slice_thickness: float
    sop_instance_uid: str
    filepath: str
    reference_instance_uid: str = ""
    reference_filepath: str = ""


def _format(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(repr(float(v)) for v in value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if any(c in text for c in "\t\r\n"):
        raise ValueError(f"manifest values cannot contain tabs or newlines, got {text!r}")
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a positive number")
    return value


def _spacing_pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError('must be "<row mm>,<column mm>", e.g. "0.0039,0.0113"')
    row, column = (_positive_float(p) for p in parts)
    return (row, column)


FIELD_PARSERS: dict[str, Callable[[str], object]] = {
    "height": _positive_int,
    "width": _positive_int,
    "number_of_frames": _positive_int,
    "pixel_spacing": _spacing_pair,
    "slice_thickness": _positive_float,
}


def write_manifest(rows: Sequence[ManifestRow], path: str | Path) -> None:
    """Write rows as a tab-separated manifest with a header line of :data:`MANIFEST_COLUMNS`.

    Args:
        rows: Manifest rows, written in order.
        path: Output ``manifest.tsv``; its folder must exist.

    Raises:
        ValueError: If a text value contains a tab or newline.
    """
    lines = ["\t".join(MANIFEST_COLUMNS)]
    lines += ["\t".join(_format(v) for v in astuple(row)) for row in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a manifest written by :func:`write_manifest` (or by AI-READI, same columns).

    Columns are matched by name, so their order may differ and extra columns are ignored.

    Args:
        path: A ``manifest.tsv``.

    Returns:
        The rows, typed; ``filepath`` stays relative to the manifest's folder.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On an empty file, a missing column, a row with the wrong number of fields,
            or a value that does not parse; the message names the file, line and column.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            raise ValueError(
                f"{path}: empty manifest; expected a header line with {MANIFEST_COLUMNS}"
            )
        missing = [c for c in MANIFEST_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}, line 1: missing column(s) {', '.join(missing)}; "
                f"a manifest needs the columns {', '.join(MANIFEST_COLUMNS)} (tab-separated)"
            )
        position = {name: header.index(name) for name in MANIFEST_COLUMNS}
        rows = []
        for fields_ in reader:
            line = reader.line_num
            if not fields_ or fields_ == [""]:
                continue
            if len(fields_) != len(header):
                raise ValueError(
                    f"{path}, line {line}: {len(fields_)} fields but the header has "
                    f"{len(header)}; is a value missing or does one contain a tab?"
                )
            values = {}
            for name in MANIFEST_COLUMNS:
                text = fields_[position[name]]
                parser = FIELD_PARSERS.get(name)
                if parser is None:
                    values[name] = text
                    continue
                try:
                    values[name] = parser(text)
                except ValueError as exc:
                    raise ValueError(
                        f"{path}, line {line}, column {name}: bad value {text!r} ({exc})"
                    ) from exc
            rows.append(ManifestRow(**values))  # type: ignore[arg-type]
    return rows
