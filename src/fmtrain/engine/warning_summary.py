"""Every warning fmtrain logged during a run, summarised once at its end.

Warnings scroll past under the progress bar (a sequence refused, a collapse alarm, a slow
loader); the summary repeats each distinct one with how often it came, so the end of a run's
output says what deserves a look.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collect_warnings", "format_warning_summary"]

_LOGGER = "fmtrain"  # fmtrain.data, fmtrain.masks, ... propagate here


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.counts[record.getMessage()] += 1
        except Exception:  # a record that cannot be formatted must not break the run
            self.counts[str(record.msg)] += 1


@contextmanager
def collect_warnings() -> Iterator[Counter[str]]:
    """Count the distinct WARNING (and worse) messages of the ``fmtrain`` loggers inside."""
    collector = _Collector()
    logger = logging.getLogger(_LOGGER)
    logger.addHandler(collector)
    try:
        yield collector.counts
    finally:
        logger.removeHandler(collector)


def format_warning_summary(counts: Counter[str], limit: int = 20) -> str:
    """'no warnings', or one line per distinct warning (most frequent first) with its count."""
    if not counts:
        return "run finished without warnings"
    total = sum(counts.values())
    lines = [f"{total} warning(s) during this run, {len(counts)} distinct:"]
    for message, n in counts.most_common(limit):
        first = message.splitlines()[0] if message else ""
        lines.append(f"  {n} x {first}")
    if len(counts) > limit:
        lines.append(f"  ... and {len(counts) - limit} more (see the run's log)")
    return "\n".join(lines)
