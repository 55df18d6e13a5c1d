"""Keep third-party chatter out of `fmtrain probe`, `embed` and the demo's report.

Probing fits hundreds of small sklearn models and bootstraps thousands of resamples; their
Python warnings (ConvergenceWarning, undefined-metric RuntimeWarnings) would otherwise
scroll past by the dozen. :func:`captured_warnings` records them instead, and the command
prints one line: how many, of how many kinds, and the first. Building a recipe only to load
a checkpoint makes Lightning log its trainer set-up (accelerators, tips); :func:`quiet_lightning`
keeps those INFO lines for `fit`, where they belong.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["WarningLog", "captured_warnings", "quiet_lightning"]

_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning")


@dataclass
class WarningLog:
    """Python warnings recorded in a block: counts per kind ("Category: first line")."""

    kinds: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def add(self, message: warnings.WarningMessage) -> None:
        first_line = str(message.message).strip().splitlines()[0] if str(message.message) else ""
        self.kinds[f"{message.category.__name__}: {first_line}"] += 1

    def summary(self) -> str:
        """One line, or "" when nothing was recorded."""
        if not self.count:
            return ""
        first = next(iter(self.kinds))
        kinds = len(self.kinds)
        return (
            f"{self.count} Python warning(s) of {kinds} kind(s) while probing, first: {first}"
            + (" (all kinds with counts in probe.json)" if kinds > 1 else "")
        )

    def to_dict(self) -> dict:
        return {"count": self.count, "kinds": dict(self.kinds)}


@contextmanager
def captured_warnings(into: WarningLog | None = None) -> Iterator[WarningLog]:
    """Record every Python warning raised in the block (none is printed), in order."""
    into = into or WarningLog()
    with warnings.catch_warnings(record=True) as caught:
        # "always": a repeated warning is counted each time, not shown once and then lost
        warnings.simplefilter("always")
        try:
            yield into
        finally:
            for message in caught:
                into.add(message)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's INFO logging (GPU/TPU availability, tips, seeds) off for the block."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
