"""A series of single-frame DICOM files (a folder, or a list of files) → one Volume.

File names and InstanceNumber say nothing reliable about where a slice lies; the position
of each slice along the slice normal does. So headers are read first (without pixels), the
files grouped by SeriesInstanceUID, checked for one size, spacing and orientation, sorted by
ImagePositionPatient projected on the normal, and only then decoded. InstanceNumber order
is a recorded fallback for series without positions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset

from fmtrain.data.volumes.dicom_multiframe import read_dicom_file
from fmtrain.data.volumes.dicom_objects import not_an_image
from fmtrain.data.volumes.dicom_reader import (
    apply_rescale,
    as_int,
    check_dimensions,
    decode,
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

__all__ = ["read_dicom_series"]

log = logging.getLogger("fmtrain.data")


def read_dicom_series(
    paths: Sequence[str],
    *,
    source: str,
    names: Mapping[str, str] | None = None,
    series_uid: str | None = None,
    allow_missing_spacing: bool = False,
    max_voxels: int = 2_000_000_000,
    images_only: bool = True,
) -> Volume:
    """Read the single-frame DICOM files of one series as a volume.

    Args:
        paths: Local files; those that are not DICOM images (text, DICOMDIR, reports,
            segmentations) are skipped with a warning and counted in
            ``metadata["skipped_files"]``.
        source: The folder or list the files came from, for errors and ``metadata["path"]``.
        names: Display name per local path (URLs of fetched files); defaults to the path.
        series_uid: Which series to read when the files hold several.
        allow_missing_spacing: Use 1.0 mm for missing pixel or slice spacing, recorded in
            ``metadata["fallbacks"]``, instead of refusing the series.
        max_voxels: Refuse series with more voxels than this, checked before decoding.
        images_only: Skip objects with pixels that are not images (segmentations, RT dose
            grids); False keeps them (a series of such objects, read for their pixels).

    Returns:
        Volume (slices, rows, columns) — (3, slices, rows, columns) for colour — sorted along
        the slice normal, with ``metadata["files"]`` naming the file of each slice.

    Raises:
        VolumeReadError: ``empty_series`` (no image), ``inconsistent_series`` (several series
            without `series_uid`, or slices that differ), or any per-file reason.
    """
    names = dict(names or {})

    def label(path: str) -> str:
        return names.get(path, path)

    headers, skipped = _image_headers(paths, label, source, images_only)
    chosen = _one_series(headers, skipped, series_uid, source)
    if len(chosen) == 1:
        path, header = chosen[0]
        volume = read_dicom_file(
            path,
            name=label(path),
            allow_missing_spacing=allow_missing_spacing,
            max_voxels=max_voxels,
            images_only=images_only,
        )
        volume.metadata.update(skipped_files=skipped, files=[label(path)])
        return volume
    for path, header in chosen:
        if as_int(header, "NumberOfFrames", label(path), default=1) != 1:
            raise VolumeReadError(
                "unsupported",
                source,
                f"{label(path)} is multi-frame, in a series of {len(chosen)} files; read each "
                "multi-frame file on its own",
            )
    first = chosen[0][1]
    check_dimensions(first, source, max_voxels, slices=len(chosen))
    fallbacks: list[str] = []
    row_spacing, column_spacing, spacing_source = _same_for_all(
        chosen, label, source, allow_missing_spacing, fallbacks
    )
    axes = _same_orientation(chosen, label, source)
    declared = {k: positive(first.get(k)) for k in ("SpacingBetweenSlices", "SliceThickness")}
    positions = [floats(header.get("ImagePositionPatient"), 3) for _, header in chosen]
    origin = None
    if axes is not None and all(p is not None for p in positions):
        stack = stack_from_positions(
            np.array(positions) @ axes[0],
            [os.path.basename(label(path)) for path, _ in chosen],
            source,
            declared,
            sort=True,
            declared_wins=False,
        )
        order, slice_spacing, slice_source = stack.order, stack.spacing, stack.source
        origin = tuple(float(v) for v in positions[order[0]])
    else:
        order, slice_spacing, slice_source = _instance_order(
            chosen, label, source, declared, axes is None, allow_missing_spacing, fallbacks
        )
    ordered = [chosen[i] for i in order]
    array = _decode_slices(ordered, label, fallbacks)
    metadata = provenance(ordered[0][1], source)
    metadata.update(
        number_of_frames=len(ordered),
        fallbacks=fallbacks,
        skipped_files=skipped,
        spacing_source=spacing_source,
        slice_spacing_source=slice_source,
        files=[label(path) for path, _ in ordered],
    )
    if array.ndim == 4:
        array = np.ascontiguousarray(np.moveaxis(array, -1, 0))
        metadata["leading_axis"] = "color"
    return Volume(
        array=array,
        spacing=(slice_spacing, row_spacing, column_spacing),
        metadata=metadata,
        direction=axes,
        origin=origin,  # type: ignore[arg-type]
    )


def _image_headers(paths, label, source, images_only) -> tuple[list[tuple[str, Dataset]], int]:
    """Headers of the DICOM image files among `paths`, and how many files were skipped."""
    headers, skipped = [], 0
    for path in paths:
        try:
            header = open_dataset(path, label(path), header_only=True)
        except VolumeReadError as err:
            if err.reason != "not_dicom":
                raise
            log.warning("%s: skipping %s: not DICOM (%s)", source, label(path), err.detail)
            skipped += 1
            continue
        if "Rows" not in header or "Columns" not in header:
            log.warning("%s: skipping %s: DICOM without an image", source, label(path))
            skipped += 1
            continue
        if images_only and (problem := not_an_image(header, has_pixels=True)):
            log.warning("%s: skipping %s: %s", source, label(path), problem)
            skipped += 1
            continue
        headers.append((path, header))
    return headers, skipped


def _one_series(headers, skipped: int, series_uid: str | None, source: str) -> list:
    groups: dict[str, list[tuple[str, Dataset]]] = {}
    for path, header in headers:
        groups.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((path, header))
    found = ", ".join(f"{uid or '(none)'}: {len(files)} files" for uid, files in groups.items())
    if not groups:
        hint = " (a folder is read as a DICOM series)" if skipped else ""
        raise VolumeReadError("empty_series", source, f"no DICOM image among {skipped} files{hint}")
    if series_uid is not None:
        if series_uid not in groups:
            raise VolumeReadError(
                "empty_series", source, f"no file of series {series_uid}; found {found}"
            )
        return groups[series_uid]
    if len(groups) > 1:
        raise VolumeReadError(
            "inconsistent_series",
            source,
            f"{len(groups)} series ({found}) where one was expected. Give the folder itself "
            "as the source (`fmtrain prepare FOLDER OUT`, or a recipe's data source) to read "
            "one volume per series; in Python, read_volume(..., series_uid=UID) reads one",
        )
    return next(iter(groups.values()))


def _same_for_all(chosen, label, source, allow, fallbacks) -> tuple[float, float, str]:
    """One (rows, columns, samples) and one PixelSpacing for all slices."""
    first_path, first = chosen[0]
    size = (first.get("Rows"), first.get("Columns"), first.get("SamplesPerPixel", 1))
    spacing = floats(first.get("PixelSpacing"), 2)
    for path, header in chosen[1:]:
        other = (header.get("Rows"), header.get("Columns"), header.get("SamplesPerPixel", 1))
        if other != size:
            raise VolumeReadError(
                "inconsistent_series",
                source,
                f"{label(path)} is rows x columns x samples {other}, {label(first_path)} {size}",
            )
        theirs = floats(header.get("PixelSpacing"), 2)
        if (theirs is None) != (spacing is None) or (
            spacing is not None and not np.allclose(theirs, spacing, rtol=1e-4)
        ):
            raise VolumeReadError(
                "inconsistent_series",
                source,
                f"PixelSpacing {theirs} in {label(path)}, {spacing} in {label(first_path)}",
            )
    if spacing is not None and min(spacing) > 0:
        return spacing[0], spacing[1], "top_level"
    value = missing_spacing(source, "no valid PixelSpacing in the series", allow, fallbacks)
    return value, value, "fallback"


def _same_orientation(chosen, label, source) -> np.ndarray | None:
    axes = [orientation(header.get("ImageOrientationPatient")) for _, header in chosen]
    for (path, _), other in zip(chosen[1:], axes[1:], strict=True):
        if (other is None) != (axes[0] is None) or (
            other is not None and not np.allclose(other, axes[0], atol=1e-4)
        ):
            raise VolumeReadError(
                "inconsistent_series",
                source,
                f"ImageOrientationPatient of {label(path)} differs from {label(chosen[0][0])}",
            )
    return axes[0]


def _instance_order(chosen, label, source, declared, no_orientation, allow, fallbacks):
    """InstanceNumber order and the declared slice spacing, for series without positions."""
    numbers = [as_int(header, "InstanceNumber", label(path)) for path, header in chosen]
    if len(set(numbers)) != len(numbers):
        raise VolumeReadError(
            "inconsistent_series", source, "no slice positions and repeated InstanceNumbers"
        )
    missing = "ImageOrientationPatient" if no_orientation else "ImagePositionPatient"
    spacing = declared["SpacingBetweenSlices"] or declared["SliceThickness"]
    keyword = "SpacingBetweenSlices" if declared["SpacingBetweenSlices"] else "SliceThickness"
    if spacing is None:
        what = f"no {missing}, SpacingBetweenSlices or SliceThickness: slice spacing unknown"
        spacing, keyword = missing_spacing(source, what, allow, fallbacks), "fallback"
    note = (
        f"no {missing} in the series: slices ordered by InstanceNumber, slice spacing "
        f"{spacing} mm from {keyword}"
    )
    log.warning("%s: %s", source, note)
    fallbacks.append(note)
    return np.argsort(numbers, kind="stable"), spacing, keyword


def _decode_slices(ordered, label, fallbacks) -> np.ndarray:
    """Decode each slice into one preallocated array (float32 when any slice rescales)."""
    rescales = [rescale_of(header, label(path)) or (1.0, 0.0) for path, header in ordered]
    out = None
    for index, (path, _) in enumerate(ordered):
        pixels = decode(open_dataset(path, label(path)), label(path), fallbacks)
        if pixels.ndim == 3:
            pixels = apply_rescale(pixels, rescales[index : index + 1])
        if out is None:
            float_out = any(r != (1.0, 0.0) for r in rescales) and pixels.ndim == 3
            dtype = np.float32 if float_out else pixels.dtype
            out = np.empty((len(ordered), *pixels.shape[1:]), dtype)
        elif pixels.dtype != out.dtype and out.dtype != np.float32:
            raise VolumeReadError(
                "inconsistent_series",
                label(path),
                f"decodes to {pixels.dtype}, earlier slices to {out.dtype}",
            )
        out[index] = pixels[0]
    return out
