"""The target geometry of a preparation: derived from the data when not given, and guarded.

`fmtrain prepare FOLDER OUT` with no `--spacing`/`--size` reads a few volumes spread over the
source and takes the median spacing per axis and a size that holds the median field of view
(rounded up to whole multiples of 16 voxels, so the usual patch sizes divide it; of 8 below
64 voxels). Given or
derived, a resample whose output would exceed `RESAMPLE_VOXEL_BUDGET` is refused before
anything is allocated: OCT's 0.02 mm applied to a 3 mm CT asks for ~10^12 voxels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fmtrain.data.volumes.errors import VolumeReadError
from fmtrain.data.volumes.preprocess import resampled_shape
from fmtrain.data.volumes.volume import Volume

log = logging.getLogger("fmtrain.data")

__all__ = [
    "DERIVED_VOXEL_BUDGET",
    "RESAMPLE_VOXEL_BUDGET",
    "GeometrySurvey",
    "coverage_warning",
    "derive_geometry",
    "refuse_oversized_resample",
    "survey_geometry",
]

# 2^28 voxels is 1 GiB as float32, what one resample may allocate in a worker.
RESAMPLE_VOXEL_BUDGET = 2**28
# A derived size holds at most 256^3 voxels per stored volume (32 MiB as float16); beyond
# that the derived spacing is coarsened evenly on all axes, and the summary says so.
DERIVED_VOXEL_BUDGET = 256**3
_MULTIPLE = 16


@dataclass
class GeometrySurvey:
    """Spacing and shape (z, y, x) of the volumes read, and what could not be read."""

    spacings: list[tuple[float, float, float]] = field(default_factory=list)
    shapes: list[tuple[int, int, int]] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # key -> reason

    @property
    def read(self) -> int:
        return len(self.shapes)


def survey_geometry(
    keys: Sequence[str], read: Callable[[int], Volume], limit: int = 16
) -> GeometrySurvey:
    """Read up to `limit` of the items, spread evenly over `keys` (`read(i)` reads item i)."""
    survey = GeometrySurvey()
    if not keys:
        return survey
    picks = sorted({int(i) for i in np.linspace(0, len(keys) - 1, min(limit, len(keys)))})
    for i in picks:
        try:
            volume = read(i)
        except VolumeReadError as err:
            survey.unreadable[keys[i]] = err.reason
            continue
        survey.spacings.append(tuple(float(s) for s in volume.spacing))
        survey.shapes.append(volume.shape)
    return survey


def _round_up(n: float) -> int:
    # whole 16s for the usual patch sizes; 8s below 64 voxels, where 16s would pad a lot
    multiple = _MULTIPLE if n >= 4 * _MULTIPLE else _MULTIPLE // 2
    return max(multiple, math.ceil(n / multiple) * multiple)


def derive_geometry(
    survey: GeometrySurvey, spacing: Sequence[float] | None = None
) -> tuple[tuple[float, ...], tuple[int, ...], str]:
    """(spacing mm, size voxels, a summary for people) from the volumes surveyed; a given
    `spacing` is kept and only the size derived.

    Raises:
        ValueError: when no surveyed volume could be read.
    """
    if not survey.read:
        reasons = sorted(set(survey.unreadable.values()))
        raise ValueError(
            f"none of the {len(survey.unreadable)} volumes read to choose a geometry could be "
            f"read ({', '.join(reasons)}); pass --spacing and --size yourself, or fix the source"
        )
    spacings, shapes = np.array(survey.spacings), np.array(survey.shapes, dtype=float)
    target = np.median(spacings, axis=0) if spacing is None else np.array(spacing, float)
    extent = np.median(shapes * spacings, axis=0)  # field of view, mm
    size = np.array([_round_up(e / s) for e, s in zip(extent, target, strict=True)])
    coarsened = 1.0
    base = target
    while spacing is None and size.prod() > DERIVED_VOXEL_BUDGET:  # rounding up may overshoot
        coarsened *= max(1.02, float((size.prod() / DERIVED_VOXEL_BUDGET) ** (1 / 3)))
        target = base * coarsened
        size = np.array([_round_up(e / s) for e, s in zip(extent, target, strict=True)])
    spacing_out = tuple(float(f"{s:.4g}") for s in target)
    size_out = tuple(int(n) for n in size)
    low, high = spacings.min(axis=0), spacings.max(axis=0)
    lines = [
        f"no --size{'' if spacing else '/--spacing'} given: read {survey.read} volumes to "
        "choose" + (f" ({len(survey.unreadable)} unreadable)" if survey.unreadable else ""),
        "  spacing (mm, z y x): median "
        + " x ".join(f"{s:.3g}" for s in np.median(spacings, axis=0))
        + ", range "
        + " x ".join(f"{a:.3g}-{b:.3g}" for a, b in zip(low, high, strict=True)),
        "  field of view (mm): median " + " x ".join(f"{e:.0f}" for e in extent),
        f"  -> --spacing {list(spacing_out)} --size {list(size_out)}"
        + (
            f" (spacing coarsened x{coarsened:.2f} to keep {DERIVED_VOXEL_BUDGET:,} voxels "
            "per volume at most)"
            if coarsened > 1
            else ""
        ),
    ]
    return spacing_out, size_out, "\n".join(lines)


def refuse_oversized_resample(
    key: str,
    shape: Sequence[int],
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    budget: int = RESAMPLE_VOXEL_BUDGET,
) -> None:
    """Raise `too_large_after_resampling` before a resample would allocate beyond `budget`."""
    new = resampled_shape(shape, spacing, target_spacing)
    voxels = math.prod(new)
    if voxels > budget:
        raise VolumeReadError(
            "too_large_after_resampling",
            key,
            f"{'x'.join(map(str, shape))} voxels at {'x'.join(f'{s:g}' for s in spacing)} mm "
            f"resampled to {'x'.join(f'{s:g}' for s in target_spacing)} mm would be "
            f"{'x'.join(map(str, new))} = {voxels:.3g} voxels (budget {budget:.3g}); choose a "
            "spacing near the data's (or leave --spacing/--size out to derive them)",
        )


def coverage_warning(
    resampled: Sequence[int], size: Sequence[int], threshold: float = 0.5
) -> str | None:
    """A warning when padding or cropping dominates a volume after resampling, else None.

    Padding dominates when the data fills less than `threshold` of the stored volume (a 3-slice
    series padded to 32 slices); cropping when less than `threshold` of the data is kept.
    """
    inside = [min(r, s) for r, s in zip(resampled, size, strict=True)]
    filled = math.prod(inside) / math.prod(size)
    kept = math.prod(inside) / math.prod(resampled)
    shape = "x".join(map(str, resampled))
    target = "x".join(map(str, size))
    if filled < threshold:
        return f"mostly padding: the data ({shape} after resampling) fills {filled:.0%} of {target}"
    if kept < threshold:
        return f"mostly cropped: {target} keeps {kept:.0%} of the data ({shape} after resampling)"
    return None
