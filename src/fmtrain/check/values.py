"""Non-finite values anywhere in the prepared data, without reading it: `prepare` records,
per stored sample, whether its values are all finite and their range; check reads those
records for every split the recipe uses, and searches more batches than the first."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch

from fmtrain.check.batches import report_non_finite
from fmtrain.check.problems import CheckReport

__all__ = ["check_stored_values", "scan_batches"]


def _records(dm: Any) -> list[dict]:
    records: list[dict] = []
    for split in (getattr(dm, "train_set", None), getattr(dm, "val_set", None)):
        if split is not None and hasattr(split, "value_records"):
            records += split.value_records()
    return records


def check_stored_values(report: CheckReport, dm: Any) -> None:
    """Refuse stored samples that hold NaN/Inf; report the stored range; say how many
    samples have no record (prepared by an older fmtrain) and so go unchecked."""
    records = _records(dm)
    if not records:
        return
    key = getattr(dm, "source_key", "data.init_args.source")
    stats = [r["stats"] for r in records if r.get("stats")]
    bad = [r["key"] for r in records if r.get("stats") and not r["stats"]["finite"]]
    if bad:
        report.add(
            "error",
            "data.init_args.prepared",
            f"{len(bad)} of {len(records)} stored samples hold NaN/Inf: {bad[:5]}",
            f"prepare again into a new location (prepare now refuses such samples); the "
            f"damaged dataset is {getattr(dm, 'prepared', '?')}",
            "numerics",
        )
    unrecorded = len(records) - len(stats)
    if unrecorded:
        report.add(
            "warning",
            key,
            f"{unrecorded} of {len(records)} stored samples have no value record (prepared "
            "by an older fmtrain): only the batches check reads were searched for NaN/Inf",
            "prepare again to record every sample's values",
            "numerics",
        )
    ranged = [s for s in stats if "min" in s]
    if ranged:
        low, high = min(s["min"] for s in ranged), max(s["max"] for s in ranged)
        report.performance["stored values, every sample (min / max)"] = f"{low:.3g} / {high:.3g}"
    report.performance["samples with finite values on record"] = (
        f"{len(stats) - len(bad)} of {len(records)}"
    )


def scan_batches(
    report: CheckReport,
    loader: Iterable[Any],
    dm: Any,
    *,
    max_batches: int = 16,
    budget_s: float = 5.0,
) -> int:
    """Pull the batches after the first (up to `max_batches` or `budget_s`) and refuse the
    first that holds NaN/Inf inputs, naming its samples; returns how many were searched."""
    start, searched = time.perf_counter(), 0
    for batch in loader:
        searched += 1
        if not bool(torch.isfinite(batch.inputs).all()):
            report_non_finite(report, batch, dm, where=f"training batch {searched + 1}")
            break
        if searched >= max_batches or time.perf_counter() - start > budget_s:
            break
    report.performance["batches searched for NaN/Inf"] = searched + 1  # with the first
    return searched
