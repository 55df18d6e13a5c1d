"""Why a file could not become a volume: one exception type with a short reason code.

Readers raise `VolumeReadError` for every input they refuse, so that `prepare` and the
datamodules can count skipped files by reason (``summary.json``) instead of crashing a worker.
"""

from __future__ import annotations

__all__ = ["REASONS", "VolumeReadError"]

# reason code -> what it means; summary.json counts skips under these codes.
REASONS: dict[str, str] = {
    "missing_file": "the path or URL does not exist",
    "not_dicom": "the file is neither DICOM nor NIfTI",
    "no_pixel_data": "DICOM without Pixel Data",
    "truncated_pixel_data": "Pixel Data shorter than rows x columns x frames x bytes",
    "unsupported_transfer_syntax": "no installed decoder handles the file's transfer syntax",
    "decode_error": "the compressed pixel data could not be decoded",
    "non_finite": "NaN or Inf voxels",
    "absurd_dimensions": "a dimension is zero or beyond the configured limit",
    "empty_series": "a folder or series with no readable image",
    "inconsistent_series": "frames of one series differ in size, orientation or spacing",
    "missing_geometry": "spacing is missing and no fallback was allowed",
    "unsupported": "a valid file of a kind fmtrain does not read as a volume",
    "bad_manifest_row": "a manifest or file-list row that is empty or does not parse",
    "unexpected_error": "an error no reader anticipated (a bug: please report it)",
}


class VolumeReadError(Exception):
    """A file that cannot be read as a volume.

    Attributes:
        reason: one key of `REASONS`.
        path: the file, folder or URL that was read.
    """

    def __init__(self, reason: str, path: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}; expected one of {sorted(REASONS)}")
        self.reason, self.path, self.detail = reason, str(path), detail
        super().__init__(f"{path}: {reason}: {detail}")
