"""Schedules against the run's length: warmup, learning rate, weight decay and EMA momentum
are functions of `trainer.max_steps`, so they are walked over the whole run here, before
training: a value that goes negative or non-finite, or a momentum that leaves [0, 1] or falls,
is refused under the setting that drives it. Shortening a run (a common first experiment)
stretches the warmup over most of it: V-JEPA warms up for about 13% of its run."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np

from fmtrain.check.problems import CheckReport
from fmtrain.methods.base import PretrainMethod

__all__ = ["check_schedules", "ema_initialisation_left", "schedule_steps"]

# Above this share of the run spent warming up, the peak learning rate is barely used.
_WARMUP_SHARE_WARN = 0.25
_WARMUP_SHARE_ADVISED = 0.1
# An evaluated EMA target holding more than this share of its random initialisation at the end
# of the run is mostly untrained: probes then measure the initialisation.
_EMA_INIT_SHARE_WARN = 0.1
# Steps walked: every step of a short run, an even spread plus the warmup edges of a long one.
_MAX_POINTS = 4096
# The setting behind each built-in schedule; a method's own schedules are named by their name.
_SETTING = {
    "lr": "model.init_args.optimizer",
    "weight_decay": "model.init_args.optimizer",
    "ema_momentum": "model.init_args.ema",
}


def schedule_steps(max_steps: int, warmup_steps: int) -> list[int]:
    """The steps at which schedules are evaluated: all of them up to _MAX_POINTS, else an even
    spread that keeps the first, the last and both sides of the end of warmup."""
    if max_steps + 1 <= _MAX_POINTS:
        return list(range(max_steps + 1))
    spread = np.linspace(0, max_steps, _MAX_POINTS).round().astype(int).tolist()
    edges = [w for w in (warmup_steps - 1, warmup_steps, warmup_steps + 1) if 0 <= w <= max_steps]
    return sorted(set(spread) | set(edges))


def _first_bad(name: str, points: list[tuple[int, float]]) -> tuple[int, float, str] | None:
    """(step, value, what is wrong) at the first bad point of one schedule, or None."""
    for step, value in points:
        if not math.isfinite(value):
            return step, value, "is not finite"
    if not name.endswith("momentum"):
        return next(((s, v, "goes negative") for s, v in points if v < 0), None)
    outside = next(((s, v, "leaves [0, 1]") for s, v in points if not 0 <= v <= 1), None)
    falls = ((s, v, "falls (the target speeds up)") for (_, u), (s, v) in pairwise(points) if v < u)
    return outside or next(falls, None)


def _walk(report: CheckReport, module: PretrainMethod, max_steps: int, warmup: int) -> None:
    """Evaluate every schedule over the run; one problem per schedule, at its first bad step."""
    series: dict[str, list[tuple[int, float]]] = {}
    for step in schedule_steps(max_steps, warmup):
        for name, value in module.schedule_values(step, max_steps).items():
            series.setdefault(name, []).append((step, float(value)))
    for name, points in series.items():
        key = _SETTING.get(name, f"model.init_args ({name} schedule)")
        bad = _first_bad(name, points)
        if bad is not None:
            step, value, what = bad
            bounds = "within [0, 1] and rising" if name.endswith("momentum") else ">= 0"
            report.add(
                "error",
                key,
                f"the {name} schedule {what}: {value:.4g} at step {step} of {max_steps}",
                f"change the {name} settings under {key} so it stays finite and {bounds}",
                "schedule",
            )
        values = [v for _, v in points if math.isfinite(v)]
        if values:
            report.performance[f"{name} over the run (min / max)"] = (
                f"{min(values):.3g} / {max(values):.3g}"
            )
        if name == "ema_momentum" and bad is None:
            _ema_initialisation_left(report, module, points, max_steps)


def ema_initialisation_left(points: list[tuple[int, float]]) -> float:
    """prod(momentum) over the run's optimizer steps, from the schedule sampled at `points`
    (step, momentum): the share of its initial weights an EMA copy still holds at the end.
    Between sampled steps log(momentum) is integrated by the trapezoid rule."""
    if len(points) == 1:
        return 1.0
    total = 0.0
    for (s0, m0), (s1, m1) in pairwise(points):
        low, high = (math.log(max(m, 1e-300)) for m in (m0, m1))
        total += (s1 - s0) * (low + high) / 2
    return math.exp(total)


def _ema_initialisation_left(
    report: CheckReport, module: PretrainMethod, points: list[tuple[int, float]], max_steps: int
) -> None:
    left = ema_initialisation_left(points)
    report.performance["EMA target: share of its random init left at the end"] = f"{left:.1%}"
    evaluates = getattr(module, "evaluates_ema_target", lambda: False)()
    if evaluates and left > _EMA_INIT_SHARE_WARN:
        report.add(
            "warning",
            "model.init_args.ema",
            f"the evaluated EMA target still holds {left:.0%} of its random initialisation "
            f"after trainer.max_steps={max_steps} (the product of its momentum over the run): "
            "probes, embed and export would mostly measure the initialisation",
            "train longer, lower model.init_args.ema.momentum (its time constant is "
            "1 / (1 - momentum) steps), or set model.init_args.evaluation_encoder=context",
            "schedule",
        )


def check_schedules(report: CheckReport, module: PretrainMethod, max_steps: int | None) -> None:
    """Warmup longer than a quarter of the run warns; one as long as the run is an error;
    a run without `trainer.max_steps` cannot have schedules at all; every schedule is
    walked over the run."""
    if max_steps is None or max_steps < 1:
        report.add(
            "error",
            "trainer.max_steps",
            f"trainer.max_steps is {max_steps}: the learning-rate, weight-decay (and EMA) "
            "schedules are defined over the total number of optimizer steps",
            "set trainer.max_steps",
            "schedule",
            value=str(max_steps),
        )
        return
    optimizer = getattr(module, "optimizer_config", None)
    warmup = getattr(optimizer, "warmup_steps", 0)
    report.performance["learning-rate warmup"] = (
        f"{warmup} of {max_steps} steps ({warmup / max_steps:.0%})"
    )
    if hasattr(module, "schedule_values"):
        _walk(report, module, max_steps, warmup)
    advised = max(1, round(_WARMUP_SHARE_ADVISED * max_steps))
    fix = (
        f"set model.init_args.optimizer.warmup_steps to about {advised} "
        f"({_WARMUP_SHARE_ADVISED:.0%} of the run), or train longer"
    )
    if warmup >= max_steps:
        report.add(
            "error",
            "model.init_args.optimizer.warmup_steps",
            f"warmup_steps={warmup} is not shorter than trainer.max_steps={max_steps}: the "
            "learning rate never reaches its peak",
            fix,
            "schedule",
            value=str(warmup),
        )
    elif warmup > _WARMUP_SHARE_WARN * max_steps:
        report.add(
            "warning",
            "model.init_args.optimizer.warmup_steps",
            f"warmup_steps={warmup} is {warmup / max_steps:.0%} of trainer.max_steps="
            f"{max_steps}: most of the run trains below the peak learning rate, and the "
            "cosine decay that follows is short",
            fix,
            "schedule",
        )
