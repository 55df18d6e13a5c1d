"""Checks of datamodule settings as the recipe is read, each naming its recipe key and value.

A bad number here otherwise surfaces late and far away: a zero spacing as a worker crash
per file during preparation, a negative worker count inside the loader, a zero batch as an
empty step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "require_loader_settings",
    "require_positive",
    "require_preparation",
    "require_whole",
]

KEY = "data.init_args"


def require_whole(name: str, value: object, minimum: int) -> None:
    """An integer setting of at least `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{KEY}.{name}={value}: expected a whole number >= {minimum}")


def require_positive(name: str, values: Sequence[float] | float) -> None:
    """One number or each of several: finite and > 0 (sizes, spacings, rates)."""
    items = list(values) if isinstance(values, Sequence) else [values]
    if not items or not all(
        isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in items
    ):
        shown = list(values) if isinstance(values, Sequence) else values
        raise ValueError(f"{KEY}.{name}={shown}: expected finite numbers > 0")


def require_loader_settings(batch_size: int, val_batch_size: int | None, num_workers: int) -> None:
    """What every datamodule's loaders take."""
    require_whole("batch_size", batch_size, 1)
    if val_batch_size is not None:
        require_whole("val_batch_size", val_batch_size, 1)
    require_whole("num_workers", num_workers, 0)


def require_preparation(prepare_workers: int, max_skip_fraction: float) -> None:
    """What datamodules that prepare raw files take."""
    require_whole("prepare_workers", prepare_workers, 1)
    if not (isinstance(max_skip_fraction, (int, float)) and 0 <= max_skip_fraction <= 1):
        raise ValueError(
            f"{KEY}.max_skip_fraction={max_skip_fraction}: expected a fraction in [0, 1] of "
            "the files that may be refused"
        )
