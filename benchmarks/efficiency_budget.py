"""The time budget of `step_efficiency.py`: the steps one recipe's measurement plans, and the
exception that skips a recipe (or ends the sweep) that would run past its budget."""

from __future__ import annotations

import argparse


class OverBudget(Exception):
    """The recipe would take longer than --budget_s: skipped, with this reason."""


def planned_steps(args: argparse.Namespace, steps: int, lightning_steps: int) -> int:
    """Steps a recipe's measurement runs: bare warm-up and timed, the memory pass, the fit
    (warm-up, timed, one more for the last interval), and bare again after it."""
    fit = args.lightning_warmup + lightning_steps + 1
    return args.warmup + steps + 1 + fit + 1 + steps // 2
