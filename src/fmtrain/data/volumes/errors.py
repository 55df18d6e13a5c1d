"""Why a file could not become a volume: one exception type with a short reason code.

Readers raise `VolumeReadError` for every input they refuse, so that `prepare` and the
datamodules can count skipped files by reason (``summary.json``) instead of crashing a worker.
"""

from __future__ import annotations

__all__ = ["REASONS", "SET_ASIDE", "PrepareFailed", "VolumeReadError"]

# reason code -> what it means; summary.json counts skips under these codes.
REASONS: dict[str, str] = {
    "missing_file": "the path or URL does not exist",
    "not_dicom": "the file is neither DICOM nor NIfTI",
    "no_pixel_data": "a DICOM image header (Rows, Columns) without Pixel Data",
    "not_an_image": "a DICOM object that is not an image: a segmentation, RT structure, plan "
    "or dose, report, presentation state, key object, or any object without pixels",
    "truncated_pixel_data": "Pixel Data shorter than rows x columns x frames x bytes",
    "unsupported_transfer_syntax": "no installed decoder handles the file's transfer syntax",
    "decode_error": "the compressed pixel data could not be decoded",
    "non_finite": "NaN or Inf voxels",
    "absurd_dimensions": "a dimension is zero or beyond the configured limit",
    "empty_series": "a folder or series with no readable image",
    "inconsistent_series": "frames of one series differ in size, orientation or spacing",
    "missing_geometry": "spacing is missing and no fallback was allowed",
    "unsupported": "a valid file of a kind fmtrain does not read as a volume",
    "too_large_after_resampling": "resampling to the target spacing would exceed the voxel "
    "budget (refused before allocating)",
    "bad_manifest_row": "a manifest or file-list row that is empty or does not parse",
    "unexpected_error": "an error no reader anticipated (a bug: please report it)",
}

# Reasons for inputs that are fine but are no volume to train on (an archive export holds
# segmentations and reports beside its images): counted and logged like every skip, but not
# held against `max_skip_fraction`, which is there to catch unreadable data.
SET_ASIDE: frozenset[str] = frozenset({"not_an_image"})


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


class PrepareFailed(RuntimeError):
    """`prepare` refused a source as a whole: too many items skipped, or none written.

    The message is two lines for a person: what failed with the skips counted by reason,
    then where each skip is explained and what to change. Callers that know the name of the
    setting in their context (a command-line option, a recipe key) use `explain`.

    Attributes:
        failure: the first line, without the fix.
        summary_url: the ``summary.json`` that lists each skipped item and why.
        over_limit: whether raising ``max_skip_fraction`` would let the run go on.
    """

    def __init__(
        self,
        failure: str,
        summary_url: str,
        *,
        over_limit: bool,
        setting: str = "max_skip_fraction",
    ) -> None:
        self.failure, self.summary_url, self.over_limit = failure, summary_url, over_limit
        super().__init__(self.explain(setting))

    def naming(self, setting: str) -> PrepareFailed:
        """The same failure, its message naming the limit as `setting` (a recipe key)."""
        return PrepareFailed(
            self.failure, self.summary_url, over_limit=self.over_limit, setting=setting
        )

    def explain(self, setting: str) -> str:
        """The message, naming the limit as `setting` (e.g. ``--max_skip_fraction``)."""
        fix = (
            f"fix those files, or raise {setting} to go on without them"
            if self.over_limit
            else "point the source at readable volumes"
        )
        return (
            f"prepare failed: {self.failure}\nwhy each item was skipped: {self.summary_url}; {fix}"
        )
