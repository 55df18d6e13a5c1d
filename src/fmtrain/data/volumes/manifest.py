"""AI-READI-style ``manifest.tsv``: one row per imaging file, tab-separated, with a header.

Written by fmtrain as:

- ``pixel_spacing`` is ``"<row mm>,<column mm>"`` with no spaces or brackets, e.g.
  ``"0.0039,0.0113"`` (the order of DICOM PixelSpacing: row spacing first).
- Floats are written with ``repr``, so they read back exactly.
- ``filepath`` and ``reference_filepath`` are POSIX paths relative to the manifest's folder.
- Empty reference columns are empty strings.

Read as AI-READI releases them too: the metadata columns (``height``, ``width``,
``number_of_frames``, ``pixel_spacing``, ``slice_thickness``) are *hints*, never used for
geometry (the DICOM header decides). ``[0.003872, 0.01206]``, ``0.0039 0.0113``,
``0.0039\\0.0113`` and ``(0.0039, 0.0113)`` are pairs; ``Varies by frame``, ``Not reported``,
``N/A`` and an empty field are "no value" (None). A value that still does not parse is
None too, counted per column and warned once: a hint never costs a file. A ``filepath``
that begins with ``/`` (``/retinal_oct/structural_oct/...``) is relative to the dataset's
root, not to the local disk (`fmtrain.data.volumes.catalog`).
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

__all__ = [
    "HINT_PARSERS",
    "MANIFEST_COLUMNS",
    "HintProblems",
    "ManifestRow",
    "parse_hint",
    "read_manifest",
    "write_manifest",
]

log = logging.getLogger("fmtrain.data")

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
        height: Rows per frame (None: not given or not readable; likewise below).
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
    height: int | None
    width: int | None
    number_of_frames: int | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    sop_instance_uid: str
    filepath: str
    reference_instance_uid: str = ""
    reference_filepath: str = ""


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return ",".join(repr(float(v)) for v in value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if any(c in text for c in "\t\r\n"):
        raise ValueError(f"manifest values cannot contain tabs or newlines, got {text!r}")
    return text


def _positive_int(text: str) -> int:
    value = float(text)  # "496.0" is a whole number too
    if not (value.is_integer() and value > 0):
        raise ValueError("must be a positive integer")
    return int(value)


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a positive number")
    return value


def _spacing_pair(text: str) -> tuple[float, float]:
    # fmtrain's "a,b", AI-READI's "[a, b]", DICOM's "a\\b", or "a b", "(a, b)"
    parts = [p for p in re.split(r"[\s,;\\]+", text.strip().strip("[]()")) if p]
    if len(parts) != 2:
        raise ValueError('must be two numbers, row then column mm, e.g. "0.0039,0.0113"')
    row, column = (_positive_float(p) for p in parts)
    return (row, column)


# the metadata columns: hints about each file, parsed when they can be
HINT_PARSERS: dict[str, Callable[[str], object]] = {
    "height": _positive_int,
    "width": _positive_int,
    "number_of_frames": _positive_int,
    "pixel_spacing": _spacing_pair,
    "slice_thickness": _positive_float,
}
# values that say "no value" in released manifests (compared lower-case, spaces collapsed)
NO_VALUE = frozenset({"", "varies by frame", "not reported", "n/a", "na", "none", "null", "nan"})


def parse_hint(name: str, text: str) -> object:
    """The value of hint column `name`, or None for a "no value" form.

    Raises:
        ValueError: when `text` is neither a value nor a "no value" form.
    """
    if " ".join(text.lower().split()) in NO_VALUE:
        return None
    return HINT_PARSERS[name](text)


class HintProblems:
    """Hint values that did not parse, counted per column and warned once per column."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def parse(self, name: str, text: str, line: int) -> object:
        try:
            return parse_hint(name, text)
        except ValueError as err:
            self.counts[name] += 1
            self.first.setdefault(name, f"line {line}: {text!r} ({err})")
            return None

    def warn(self) -> None:
        for name, count in sorted(self.counts.items()):
            log.warning(
                "%s: column %s: %d value(s) not read (first: %s); the rows are kept, since "
                "fmtrain reads geometry from each file's own header",
                self.source,
                name,
                count,
                self.first[name],
            )


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
    """Read a manifest written by :func:`write_manifest` or released by AI-READI.

    Columns are matched by name, so their order may differ and extra columns are ignored.
    Metadata hints that do not parse become None, counted and warned once per column.

    Args:
        path: A ``manifest.tsv``.

    Returns:
        The rows, typed; ``filepath`` stays as written.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: On an empty file, a missing column, a row with the wrong number of fields
            or without ``participant_id`` or ``filepath``; the message names the file, line
            and column.
    """
    path = Path(path)
    problems = HintProblems(str(path))
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
            values: dict[str, object] = {}
            for name in MANIFEST_COLUMNS:
                text = fields_[position[name]]
                if name in HINT_PARSERS:
                    values[name] = problems.parse(name, text, line)
                elif name in ("participant_id", "filepath") and not text.strip():
                    raise ValueError(f"{path}, line {line}, column {name}: empty")
                else:
                    values[name] = text
            rows.append(ManifestRow(**values))  # type: ignore[arg-type]
    problems.warn()
    return rows
