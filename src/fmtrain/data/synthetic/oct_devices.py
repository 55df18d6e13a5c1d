"""Geometry of the OCT devices found in AI-READI, for the synthetic generator.

Matrix sizes (rows × columns × B-scans) are the ones AI-READI's files carry. Spacings are
approximations of each maker's macular cube protocol, not values read off real files:
Spectralis scans a 30°×25° field (about 8.7 mm × 7.3 mm) with 3.9 µm axial sampling; the Topcon
and Zeiss 6 mm × 6 mm cubes sample 512 A-scans per B-scan over 6 mm, their B-scans evenly over
6 mm, and 2.0–2.6 mm of depth over their rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["OCT_DEVICES", "OCTDevice"]

# Spacings are written to DICOM as decimal strings (DS, at most 16 characters); rounding to 10
# significant digits keeps every value exactly representable there, so a write/read round trip
# returns the same floats.
_SIGNIFICANT_DIGITS = 10


def _round_spacing(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT_DIGITS}g}")


@dataclass(frozen=True)
class OCTDevice:
    """Acquisition geometry of one OCT device's volume scan.

    Attributes:
        key: Short name used in paths and recipes, e.g. ``"spectralis"``.
        manufacturer: DICOM Manufacturer, e.g. ``"Heidelberg Engineering"``.
        model_name: DICOM ManufacturerModelName, e.g. ``"Spectralis"``.
        rows: Samples per A-scan (depth), the DICOM Rows.
        columns: A-scans per B-scan, the DICOM Columns.
        frames: B-scans per volume, the DICOM NumberOfFrames.
        row_spacing_mm: Axial (depth) sampling distance in mm.
        column_spacing_mm: Lateral distance between A-scans in mm.
        slice_spacing_mm: Distance between B-scans in mm.
    """

    key: str
    manufacturer: str
    model_name: str
    rows: int
    columns: int
    frames: int
    row_spacing_mm: float
    column_spacing_mm: float
    slice_spacing_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape as (frames, rows, columns)."""
        return (self.frames, self.rows, self.columns)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm as (slice, row, column), matching :attr:`shape`."""
        return (self.slice_spacing_mm, self.row_spacing_mm, self.column_spacing_mm)

    def scaled(self, scale: float) -> OCTDevice:
        """Return the same scan at a different sampling density.

        The physical field of view (depth, width and height in mm) is unchanged: each matrix
        size is multiplied by ``scale`` and rounded (at least 8), and each spacing grows so that
        size × spacing stays the same.

        Args:
            scale: Factor applied to rows, columns and frames; 0.25 gives the CPU demo size.

        Returns:
            A new device description; ``scaled(1.0)`` equals the original.

        Raises:
            ValueError: If ``scale`` is not a positive finite number.
        """
        if not (scale > 0 and scale < float("inf")):
            raise ValueError(f"OCTDevice.scaled: scale must be a positive number, got {scale!r}")

        def size(n: int) -> int:
            return max(8, round(n * scale))

        rows, columns, frames = size(self.rows), size(self.columns), size(self.frames)
        return replace(
            self,
            rows=rows,
            columns=columns,
            frames=frames,
            row_spacing_mm=_round_spacing(self.row_spacing_mm * self.rows / rows),
            column_spacing_mm=_round_spacing(self.column_spacing_mm * self.columns / columns),
            slice_spacing_mm=_round_spacing(self.slice_spacing_mm * self.frames / frames),
        )


OCT_DEVICES: dict[str, OCTDevice] = {
    "spectralis": OCTDevice(
        key="spectralis",
        manufacturer="Heidelberg Engineering",
        model_name="Spectralis",
        rows=496,
        columns=768,
        frames=61,
        row_spacing_mm=0.0039,
        column_spacing_mm=0.0113,
        slice_spacing_mm=0.12,
    ),
    "maestro2": OCTDevice(
        key="maestro2",
        manufacturer="Topcon",
        model_name="Maestro2",
        rows=885,
        columns=512,
        frames=128,
        row_spacing_mm=_round_spacing(2.3 / 885),
        column_spacing_mm=_round_spacing(6.0 / 512),
        slice_spacing_mm=_round_spacing(6.0 / 128),
    ),
    "triton": OCTDevice(
        key="triton",
        manufacturer="Topcon",
        model_name="Triton",
        rows=992,
        columns=512,
        frames=256,
        row_spacing_mm=_round_spacing(2.6 / 992),
        column_spacing_mm=_round_spacing(6.0 / 512),
        slice_spacing_mm=_round_spacing(6.0 / 256),
    ),
    "cirrus": OCTDevice(
        key="cirrus",
        manufacturer="Carl Zeiss Meditec",
        model_name="Cirrus",
        rows=1024,
        columns=512,
        frames=128,
        row_spacing_mm=_round_spacing(2.0 / 1024),
        column_spacing_mm=_round_spacing(6.0 / 512),
        slice_spacing_mm=_round_spacing(6.0 / 128),
    ),
}
