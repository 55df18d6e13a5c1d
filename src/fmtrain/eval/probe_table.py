"""Print a pretrained-vs-random-init comparison (:func:`fmtrain.eval.probes.compare`) as a
plain-text table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["format_table"]


def _fmt(value: float, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _table_cells(row: Mapping[str, Any]) -> list[str]:
    pre, rand, gain = row["pretrained"], row["random"], row["gain"]
    return [
        row["task"],
        row["probe"],
        row["metric"] + ("" if row["higher_is_better"] else " (↓)"),
        f"{_fmt(pre['value'])} [{_fmt(pre['low'])}, {_fmt(pre['high'])}]",
        f"{_fmt(rand['mean'])} ± {_fmt(rand['sd'])}",
        f"{_fmt(gain['value'], True)} [{_fmt(gain['low'], True)}, {_fmt(gain['high'], True)}]"
        + (" *" if row.get("significant") else ""),
    ]


def format_table(comparison: Mapping[str, Any]) -> str:
    """Plain-text table of a :func:`fmtrain.eval.probes.compare` result, one row per
    task/probe/metric."""
    coverage = round(100 * (1 - comparison["alpha"]))
    header = [
        "task",
        "probe",
        "metric",
        f"pretrained [{coverage}% CI]",
        f"random init mean ± sd (n={comparison['n_random']})",
        f"gain, + = pretrained better [paired {coverage}% CI]",
    ]
    lines = [header, *(_table_cells(row) for row in comparison["rows"])]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    text.append(
        "gain = pretrained − random-init mean, or random-init mean − pretrained for (↓) "
        "lower-is-better metrics, so + always means pretrained is better; * the paired "
        "interval excludes 0"
    )
    return "\n".join(text)
