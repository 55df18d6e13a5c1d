"""Equal compute for the quality benchmarks: fit a recipe for a wall-time budget, not a step
count, and count the FLOPs it spent.

A method's schedules (warmup, cosine, EMA ramp, weight decay) are laid out over
`trainer.max_steps`, so cutting a run at a time limit would leave every schedule half done.
Instead a short calibration fit of the same recipe, data and loader measures Lightning's
steady-state step time here, and the real fit gets the steps that fill the budget, with
`trainer.max_time` as a hard stop should the machine slow down. The warmup, the one
schedule given in steps rather than over the run, keeps the share of the run it has in the
recipe (the V-JEPA ablation found that share decides whether the EMA target is worth
evaluating).
"""

from __future__ import annotations

import contextlib
import csv
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from efficiency_tools import StepClock, count_flops

from fmtrain.cli import run_cli
from fmtrain.cli.messages import quiet_third_party_notices

__all__ = [
    "VAL_RANK",
    "BudgetedFit",
    "collapse_warnings",
    "fit_for_budget",
    "lesion_sizes",
    "rank_curve",
]

# Calibration: steps run, and the first ones left out (loader start, first allocations).
# The mean step, not the median: the monitors' every-20-steps work is part of the cost.
CALIBRATION_STEPS = 60
CALIBRATION_SKIP = 8
# The calibration misses validation and checkpoint writes; leave them this
# share of the budget. At 8% (and the median step) a 10-minute V-JEPA fit on 2 cores
# reached step 3,288 of 4,010 when max_time stopped it: its schedules never finished.
OVERHEAD_SHARE = 0.15


@dataclass
class BudgetedFit:
    """What one budgeted fit did: its trainer objects and the compute it spent."""

    cli: Any
    budget_s: float
    steps: int
    planned_steps: int
    step_s: float
    fit_s: float
    calibration_s: float
    flops_per_step: int
    flops_counted: str
    notes: list[str] = field(default_factory=list)

    @property
    def total_flops(self) -> float:
        return float(self.flops_per_step) * self.steps

    def summary(self) -> dict[str, Any]:
        return {
            "budget_s": self.budget_s,
            "steps": self.steps,
            "planned_steps": self.planned_steps,
            "calibrated_step_s": round(self.step_s, 4),
            "fit_s": round(self.fit_s, 1),
            "calibration_s": round(self.calibration_s, 1),
            "flops_per_step": self.flops_per_step,
            "flops_counted": self.flops_counted,
            "total_flops": self.total_flops,
            "notes": self.notes,
        }


def _max_time(seconds: float) -> str:
    """Lightning's DD:HH:MM:SS."""
    s = max(1, math.ceil(seconds))
    return f"00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def fit_for_budget(fit_args: list[str], budget_s: float, root: Path) -> BudgetedFit:
    """Fit `fit_args` (a `fmtrain fit` command line without run-length or output keys) for
    about `budget_s` seconds of wall time, data loading and validation included.

    Args:
        fit_args: ["fit", "--config", RECIPE, overrides...].
        budget_s: seconds of fit the method gets.
        root: run folder; checkpoints under root/ckpt, the calibration under root/calibration
            (deleted after).

    Returns:
        The fit, its steps, its wall time and its model FLOPs (forward + backward of one
        training batch, counted by FlopCounterMode, times the steps).
    """
    # as `fmtrain fit` does: Lightning's advertisement and internal deprecations say nothing
    # about the run and would bury its own lines in a long benchmark log
    quiet_third_party_notices()
    calibration = root / "calibration"
    clock = StepClock()
    start = time.perf_counter()
    probe = [
        *fit_args,
        f"--trainer.max_steps={CALIBRATION_STEPS}",
        "--trainer.limit_val_batches=0",
        f"--trainer.default_root_dir={calibration}",
        f"--checkpoint.dirpath={calibration}/ckpt",
    ]
    built = run_cli(probe[1:], run=False)  # built without the subcommand, fitted below
    warmup = built.config.get("model.init_args.optimizer.warmup_steps")
    built.trainer.callbacks.append(clock)
    built.trainer.fit(built.model, datamodule=built.datamodule)
    calibration_s = time.perf_counter() - start
    shutil.rmtree(calibration, ignore_errors=True)
    step_s = statistics.fmean(clock.intervals(skip=CALIBRATION_SKIP))
    planned = max(10, int(budget_s * (1 - OVERHEAD_SHARE) / step_s))
    notes = []
    schedule = []
    if warmup:
        scaled = max(1, round(warmup * planned / recipe_max_steps(fit_args)))
        schedule.append(f"--model.init_args.optimizer.warmup_steps={scaled}")
        notes.append(f"warmup {warmup} -> {scaled} steps (the recipe's share of the run)")
    start = time.perf_counter()
    cli = run_cli(
        [
            *fit_args,
            *schedule,
            f"--trainer.max_steps={planned}",
            f"--trainer.max_time={_max_time(budget_s)}",
            f"--trainer.val_check_interval={max(1, planned // 5)}",
            f"--trainer.default_root_dir={root}",
            f"--checkpoint.dirpath={root}/ckpt",
        ]
    )
    fit_s = time.perf_counter() - start
    steps = int(cli.trainer.global_step)
    if steps < planned:
        notes.append(
            f"stopped by max_time at step {steps} of {planned}: the schedules did not finish"
        )
    batch = next(iter(cli.datamodule.train_dataloader()))
    flops, how = count_flops(cli.model, batch, contextlib.nullcontext())
    return BudgetedFit(
        cli=cli,
        budget_s=budget_s,
        steps=steps,
        planned_steps=planned,
        step_s=step_s,
        fit_s=fit_s,
        calibration_s=calibration_s,
        flops_per_step=flops,
        flops_counted=how,
        notes=notes,
    )


def recipe_max_steps(fit_args: list[str]) -> int:
    """trainer.max_steps as the command line would set it: the last override, else the
    recipe's own value."""
    overrides = [a for a in fit_args if a.startswith("--trainer.max_steps=")]
    if overrides:
        return int(overrides[-1].split("=", 1)[1])
    recipe = Path(fit_args[fit_args.index("--config") + 1])
    return int(yaml.safe_load(recipe.read_text())["trainer"]["max_steps"])


TRAIN_RANK = "collapse/train_batch_effective_rank"
VAL_RANK = "val/effective_rank"


def _metric_rows(root: Path) -> list[dict[str, str]]:
    path = root / "csv" / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def rank_curve(root: Path, metric: str = TRAIN_RANK) -> list[tuple[int, float]]:
    """(step, effective rank) logged under `metric` in root/csv/metrics.csv: by default the
    collapse monitor's (a training batch's pooled target features: methods with a target
    encoder), `VAL_RANK` for the validation features any method logs."""
    return [
        (int(row["step"]), round(float(row[metric]), 3))
        for row in _metric_rows(root)
        if row.get(metric)
    ]


def collapse_warnings(root: Path) -> int | None:
    """Steps at which the collapse monitor raised its warning flag; None when it never ran
    (methods without collapse inputs, such as MAE: nothing was monitored, so 0 would lie)."""
    flags = [row["collapse/warning"] for row in _metric_rows(root) if row.get("collapse/warning")]
    return sum(1 for flag in flags if float(flag) > 0) if flags else None


def lesion_sizes(data: Path, token_mm: tuple[float, ...]) -> dict[str, dict[str, Any]]:
    """Per pathology: how many volumes, and the 5th/50th/95th percentile of the largest
    lesion's width and height, in mm and in tokens (lateral width over the token's lateral
    extent, height over its depth extent). Read from the generator's lesions.tsv."""
    with (data / "lesions.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    out: dict[str, dict[str, Any]] = {}
    for pathology in sorted({r["pathology"] for r in rows}):
        mine = [r for r in rows if r["pathology"] == pathology]
        entry: dict[str, Any] = {"volumes": len(mine)}
        for key, extent in (
            ("lesion_max_width_mm", token_mm[2]),
            ("lesion_max_height_mm", token_mm[1]),
        ):
            values = sorted(float(r[key]) for r in mine)
            if not any(values):
                continue
            picks = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.05, 0.5, 0.95)]
            name = key.removeprefix("lesion_max_").removesuffix("_mm")
            entry[f"{name}_mm_p5_p50_p95"] = [round(v, 3) for v in picks]
            entry[f"{name}_tokens_p5_p50_p95"] = [round(v / extent, 2) for v in picks]
        out[pathology] = entry
    return out
