"""Schedules walked over the whole run before training: where they go wrong, and where not."""

from __future__ import annotations

import math

import pytest

from fmtrain.check.problems import CheckReport
from fmtrain.check.schedules import check_schedules, schedule_steps
from fmtrain.methods.base import PretrainMethod
from fmtrain.methods.configs import OptimizerConfig


class _Scheduled:
    """Stands in for a method with one extra schedule (a plugin's, say): check_schedules only
    asks for `optimizer_config` and `schedule_values`, and the real base computes lr and
    weight decay here, so only the extra schedule is made up."""

    def __init__(self, extra) -> None:  # type: ignore[no-untyped-def]
        self.optimizer_config = OptimizerConfig(lr=1e-3, start_lr=0.0, warmup_steps=10)
        self.extra = extra

    def schedule_values(self, step: int, total_steps: int) -> dict[str, float]:
        return PretrainMethod.schedule_values(self, step, total_steps)  # type: ignore[arg-type]

    def extra_schedules(self, step: int, total: int) -> dict[str, float]:
        return self.extra(step, total)


def _problems(extra, max_steps: int = 100) -> CheckReport:  # type: ignore[no-untyped-def]
    report = CheckReport(recipe="r")
    check_schedules(report, _Scheduled(extra), max_steps)
    return report


def test_sound_schedules_pass_and_their_range_is_reported():
    report = _problems(lambda s, t: {"ema_momentum": 0.99 + 0.01 * s / t})
    assert not report.problems
    assert report.performance["lr over the run (min / max)"] == "0 / 0.001"
    assert report.performance["ema_momentum over the run (min / max)"] == "0.99 / 1"


@pytest.mark.parametrize(
    ("extra", "key", "what", "step"),
    [
        (lambda s, t: {"temperature": 1 - 2 * s / t}, "model.init_args (temperature schedule)",
         "goes negative", 51),
        (lambda s, t: {"temperature": math.inf if s == t else 1.0},
         "model.init_args (temperature schedule)", "is not finite", 100),
        (lambda s, t: {"ema_momentum": 0.99 + 0.02 * s / t}, "model.init_args.ema",
         "leaves [0, 1]", 51),
        (lambda s, t: {"ema_momentum": 1.0 - 0.01 * s / t}, "model.init_args.ema", "falls", 1),
    ],
)  # fmt: skip
def test_a_schedule_that_goes_wrong_anywhere_in_the_run_is_refused_at_its_first_bad_step(
    extra, key, what, step
):
    (error,) = _problems(extra).errors
    assert error.key == key and what in error.message
    assert f"at step {step} of 100" in error.message


def test_long_runs_are_walked_at_the_warmup_edges_and_both_ends():
    steps = schedule_steps(300_000, warmup_steps=2000)
    assert steps[0] == 0 and steps[-1] == 300_000 and len(steps) <= 4096 + 3
    assert {1999, 2000, 2001} <= set(steps)
    assert schedule_steps(50, 5) == list(range(51))


def test_ema_initialisation_left_is_the_product_of_the_momenta_sampled_or_not():
    from fmtrain.check.schedules import ema_initialisation_left

    every = [(s, 0.998 + 0.002 * s / 600) for s in range(601)]
    exact = math.prod(m for _, m in every[:-1])  # the update after step s uses momentum(s)
    assert ema_initialisation_left(every) == pytest.approx(exact, rel=2e-3)
    assert ema_initialisation_left(every[::50]) == pytest.approx(exact, rel=2e-3)
    assert ema_initialisation_left([(0, 1.0), (100, 1.0)]) == 1.0


class _EvaluatesTarget(_Scheduled):
    def __init__(self, momentum: float, evaluates: bool) -> None:
        super().__init__(lambda s, t: {"ema_momentum": momentum + (1 - momentum) * s / t})
        self.evaluates = evaluates

    def evaluates_ema_target(self) -> bool:
        return self.evaluates


@pytest.mark.parametrize(
    ("momentum", "steps", "evaluates", "warned"),
    [
        (0.998, 600, True, True),  # the demo before issue 23: 55% of the init left
        (0.998, 20_000, True, False),  # a long run leaves nothing
        (0.998, 600, False, False),  # the context encoder is evaluated: nothing to say
        (0.99, 600, True, False),
    ],
)
def test_an_evaluated_ema_target_that_is_mostly_its_initialisation_is_warned(
    momentum, steps, evaluates, warned
):
    report = CheckReport(recipe="r")
    check_schedules(report, _EvaluatesTarget(momentum, evaluates), steps)
    share = report.performance["EMA target: share of its random init left at the end"]
    expected = math.exp(sum(math.log(momentum + (1 - momentum) * s / steps) for s in range(steps)))
    assert float(share.rstrip("%")) == pytest.approx(100 * expected, abs=0.2)
    ema = [p for p in report.problems if p.key == "model.init_args.ema"]
    assert bool(ema) == warned
    if warned:
        assert "evaluation_encoder=context" in ema[0].fix and "55%" in ema[0].message
