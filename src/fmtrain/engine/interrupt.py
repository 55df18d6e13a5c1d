"""Ctrl-C (SIGINT) or SIGTERM during `fit`: finish the step, save a checkpoint, stop, and say
how to resume. A second signal stops at once, as the default handler would.

A signal lands anywhere, mid optimizer update included, so the handler only raises a flag;
the checkpoint is written between steps (`on_train_batch_end`), where the state is whole and
the resumable data stream restarts exactly at the next batch. Loader workers ignore SIGINT
(`fmtrain.datamodules.stream`), so the batch the checkpoint waits for still arrives.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import lightning.pytorch as pl

from fmtrain.engine.announce import announce

__all__ = ["StopOnSignal"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# In a multi-process run the ranks agree on stopping through a collective, which costs a
# host sync: it runs every this many steps instead of every step.
SYNC_EVERY_N_STEPS = 20


class StopOnSignal(pl.Callback):
    """Stop a fit cleanly on SIGINT/SIGTERM with a checkpoint in `dirpath`.

    Attributes:
        received: the signal number that asked for the stop, or None.
        saved: the checkpoint written on the way out, or None.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = dirpath
        self.received: int | None = None
        self.saved: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        for sig, handler in self._previous.items():  # the next signal acts at once
            signal.signal(sig, handler)
        announce(
            f"{signal.Signals(signum).name}: stopping after this step and saving a "
            "checkpoint (send it again to stop at once, without one)"
        )

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            if trainer.global_step % SYNC_EVERY_N_STEPS:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or self.saved:
            return
        path = os.path.join(self.dirpath, f"step{trainer.global_step:07d}-interrupted.ckpt")
        trainer.save_checkpoint(path)
        self.saved = path
        trainer.should_stop = True

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
