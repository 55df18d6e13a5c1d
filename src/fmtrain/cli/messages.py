"""fmtrain's INFO progress messages on stderr, for people watching a long command."""

from __future__ import annotations

import logging
import sys

__all__ = ["show_progress_messages"]


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record, not at creation, so that
    in-process callers that swap stderr (notebooks, pytest) never get a stale stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def show_progress_messages() -> None:
    """Print fmtrain's INFO records ("preparing X into Y", "probing random-1", ...) on stderr.

    Without a handler Python shows only warnings, and a long `prepare` or `probe` would say
    nothing about what it is doing. A handler the user configured is left alone."""
    log = logging.getLogger("fmtrain")
    if log.handlers:
        return
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("[fmtrain] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
