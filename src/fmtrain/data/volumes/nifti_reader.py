"""NIfTI-1/-2 (.nii, .nii.gz) → Volume, through nibabel, in DICOM's patient coordinates.

nibabel hands data as (i, j, k[, t]) in RAS world coordinates; a `Volume` is (z, y, x) in
LPS. So the array is transposed to (k, j, i) (4D: (t, k, j, i)), spacing is the header zooms
reversed, and direction/origin come from the best affine (sform when its code is set, else
qform) with its columns normalised and the first two world axes negated (RAS → LPS).
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.fileholders import FileHolder

from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.volume import Volume

__all__ = ["nifti_version", "read_nifti"]

log = logging.getLogger("fmtrain.data")

_MM_PER_UNIT = {"meter": 1000.0, "mm": 1.0, "micron": 0.001}
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def nifti_version(path: str | Path) -> int | None:
    """1 or 2 when the file (gzipped or not) starts with a NIfTI header, else None.

    Decided by content — ``sizeof_hdr`` and the magic string — not by the file name, so a
    cached copy of a remote ``.nii.gz`` without its suffix is still recognised.
    """
    found = _sniff(path)
    return None if found is None else found[0]


def _sniff(path: str | Path) -> tuple[int, bool, bool] | None:
    """(NIfTI version, single file (not a .hdr/.img pair), gzipped), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(544)
        gzipped = head[:2] == b"\x1f\x8b"
        if gzipped:
            with gzip.open(path, "rb") as f:
                head = f.read(544)
    except (OSError, EOFError):
        return None
    if len(head) < 348:
        return None
    for order in ("<", ">"):
        size = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0])
        if size == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
            return 1, head[345:346] == b"+", gzipped
        if size == 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
            return 2, head[5:6] == b"+", gzipped
    return None


def read_nifti(
    path: str | Path,
    *,
    name: str | None = None,
    allow_missing_spacing: bool = False,
    max_voxels: int = 2_000_000_000,
) -> Volume:
    """Read a single-file NIfTI image as a `Volume`.

    Args:
        path: Local .nii or .nii.gz file (any name; the content is checked).
        name: How errors, warnings and ``metadata["path"]`` name it (its URL when fetched).
        allow_missing_spacing: Use 1.0 mm for a zero or missing zoom, recorded in
            ``metadata["fallbacks"]``, instead of refusing the file.
        max_voxels: Refuse images with more voxels than this, checked before reading data.

    Returns:
        Volume with array (k, j, i), or (t, k, j, i) with ``metadata["leading_axis"] =
        "time"``, ``metadata["time_step"]`` and ``metadata["time_unit"]`` for 4D files. The
        stored dtype is kept unless scl_slope/scl_inter apply (then float32). Spacing is in
        mm (metre and micron files are converted); ``direction``/``origin`` are None when
        neither sform nor qform is set.

    Raises:
        VolumeReadError: ``missing_file``, ``not_dicom`` (not NIfTI either),
            ``absurd_dimensions``, ``truncated_pixel_data``, ``non_finite``,
            ``missing_geometry``, ``unsupported`` (more than 4 dimensions, a .hdr/.img pair,
            complex or RGB voxels); a damaged header is ``not_dicom`` (not valid NIfTI).
    """
    path = os.fspath(path)
    name = name or path
    if not os.path.isfile(path):
        raise VolumeReadError("missing_file", name, "no such file")
    found = _sniff(path)
    if found is None:
        raise VolumeReadError("not_dicom", name, "no NIfTI-1/-2 header (and not DICOM)")
    version, single_file, gzipped = found
    if not single_file:
        raise VolumeReadError("unsupported", name, "a .hdr/.img pair; convert it to .nii")
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    with (gzip.open if gzipped else open)(path, "rb") as f:
        try:
            # nibabel's checked header silently turns a zero pixdim into 1 mm; the raw one
            # keeps what the file says, so a missing spacing is refused or recorded here.
            raw = klass.header_class.from_fileobj(f, check=False)
            f.seek(0)
            holder = FileHolder(fileobj=f)
            image = klass.from_file_map({"header": holder, "image": holder})
        except Exception as exc:  # nibabel refuses odd headers with several exception types
            raise VolumeReadError(
                "not_dicom", name, f"damaged NIfTI header: {type(exc).__name__}: {exc}"
            ) from exc
        header = image.header
        shape = _spatial_shape(header.get_data_shape(), name, max_voxels)
        if header.get_data_dtype().kind not in "biuf":
            raise VolumeReadError(
                "unsupported", name, f"voxel type {header.get_data_dtype()} (complex or RGB)"
            )
        fallbacks: list[str] = []
        try:  # invalid unit codes and quaternions raise KeyError / ValueError in nibabel
            xyz_unit, time_unit = header.get_xyzt_units()
            scale = _spatial_scale(xyz_unit, name, fallbacks)
            zooms = [abs(float(z)) for z in raw["pixdim"][1:5]]
            spacing_ijk = [
                _zoom(zoom, axis, scale, name, allow_missing_spacing, fallbacks)
                for axis, zoom in zip("ijk", zooms[:3], strict=True)
            ]
            direction, origin, affine_source = _geometry(header, scale, spacing_ijk, name)
        except (KeyError, ValueError, TypeError) as exc:
            raise VolumeReadError(
                "not_dicom", name, f"damaged NIfTI header: {type(exc).__name__}: {exc}"
            ) from exc
        data = _read_data(image, name, path, gzipped)
    data = data.reshape(shape)
    data = np.ascontiguousarray(data.transpose(tuple(reversed(range(data.ndim)))))
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise VolumeReadError("non_finite", name, "NaN or Inf voxels")
    metadata: dict[str, object] = {
        "path": name,
        "format": "nifti",
        "nifti_version": version,
        "affine_source": affine_source,
        "sform_code": int(header["sform_code"]),
        "qform_code": int(header["qform_code"]),
        "xyz_unit": xyz_unit,
        "description": header["descrip"].item().decode("latin-1").strip("\x00 "),
        "fallbacks": fallbacks,
    }
    if data.ndim == 4:
        metadata.update(leading_axis="time", time_step=zooms[3], time_unit=time_unit)
    return Volume(
        array=data,
        spacing=(spacing_ijk[2], spacing_ijk[1], spacing_ijk[0]),
        metadata=metadata,
        direction=direction,
        origin=origin,
    )


def _spatial_scale(xyz_unit: str, name: str, fallbacks: list[str]) -> float:
    """mm per header unit; files with no unit (most templates) are taken to be in mm."""
    if xyz_unit not in _MM_PER_UNIT:
        note = f"spatial unit {xyz_unit!r}: zooms and affine taken as mm"
        log.info("%s: %s", name, note)
        fallbacks.append(note)
    return _MM_PER_UNIT.get(xyz_unit, 1.0)


def _zoom(
    zoom: float, axis: str, scale: float, name: str, allow: bool, fallbacks: list[str]
) -> float:
    """One voxel size in mm, or the recorded 1.0 mm fallback for a zero/NaN pixdim."""
    if zoom > 0 and np.isfinite(zoom):
        return zoom * scale
    what = f"pixdim of axis {axis} is {zoom}"
    if not allow:
        raise VolumeReadError(
            "missing_geometry",
            name,
            f"{what}; refusing to invent it (allow_missing_spacing=True uses 1.0 mm)",
        )
    log.warning("%s: %s; 1.0 mm assumed", name, what)
    fallbacks.append(f"{what}; 1.0 mm assumed")
    return 1.0


def _spatial_shape(shape: tuple[int, ...], name: str, max_voxels: int) -> tuple[int, ...]:
    """`shape` without trailing length-1 axes past the third; refuses 0, >4D and huge."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    shape = shape + (1,) * (3 - len(shape))
    total = int(np.prod(shape, dtype=np.int64))
    if min(shape) <= 0 or total > max_voxels:
        raise VolumeReadError(
            "absurd_dimensions",
            name,
            f"shape {shape} = {total} voxels; each dimension must be positive and the total at "
            f"most {max_voxels} (raise max_voxels for a larger image)",
        )
    if len(shape) > 4:
        raise VolumeReadError("unsupported", name, f"{len(shape)}D image {shape}; at most 4D")
    return shape


def _read_data(image, name: str, path: str, gzipped: bool) -> np.ndarray:
    """Voxels in the stored dtype, or float32 when scl_slope/scl_inter apply."""
    proxy = image.dataobj
    if not gzipped:
        needed = int(proxy.offset) + int(np.prod(proxy.shape)) * proxy.dtype.itemsize
        if os.path.getsize(path) < needed:
            raise VolumeReadError(
                "truncated_pixel_data",
                name,
                f"file has {os.path.getsize(path)} bytes, header needs {needed}",
            )
    try:
        if float(proxy.slope) == 1.0 and float(proxy.inter) == 0.0:
            return np.asarray(proxy)
        return np.asarray(image.get_fdata(dtype=np.float32))
    except (EOFError, gzip.BadGzipFile) as exc:
        raise VolumeReadError("truncated_pixel_data", name, f"{exc}") from exc
    except Exception as exc:
        raise VolumeReadError("decode_error", name, f"{type(exc).__name__}: {exc}") from exc


def _geometry(header, scale: float, spacing_ijk: list[float], name: str):
    """(direction rows z/y/x in LPS, origin in LPS, "sform" | "qform" | "") from the header."""
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform is not None and sform_code > 0:
        affine, source = sform, "sform"
    elif qform is not None and qform_code > 0:
        affine, source = qform, "qform"
    else:
        log.info("%s: sform_code and qform_code are 0: orientation unknown", name)
        return None, None, ""
    columns = np.asarray(affine[:3, :3], dtype=np.float64) * scale
    norms = np.linalg.norm(columns, axis=0)
    if not np.all(norms > 1e-9):
        log.warning("%s: the %s has a zero column: orientation unknown", name, source)
        return None, None, source
    if not np.allclose(norms, spacing_ijk, rtol=1e-3):
        log.warning(
            "%s: %s column lengths %s mm differ from the header zooms %s mm; spacing uses "
            "the zooms",
            name,
            source,
            np.round(norms, 6).tolist(),
            np.round(spacing_ijk, 6).tolist(),
        )
    unit_lps = (columns / norms) * _RAS_TO_LPS[:, None]
    origin = np.asarray(affine[:3, 3], dtype=np.float64) * scale * _RAS_TO_LPS
    direction = unit_lps[:, ::-1].T + 0.0  # + 0.0 turns -0.0 into 0.0
    return direction, tuple(float(v) + 0.0 for v in origin), source
