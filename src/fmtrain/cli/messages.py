"""fmtrain's INFO progress messages on stderr, for people watching a long command."""

from __future__ import annotations

import logging
import sys

__all__ = ["quiet_third_party_notices", "show_progress_messages"]

# Notices from libraries that say nothing about this run: an advertisement, a deprecation
# inside Lightning's own code, a default Lightning chose for loading its own checkpoint.
_NOTICES = (
    "\N{ELECTRIC LIGHT BULB} Tip:",
    "`weights_only` was not set",
)
_EXPECTED_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # one folder per run: a resumed run writes where it wrote before (a fresh run into a
    # folder with checkpoints is refused before this, `fmtrain.engine.run_folder`)
    r"Checkpoint directory .* exists and is not empty",
)


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


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(_NOTICES)


def quiet_third_party_notices() -> None:
    """Keep Lightning's advertisements and internal deprecations off a person's screen, so
    that fmtrain's own lines and real warnings stand out. Set once per command."""
    import warnings

    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())
    for message in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
