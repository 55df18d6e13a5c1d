"""DICOM building blocks shared by the multi-frame and the series readers.

Opening a file, refusing it with the right `VolumeReadError` reason, checking its size before
decoding, decoding and rescaling its pixels, and turning positions along the slice normal into
a frame order and a slice spacing. pydicom raises a dozen exception types (and sometimes only
warns, or silently drops a truncated data set); every one of them is translated here, so no
raw pydicom exception reaches a caller.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from fmtrain.data.volumes.errors import VolumeReadError

log = logging.getLogger("fmtrain.data")

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GAP_TOLERANCE = 0.01  # slice gaps differing by more than 1% of the median are irregular
_SNAP_TOLERANCE = 1e-4  # a declared spacing this close to the positions' is the same value


def open_dataset(path: str, name: str, *, header_only: bool = False) -> Dataset:
    """Parse a DICOM file, or raise `VolumeReadError` saying why it is not one.

    Files with the ``DICM`` prefix are read as they are. Files without it are force-read and
    accepted only if the result has Rows and Columns, so text or random bytes never pass
    for DICOM. A file that ends early becomes ``truncated_pixel_data``: pydicom then only
    warns and returns an empty or partial data set, which would otherwise look like a
    file without pixels.

    Args:
        path: Local file to read.
        name: How errors and warnings name the file (its URL when fetched from one).
        header_only: Stop before the pixel data (for grouping and sorting a series).
    """
    if not os.path.isfile(path):
        raise VolumeReadError("missing_file", name, "no such file")
    try:
        ds, caught = _dcmread(path, header_only, force=False)
    except InvalidDicomError:
        try:
            ds, caught = _dcmread(path, header_only, force=True)
        except Exception as exc:  # force-reading arbitrary bytes fails in arbitrary ways
            raise VolumeReadError("not_dicom", name, f"no DICM prefix and {exc}") from exc
        if "Rows" not in ds or "Columns" not in ds:
            raise VolumeReadError(
                "not_dicom", name, "no DICM prefix and no image attributes (Rows, Columns)"
            ) from None
    except (EOFError, OSError) as exc:
        if isinstance(exc, PermissionError | IsADirectoryError):
            raise VolumeReadError("missing_file", name, f"cannot open: {exc}") from exc
        raise VolumeReadError("truncated_pixel_data", name, f"file ends early: {exc}") from exc
    except Exception as exc:
        raise VolumeReadError("not_dicom", name, f"{type(exc).__name__}: {exc}") from exc
    ended_early = [m for m in caught if "End of file" in m or "EOF" in m]
    if ended_early or len(ds) == 0:
        detail = ended_early[0] if ended_early else "no data set after the File Meta header"
        raise VolumeReadError("truncated_pixel_data", name, f"file ends early: {detail}")
    # pydicom converts elements lazily, so a damaged one (an unknown VR, say) would raise
    # later from any attribute access; convert them all now, once, and say so here.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in ds.iterall():
                pass
    except Exception as exc:
        raise VolumeReadError(
            "not_dicom", name, f"damaged DICOM header: {type(exc).__name__}: {exc}"
        ) from exc
    return ds


def _dcmread(path: str, header_only: bool, force: bool) -> tuple[Dataset, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=force)
    messages = [str(w.message) for w in caught]
    for message in messages:
        log.debug("%s: pydicom: %s", path, message)
    return ds, messages


def as_int(ds: Dataset, keyword: str, name: str, default: int | None = None) -> int:
    """An integer attribute, or ``absurd_dimensions`` when it is missing or not a number."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on invalid IS values such as '1A'
        value = ds.get(keyword)
    if value in (None, "") and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        found = "missing" if value is None else f"{value!r}, not an integer"
        raise VolumeReadError("absurd_dimensions", name, f"{keyword} is {found}") from None


def check_dimensions(ds: Dataset, name: str, max_voxels: int, slices: int = 1) -> int:
    """Refuse zero or oversized images from the header alone, before any pixel is decoded.

    Returns:
        The number of frames in the file.
    """
    rows, columns = as_int(ds, "Rows", name), as_int(ds, "Columns", name)
    frames = as_int(ds, "NumberOfFrames", name, default=1)
    samples = as_int(ds, "SamplesPerPixel", name, default=1)
    total = rows * columns * frames * samples * slices
    if min(rows, columns, frames, samples) <= 0 or total > max_voxels:
        raise VolumeReadError(
            "absurd_dimensions",
            name,
            f"Rows {rows} x Columns {columns} x frames {frames * slices} x samples {samples} "
            f"= {total} voxels; each must be positive and the total at most {max_voxels} "
            "(raise max_voxels for a larger volume)",
        )
    return frames


def decode(ds: Dataset, name: str, fallbacks: list[str]) -> np.ndarray:
    """Decoded pixels as (frames, rows, columns) or (frames, rows, columns, 3), native order.

    Checks, in this order, that there is pixel data, that a decoder for the transfer syntax
    is installed, and that native pixel data is as long as the header says; then decodes
    (pydicom converts YBR colour to RGB) and refuses NaN or Inf.
    """
    keyword = next((k for k in PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        raise VolumeReadError("no_pixel_data", name, "no Pixel Data element")
    syntax = _transfer_syntax(ds, name, keyword, fallbacks)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise VolumeReadError(
            "unsupported_transfer_syntax",
            name,
            f"no pixel decoder exists for transfer syntax {syntax} ({syntax.name})",
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise VolumeReadError(
            "unsupported_transfer_syntax",
            name,
            f"transfer syntax {syntax.name} needs {missing}; install one of its plugins",
        )
    if not syntax.is_encapsulated:
        _check_native_length(ds, name, keyword)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # plugins raise RuntimeError, ValueError, ... and the Rust
        # ones (RLE) a pyo3 PanicException, which is not an Exception
        text = f"{type(exc).__name__}: {exc}"
        reason = "truncated_pixel_data" if "less than expected" in text else "decode_error"
        raise VolumeReadError(reason, name, text) from exc
    frames = as_int(ds, "NumberOfFrames", name, default=1)
    samples = as_int(ds, "SamplesPerPixel", name, default=1)
    shape = (frames, int(ds.Rows), int(ds.Columns)) + ((samples,) if samples > 1 else ())
    array = np.asarray(array)
    if array.size != math.prod(shape):
        raise VolumeReadError(
            "decode_error", name, f"decoded {array.shape}, but the header says {shape}"
        )
    array = array.reshape(shape)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise VolumeReadError("non_finite", name, f"{keyword} holds NaN or Inf values")
    return array


def _transfer_syntax(ds: Dataset, name: str, keyword: str, fallbacks: list[str]) -> UID:
    """The file's transfer syntax; for native pixel data without one, the encoding it was
    parsed with (which fixes the native syntax), recorded as a fallback."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax:
        return UID(syntax)
    implicit, little = ds.original_encoding
    if ds[keyword].is_undefined_length or implicit is None:
        raise VolumeReadError(
            "unsupported_transfer_syntax",
            name,
            "no Transfer Syntax UID in the File Meta header, and the pixel data is compressed "
            "(or the encoding unknown), so no decoder can be chosen",
        )
    syntax = (
        ImplicitVRLittleEndian
        if implicit
        else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    )
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    note = f"no Transfer Syntax UID; {syntax.name} taken from how the file is encoded"
    log.warning("%s: %s", name, note)
    fallbacks.append(note)
    return syntax


def _check_native_length(ds: Dataset, name: str, keyword: str) -> None:
    rows, columns = int(ds.Rows), int(ds.Columns)
    frames = as_int(ds, "NumberOfFrames", name, default=1)
    samples = as_int(ds, "SamplesPerPixel", name, default=1)
    if keyword == "PixelData":
        bits = as_int(ds, "BitsAllocated", name)
        if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            samples = 2  # two chroma samples are shared by each pair of pixels
    else:
        bits = 32 if keyword == "FloatPixelData" else 64
    expected = math.ceil(rows * columns * frames * samples * bits / 8)
    found = len(ds[keyword].value or b"")
    if found < expected:
        raise VolumeReadError(
            "truncated_pixel_data",
            name,
            f"{keyword} has {found} bytes; Rows {rows} x Columns {columns} x frames {frames} "
            f"x samples {samples} x {bits} bits needs {expected}",
        )


def rescale_of(item: Dataset | None, name: str) -> tuple[float, float] | None:
    """(slope, intercept) when `item` has RescaleSlope or RescaleIntercept, else None."""
    if item is None or ("RescaleSlope" not in item and "RescaleIntercept" not in item):
        return None
    slope, intercept = item.get("RescaleSlope"), item.get("RescaleIntercept")
    try:
        values = (
            1.0 if slope in (None, "") else float(slope),
            0.0 if intercept in (None, "") else float(intercept),
        )
    except (TypeError, ValueError):
        values = (math.nan, math.nan)
    if not all(math.isfinite(v) for v in values):
        raise VolumeReadError(
            "decode_error", name, f"RescaleSlope {slope!r} / RescaleIntercept {intercept!r}"
        )
    return values


def apply_rescale(array: np.ndarray, rescales: Sequence[tuple[float, float]]) -> np.ndarray:
    """Apply one (slope, intercept) per frame (axis 0); float32 unless all are identity."""
    if all(r == (1.0, 0.0) for r in rescales):
        return array
    slopes = np.array([s for s, _ in rescales], np.float32).reshape(-1, 1, 1)
    intercepts = np.array([i for _, i in rescales], np.float32).reshape(-1, 1, 1)
    return array.astype(np.float32) * slopes + intercepts


def floats(value: object, count: int) -> list[float] | None:
    """`count` finite floats from a multi-valued attribute, or None."""
    try:
        out = [float(v) for v in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return out if len(out) == count and all(math.isfinite(v) for v in out) else None


def orientation(iop: object) -> np.ndarray | None:
    """Rows = unit vectors (LPS) of the slice normal, the column axis and the row axis, i.e.
    of the array's (z, y, x); None when ImageOrientationPatient is absent or degenerate.

    DICOM's first direction cosine runs along a row (x, column index), the second down a
    column (y, row index); their cross product is the slice normal.
    """
    values = floats(iop, 6)
    if values is None:
        return None
    along_row, along_column = np.array(values[:3]), np.array(values[3:])
    norms = np.linalg.norm(along_row), np.linalg.norm(along_column)
    if min(norms) < 1e-6:
        return None
    along_row, along_column = along_row / norms[0], along_column / norms[1]
    if abs(float(along_row @ along_column)) > 1e-3:
        return None
    normal = np.cross(along_row, along_column)
    return np.stack([normal / np.linalg.norm(normal), along_column, along_row]) + 0.0


@dataclass(frozen=True)
class Stack:
    """Where the frames of a volume lie: the order to put them in and the distance between."""

    order: np.ndarray  # indices of the input frames, in array order
    spacing: float
    source: str  # the attribute the spacing came from
    step_sign: float  # +1 when array z runs along the slice normal, -1 against it


def stack_from_positions(
    projections: np.ndarray,
    labels: Sequence[str],
    name: str,
    declared: dict[str, float | None],
    *,
    sort: bool,
    declared_wins: bool,
) -> Stack:
    """Frame order and slice spacing from positions projected on the slice normal.

    Args:
        projections: Position of each frame along the normal (mm), in input order.
        labels: How warnings name each frame (file name or ``frame N``).
        name: The file or folder, for errors.
        declared: SpacingBetweenSlices and SliceThickness as the file states them (or None).
        sort: Always sort along the normal (a series); otherwise keep the input order when
            it is already monotonic (a multi-frame file) and sort only when it is not.
        declared_wins: Whether SpacingBetweenSlices overrides positions that disagree with
            it (multi-frame files, as the standard reads) or loses to them (a series).

    The spacing is the median gap. A declared value within 0.01% of it is returned instead,
    so decimal spacings round-trip exactly. Gaps more than 1% off the median are warned about
    by frame name; two frames at one position (several volumes interleaved) are refused.
    """
    order = np.argsort(projections, kind="stable")
    steps = np.diff(projections)
    if not sort and (np.all(steps > 0) or np.all(steps < 0)):
        order = np.arange(len(projections))
    ordered = projections[order]
    gaps = np.diff(ordered)
    duplicate = np.flatnonzero(np.abs(gaps) < 1e-6)
    if duplicate.size:
        i = int(duplicate[0])
        raise VolumeReadError(
            "inconsistent_series",
            name,
            f"{labels[order[i]]} and {labels[order[i + 1]]} lie at the same position "
            f"({ordered[i]:.4f} mm along the slice normal): several volumes (echoes, time "
            "points or stacks) are interleaved; split them into one series each",
        )
    sign = 1.0 if gaps[0] > 0 else -1.0
    gaps = np.abs(gaps)
    median = float(np.median(gaps))
    irregular = np.flatnonzero(np.abs(gaps - median) > _GAP_TOLERANCE * median)
    if irregular.size:
        i = int(irregular[0])
        log.warning(
            "%s: irregular slice gaps: %s is %.4f mm from the previous slice, the median gap "
            "is %.4f mm (%d of %d gaps differ by more than 1%%); using the median",
            name,
            labels[order[i + 1]],
            gaps[i],
            median,
            irregular.size,
            gaps.size,
        )
    between = declared.get("SpacingBetweenSlices")
    if declared_wins and between:
        if abs(between - median) > _GAP_TOLERANCE * median:
            log.warning(
                "%s: SpacingBetweenSlices %.4f mm differs from the %.4f mm between frame "
                "positions; using SpacingBetweenSlices",
                name,
                between,
                median,
            )
        return Stack(order, between, "SpacingBetweenSlices", sign)
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = declared.get(keyword)
        if value and abs(value - median) <= _SNAP_TOLERANCE * median:
            return Stack(order, value, keyword, sign)
    return Stack(order, median, "ImagePositionPatient", sign)


def positive(value: object) -> float | None:
    """A positive finite float, or None (DICOM leaves absent numbers empty or zero)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def provenance(ds: Dataset, path: str) -> dict[str, object]:
    """The metadata every DICOM volume carries, whatever its layout."""
    laterality = ds.get("ImageLaterality") or ds.get("Laterality") or ""
    if not laterality:
        shared = first_item(ds, "SharedFunctionalGroupsSequence")
        anatomy = first_item(shared, "FrameAnatomySequence")
        laterality = "" if anatomy is None else anatomy.get("FrameLaterality", "")
    series_uid = str(ds.get("SeriesInstanceUID", ""))
    return {
        "path": path,
        "format": "dicom",
        "modality": str(ds.get("Modality", "")),
        "manufacturer": str(ds.get("Manufacturer", "")),
        "model_name": str(ds.get("ManufacturerModelName", "")),
        "patient_id": str(ds.get("PatientID", "")),
        "laterality": str(laterality),
        "series_uid": series_uid,
        "series_instance_uid": series_uid,
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
    }


def first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of sequence `keyword` in `ds`, or None."""
    sequence = None if ds is None else ds.get(keyword)
    return sequence[0] if sequence else None


def missing_spacing(name: str, what: str, allow: bool, fallbacks: list[str]) -> float:
    """1.0 mm for a spacing the file lacks, only when allowed; logged and recorded."""
    if not allow:
        raise VolumeReadError(
            "missing_geometry",
            name,
            f"{what}; refusing to invent it. Fix the file, or pass allow_missing_spacing=True "
            "to use 1.0 mm (recorded in metadata['fallbacks'])",
        )
    note = f"{what}; 1.0 mm assumed"
    log.warning("%s: %s", name, note)
    fallbacks.append(note)
    return 1.0
