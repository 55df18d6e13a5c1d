"""Where a run writes: one folder per run, the same folder across resumes.

    <root>/checkpoints/        step*.ckpt every `checkpoint.every_n_train_steps`, last.ckpt
    <root>/tensorboard/        curves (`tensorboard --logdir <root>/tensorboard`); a resumed
                               run appends to the same folder
    <root>/csv/metrics.csv     the same figures for scripts; a resumed run appends

`<root>` is `trainer.default_root_dir` (``runs`` when unset). Lightning's own default puts
checkpoints under ``<root>/<logger>/version_N/checkpoints`` and numbers a new version on every
start, which splits a resumed run over two folders; fixed names keep it in one.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from typing import TYPE_CHECKING

from jsonargparse import Namespace

from fmtrain.core.storage import join
from fmtrain.engine.announce import announce
from fmtrain.engine.resume import checkpoint_dirs, checkpoint_files

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from fmtrain.engine.interrupt import StopOnSignal

__all__ = [
    "DEFAULT_ROOT",
    "announce_end",
    "announce_start",
    "default_checkpoint_dir",
    "default_loggers",
    "resume_command",
]

DEFAULT_ROOT = "runs"


def default_loggers(root: str) -> list[Namespace]:
    """TensorBoard for people, CSV for scripts, each in one fixed folder under `root`."""
    kinds = (
        ("lightning.pytorch.loggers.TensorBoardLogger", "tensorboard"),
        ("fmtrain.engine.run_log.RunCSVLogger", "csv"),  # keeps its rows across resumes
    )
    return [
        # version "" writes straight into <root>/<name>, not <root>/<name>/version_N
        Namespace(class_path=path, init_args=Namespace(save_dir=root, name=name, version=""))
        for path, name in kinds
    ]


def default_checkpoint_dir(root: str) -> str:
    """Where checkpoints go when the recipe names no `checkpoint.dirpath`."""
    return join(root, "checkpoints")


def announce_start(trainer: pl.Trainer, ckpt_path: str | None) -> str | None:
    """Say where the run writes; refuse a fresh run into a folder holding another run's
    checkpoints (`--resume` would later pick among both). Returns the checkpoint folder."""
    dirs = checkpoint_dirs(trainer)
    if not dirs:
        return None
    dirpath = dirs[0]
    options = getattr(trainer.strategy.checkpoint_io, "storage_options", None)
    earlier = [os.path.basename(p) for p in checkpoint_files(dirpath, options)]
    if ckpt_path is None and earlier:
        raise SystemExit(
            f"{dirpath} holds the checkpoints of an earlier run ({', '.join(earlier[-3:])}); "
            "continue it with --resume true, or start a new one elsewhere with "
            "--trainer.default_root_dir=NEW_FOLDER (or --checkpoint.dirpath=NEW_FOLDER)"
        )
    callback = trainer.checkpoint_callback
    every = getattr(callback, "_every_n_train_steps", 0)
    when = f"every {every} steps and last.ckpt" if every else "last.ckpt"
    logs = [getattr(lg, "log_dir", None) for lg in trainer.loggers]
    logs_text = f"; curves in {', '.join(str(d) for d in logs if d)}" if any(logs) else ""
    announce(f"checkpoints go to {dirpath} ({when}){logs_text}")
    return dirpath


def resume_command(argv: list[str] | None = None) -> str:
    """The command that continues this run: the same arguments, resuming from the folder."""
    args = list(sys.argv[1:] if argv is None else argv)
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--resume", "--ckpt_path"):
            skip = "=" not in arg  # its value is the next argument
            continue
        kept.append(arg)
    if "fit" not in kept:
        kept = ["fit", "--config", "RECIPE.yaml"]
    return shlex.join(["fmtrain", *kept, "--resume", "true"])


def announce_end(trainer: pl.Trainer, stopper: StopOnSignal | None) -> None:
    """Say where the run's checkpoint is; after a signal, how to resume, and exit 128+signal
    as a shell expects of an interrupted command."""
    if stopper is not None and stopper.received is not None:
        name = signal.Signals(stopper.received).name
        where = (
            f"checkpoint {stopper.saved}"
            if stopper.saved
            else "no checkpoint (stopped between steps)"
        )
        announce(
            f"stopped by {name} at step {trainer.global_step}; {where}. Resume with:\n"
            f"  {resume_command()}"
        )
        raise SystemExit(128 + stopper.received)
    dirs = checkpoint_dirs(trainer)
    if dirs:
        announce(f"finished at step {trainer.global_step}; checkpoints in {dirs[0]}")
