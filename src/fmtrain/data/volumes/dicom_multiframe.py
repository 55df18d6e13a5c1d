"""One DICOM file → Volume: single-frame, legacy multi-frame and enhanced multi-frame alike.

Enhanced files (Enhanced CT/MR, OCT, segmentations) keep their geometry in functional group
macros that may sit in the Shared or in each Per-frame Functional Groups item: Pixel Measures
(PixelSpacing, SliceThickness, SpacingBetweenSlices), Plane Orientation, Plane Position and
Pixel Value Transformation (rescale). Legacy files keep it in top-level attributes. Each
attribute is looked up in that order, frames are placed by their position along the slice
normal, and geometry the file lacks is refused unless the caller allows a recorded fallback.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from fmtrain.data.volumes.dicom_objects import not_an_image
from fmtrain.data.volumes.dicom_reader import (
    PIXEL_KEYWORDS,
    apply_rescale,
    check_dimensions,
    decode,
    first_item,
    floats,
    missing_spacing,
    open_dataset,
    orientation,
    positive,
    provenance,
    rescale_of,
    stack_from_positions,
)
from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.volume import Volume

__all__ = ["read_dicom_file"]

log = logging.getLogger("fmtrain.data")


def read_dicom_file(
    path: str | Path,
    *,
    name: str | None = None,
    allow_missing_spacing: bool = False,
    max_voxels: int = 2_000_000_000,
    images_only: bool = True,
) -> Volume:
    """Read one DICOM image file, with its geometry, into a `Volume`.

    Args:
        path: Local DICOM file.
        name: How errors, warnings and ``metadata["path"]`` name it (its URL when fetched).
        allow_missing_spacing: Use 1.0 mm for a missing pixel or slice spacing (logged and
            recorded in ``metadata["fallbacks"]``) instead of refusing the file.
        max_voxels: Refuse images with more voxels than this, checked before decoding.
        images_only: Refuse objects with pixels that are not images (a segmentation, an RT
            dose grid: see `fmtrain.data.volumes.dicom_objects`) as ``not_an_image``; False
            reads their pixels like an image's.

    Returns:
        Volume of shape (frames, rows, columns), or (3, frames, rows, columns) for colour
        (``metadata["leading_axis"] = "color"``), in the stored dtype, or float32 when a
        rescale applies. Frames keep the file's order when their positions are monotonic
        and are sorted along the slice normal otherwise (``metadata["frame_order"]``).

    Raises:
        VolumeReadError: For any file that cannot be read as a volume; see `errors.REASONS`.
    """
    path = str(path)
    name = name or path
    ds = open_dataset(path, name)
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        problem = not_an_image(ds, has_pixels=False)
        if problem:
            raise VolumeReadError("not_an_image", name, problem)
        raise VolumeReadError("no_pixel_data", name, "image attributes but no Pixel Data element")
    frames = check_dimensions(ds, name, max_voxels)
    if images_only and (problem := not_an_image(ds, has_pixels=True)):
        raise VolumeReadError("not_an_image", name, problem)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if per_frame and len(per_frame) != frames:
        raise VolumeReadError(
            "inconsistent_series",
            name,
            f"{len(per_frame)} Per-frame Functional Groups items for {frames} frames",
        )
    fallbacks: list[str] = []
    row_spacing, column_spacing, spacing_source = _pixel_spacing(
        ds, name, frames, allow_missing_spacing, fallbacks
    )
    axes = _orientation(ds, name, frames)
    positions = _positions(ds, frames, axes)
    declared = {
        keyword: _first_positive(_attribute(ds, "PixelMeasuresSequence", keyword, frames)[0])
        or positive(ds.get(keyword))
        for keyword in ("SpacingBetweenSlices", "SliceThickness")
    }

    order = np.arange(frames)
    z_axis = None if axes is None else axes[0]
    if positions is not None and frames > 1:
        axis = axes[0] if axes is not None else positions[-1] - positions[0]
        axis = axis / (np.linalg.norm(axis) or 1.0)
        stack = stack_from_positions(
            positions @ axis,
            [f"frame {i + 1}" for i in range(frames)],
            name,
            declared,
            sort=False,
            declared_wins=True,
        )
        order, slice_spacing, slice_source = stack.order, stack.spacing, stack.source
        z_axis = None if axes is None else stack.step_sign * axes[0]
    else:
        slice_spacing, slice_source = _declared_slice_spacing(
            declared, name, frames, allow_missing_spacing, fallbacks
        )
        if frames > 1 and axes is not None:
            note = "no frame positions: frames assumed to step along the slice normal"
            log.warning("%s: %s", name, note)
            fallbacks.append(note)

    array = decode(ds, name, fallbacks)
    if array.ndim == 3:
        array = apply_rescale(array, _rescales(ds, frames, name))
    if not np.array_equal(order, np.arange(frames)):
        array = array[order]
    metadata = provenance(ds, name)
    metadata.update(
        number_of_frames=frames,
        fallbacks=fallbacks,
        skipped_files=0,
        spacing_source=spacing_source,
        slice_spacing_source=slice_source,
    )
    if not np.array_equal(order, np.arange(frames)):
        metadata["frame_order"] = [int(i) for i in order]
    if positive(ds.get("FrameTime")):
        metadata["frame_time_ms"] = float(ds.FrameTime)
    if array.ndim == 4:
        array = np.ascontiguousarray(np.moveaxis(array, -1, 0))
        metadata["leading_axis"] = "color"
    origin = None
    if positions is not None:
        origin = tuple(float(v) for v in positions[order[0]])
    elif (top := floats(ds.get("ImagePositionPatient"), 3)) is not None:
        origin = tuple(top)
    return Volume(
        array=array,
        spacing=(slice_spacing, row_spacing, column_spacing),
        metadata=metadata,
        direction=None if axes is None else np.stack([z_axis, axes[1], axes[2]]) + 0.0,
        origin=origin,  # type: ignore[arg-type]
    )


def _attribute(ds: Dataset, macro: str, keyword: str, frames: int) -> tuple[list, str]:
    """`keyword` of functional group `macro` per frame, and where it was found.

    The Shared Functional Groups win; otherwise each Per-frame item is asked. Returns
    ``([None] * frames, "")`` when neither holds it.
    """
    shared = first_item(first_item(ds, "SharedFunctionalGroupsSequence"), macro)
    if shared is not None and shared.get(keyword) not in (None, ""):
        return [shared.get(keyword)] * frames, "shared"
    items = [first_item(item, macro) for item in ds.get("PerFrameFunctionalGroupsSequence") or []]
    values = [None if item is None else item.get(keyword) for item in items]
    values = [None if value in (None, "") else value for value in values]
    if any(value is not None for value in values):
        return values, "per_frame"
    return [None] * frames, ""


def _first_positive(values: list) -> float | None:
    return next((v for v in map(positive, values) if v is not None), None)


def _uniform(values: list, keyword: str, name: str, count: int) -> list[float] | None:
    """The one value all frames share, or ``inconsistent_series`` naming the first outlier."""
    parsed = [(i, floats(v, count)) for i, v in enumerate(values) if v is not None]
    first_index, first = parsed[0]
    for index, value in parsed[1:]:
        if value is None or first is None or not np.allclose(value, first, rtol=1e-4, atol=1e-6):
            raise VolumeReadError(
                "inconsistent_series",
                name,
                f"{keyword} differs between frames (frame {first_index + 1} {first!r}, frame "
                f"{index + 1} {value!r}); a regular volume needs one value",
            )
    return first


def _pixel_spacing(
    ds: Dataset, name: str, frames: int, allow: bool, fallbacks: list[str]
) -> tuple[float, float, str]:
    """(row, column) spacing in mm and where it came from: shared, per_frame, top_level."""
    values, source = _attribute(ds, "PixelMeasuresSequence", "PixelSpacing", frames)
    spacing = _uniform(values, "PixelSpacing", name, 2) if source else None
    if not source and "PixelSpacing" in ds:
        source, spacing = "top_level", floats(ds.PixelSpacing, 2)
    if spacing is not None and min(spacing) > 0:
        return spacing[0], spacing[1], source
    if not source and (calibrated := _ultrasound_spacing(ds)) is not None:
        return calibrated[0], calibrated[1], "SequenceOfUltrasoundRegions"
    what = (
        f"PixelSpacing ({source}) is not two positive mm values"
        if source
        else "no PixelSpacing in the Shared or Per-frame Functional Groups (Pixel Measures) "
        "nor at the top level: the mm per pixel are unknown"
    )
    value = missing_spacing(name, what, allow, fallbacks)
    return value, value, "fallback"


def _ultrasound_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) mm from ultrasound region calibration, when every 2D region agrees.

    Ultrasound files carry no PixelSpacing; each region of the image states its physical
    size per pixel instead (PhysicalDeltaX/Y, in cm when PhysicalUnits is 3).
    """
    deltas = set()
    for region in ds.get("SequenceOfUltrasoundRegions") or []:
        units = (region.get("PhysicalUnitsXDirection"), region.get("PhysicalUnitsYDirection"))
        if region.get("RegionSpatialFormat") != 1 or units != (3, 3):
            continue  # not a 2D tissue region in cm (M-mode, Doppler, or unitless)
        dy, dx = positive(region.get("PhysicalDeltaY")), positive(region.get("PhysicalDeltaX"))
        if dy is None or dx is None:
            return None
        deltas.add((round(dy * 10.0, 9), round(dx * 10.0, 9)))
    return deltas.pop() if len(deltas) == 1 else None


def _orientation(ds: Dataset, name: str, frames: int) -> np.ndarray | None:
    values, source = _attribute(ds, "PlaneOrientationSequence", "ImageOrientationPatient", frames)
    iop = _uniform(values, "ImageOrientationPatient", name, 6) if source else None
    if iop is None:
        iop = ds.get("ImageOrientationPatient")
    axes = orientation(iop)
    if axes is None and iop is not None:
        log.warning("%s: ImageOrientationPatient %r is not two orthogonal unit vectors", name, iop)
    return axes


def _positions(ds: Dataset, frames: int, axes: np.ndarray | None) -> np.ndarray | None:
    """ImagePositionPatient of every frame (frames, 3), or None when not all are known."""
    values, source = _attribute(ds, "PlanePositionSequence", "ImagePositionPatient", frames)
    if source == "per_frame" or (source == "shared" and frames == 1):
        parsed = [floats(v, 3) for v in values]
        return None if any(p is None for p in parsed) else np.array(parsed)
    top = floats(ds.get("ImagePositionPatient"), 3)
    if top is None:
        return None
    if frames == 1:
        return np.array([top])
    # RT Dose and other legacy multi-frame files: frame offsets along the normal.
    offsets = floats(ds.get("GridFrameOffsetVector"), frames)
    if offsets is None or axes is None:
        return None
    steps = np.array(offsets) - offsets[0]
    return np.array(top) + steps[:, None] * axes[0]


def _declared_slice_spacing(
    declared: dict[str, float | None], name: str, frames: int, allow: bool, fallbacks: list[str]
) -> tuple[float, str]:
    """Slice spacing when positions cannot give it: the file's stated values, or a fallback."""
    if declared["SpacingBetweenSlices"]:
        return declared["SpacingBetweenSlices"], "SpacingBetweenSlices"
    if declared["SliceThickness"]:
        if frames > 1:
            note = (
                "no SpacingBetweenSlices or frame positions: slice spacing taken from "
                "SliceThickness (assumes contiguous slices)"
            )
            log.warning("%s: %s", name, note)
            fallbacks.append(note)
        return declared["SliceThickness"], "SliceThickness"
    what = "no SpacingBetweenSlices, SliceThickness or frame positions: slice spacing unknown"
    return missing_spacing(name, what, allow, fallbacks), "fallback"


def _rescales(ds: Dataset, frames: int, name: str) -> list[tuple[float, float]]:
    """(slope, intercept) per frame: Pixel Value Transformation (shared, then per-frame),
    else the top-level RescaleSlope/RescaleIntercept, else identity."""
    shared = first_item(
        first_item(ds, "SharedFunctionalGroupsSequence"), "PixelValueTransformationSequence"
    )
    if (rescale := rescale_of(shared, name)) is not None:
        return [rescale] * frames
    top = rescale_of(ds, name) or (1.0, 0.0)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    found = [
        rescale_of(first_item(item, "PixelValueTransformationSequence"), name) for item in per_frame
    ]
    if any(r is not None for r in found):
        return [top if r is None else r for r in found]
    return [top] * frames
