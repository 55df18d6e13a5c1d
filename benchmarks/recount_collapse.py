"""Recount a finished run's collapse warnings with the current monitor rule, from the values
it logged. A measurement of a log, not a test.

    python benchmarks/recount_collapse.py runs/quality_oct/mim_spark --width 256 --batch 8

The monitor only reads the method's outputs (it draws no random numbers and changes no
weights), so a rerun with the same seed and steps logs the same values: applying the rule to
them gives the warnings that rerun would raise. Prints the warnings the run raised, with the
rule it ran with, and the recount (`fmtrain.eval.monitors.collapse_reasons`, plus the
monitor's rank-against-start check).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from fmtrain.eval.monitors import collapse_reasons

RANK = "collapse/train_batch_effective_rank"


def recount(
    metrics_csv: Path, width: int, batch: int, min_rank_ratio: float = 0.25
) -> dict[str, object]:
    with metrics_csv.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get(RANK)]
    logged = sum(1 for r in rows if float(r.get("collapse/warning") or 0) > 0)
    steps = []
    for row in rows:
        rank = float(row[RANK])
        reasons = collapse_reasons(
            float(row["collapse/normalized_feature_std"]), rank, width, batch
        )
        ratio = float(row["collapse/rank_vs_start"]) if row.get("collapse/rank_vs_start") else None
        if ratio is not None and ratio < min_rank_ratio:
            reasons.append(f"rank {ratio:.2f} of its start")
        if reasons:
            steps.append({"step": int(row["step"]), "reasons": reasons})
    ranks = [float(r[RANK]) for r in rows]
    ratios = [float(r["collapse/rank_vs_start"]) for r in rows if r.get("collapse/rank_vs_start")]
    return {
        "monitored_steps": len(rows),
        "warnings_logged": logged,
        "warnings_recounted": len(steps),
        "recounted": steps,
        "batch_rank_min": min(ranks) if ranks else math.nan,
        "rank_vs_start_min": min(ratios) if ratios else math.nan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="the run's folder (holding csv/metrics.csv)")
    parser.add_argument("--width", type=int, required=True, help="feature width the monitor saw")
    parser.add_argument("--batch", type=int, required=True, help="training batch size")
    args = parser.parse_args()
    print(json.dumps(recount(args.run / "csv" / "metrics.csv", args.width, args.batch), indent=1))


if __name__ == "__main__":
    main()
