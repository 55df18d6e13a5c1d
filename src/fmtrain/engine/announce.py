"""One line that says what a run decided on its own, seen whether or not logging is set up."""

from __future__ import annotations

import logging
import sys

from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger("fmtrain")


def announce(message: str) -> None:
    """Log `message` on the ``fmtrain`` logger, or print it to stderr when nothing would show
    an INFO record; once per job (global rank 0). Used for decisions a person must see in the
    run's output: the checkpoint a run resumed from, the micro-batch the finder picked."""
    if rank_zero_only.rank != 0:
        return
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info(message)  # fmtrain's handler (`fmtrain.cli.messages`) adds the prefix
    else:
        print(f"[fmtrain] {message}", file=sys.stderr, flush=True)
