"""Schedules against the run's length: warmup, learning rate and EMA are functions of
`trainer.max_steps`, so shortening a run (a common first experiment) stretches the warmup
over most of it. V-JEPA warms up for about 13% of its run (40 of 300 epochs)."""

from __future__ import annotations

from fmtrain.check.problems import CheckReport

__all__ = ["check_schedules"]

# Above this share of the run spent warming up, the peak learning rate is barely used.
_WARMUP_SHARE_WARN = 0.25
_WARMUP_SHARE_ADVISED = 0.1


def check_schedules(report: CheckReport, module, max_steps: int | None) -> None:
    """Warmup longer than a quarter of the run warns; one as long as the run is an error;
    a run without `trainer.max_steps` cannot have schedules at all."""
    if max_steps is None or max_steps < 1:
        report.add(
            "error",
            "trainer.max_steps",
            f"trainer.max_steps is {max_steps}: the learning-rate, weight-decay (and EMA) "
            "schedules are defined over the total number of optimizer steps",
            "set trainer.max_steps",
            "schedule",
        )
        return
    optimizer = getattr(module, "optimizer_config", None)
    warmup = getattr(optimizer, "warmup_steps", 0)
    report.performance["learning-rate warmup"] = (
        f"{warmup} of {max_steps} steps ({warmup / max_steps:.0%})"
    )
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
