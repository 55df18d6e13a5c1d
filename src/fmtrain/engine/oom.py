"""GPU out-of-memory during `fit`: stop with the options that fit the run, not a stack trace.

The advice is computed from the run's own values, so it can be pasted: halve the micro-batch
and double accumulation (the global batch, and so the optimization, stay the same), turn on
activation checkpointing, use bf16, or let `--find_micro_batch` pick the micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch


@dataclass(frozen=True, kw_only=True)
class MemorySettings:
    """The run's settings that decide its memory, as the recipe keys name them.

    Args:
        batch_size: `data.batch_size`, the per-device micro-batch.
        accumulate_grad_batches: `trainer.accumulate_grad_batches`.
        world_size: devices x nodes.
        precision: `trainer.precision` as Lightning reports it (e.g. "32-true").
        activation_checkpointing: `model.encoder.activation_checkpointing`; None when the
            model has no such switch.
    """

    batch_size: int | None
    accumulate_grad_batches: int
    world_size: int = 1
    precision: str = "32-true"
    activation_checkpointing: bool | None = None


def oom_message(settings: MemorySettings, error: BaseException | None = None) -> str:
    """The message for an out-of-memory stop: what ran out, and every option with its values."""
    s = settings
    global_batch = (s.batch_size or 0) * s.world_size * s.accumulate_grad_batches
    lines = [
        f"out of GPU memory with data.batch_size={s.batch_size} per device "
        f"(x {s.world_size} devices x trainer.accumulate_grad_batches="
        f"{s.accumulate_grad_batches} = global batch {global_batch})"
        + (f": {str(error).splitlines()[0]}" if error is not None and str(error) else "."),
        "Options, each keeping the global batch and so the optimization:",
    ]
    if s.batch_size is not None and s.batch_size > 1:
        # Halve and double; an odd micro-batch splits by its smallest factor instead, so the
        # product (the global batch) stays exactly the same.
        factor = next(p for p in range(2, s.batch_size + 1) if s.batch_size % p == 0)
        lines.append(
            f"  - smaller micro-batch, more accumulation: --data.init_args.batch_size="
            f"{s.batch_size // factor} --trainer.accumulate_grad_batches="
            f"{s.accumulate_grad_batches * factor}"
        )
    elif s.batch_size == 1:
        lines.append("  - data.batch_size is already 1: the micro-batch cannot shrink further")
    if s.activation_checkpointing is False:
        lines.append(
            "  - recompute activations in backward: "
            "--model.init_args.encoder.activation_checkpointing=true"
        )
    if not str(s.precision).startswith("bf16"):
        lines.append(
            f"  - half the activation memory: --trainer.precision=bf16-mixed (now {s.precision})"
        )
    lines.append(
        f"  - let fmtrain find the largest micro-batch that fits: --find_micro_batch=true "
        f"--global_batch_size={global_batch}"
    )
    return "\n".join(lines)


def memory_settings(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any | None
) -> MemorySettings:
    """Read the run's memory settings off the built objects (not the recipe, which the
    micro-batch finder may have overridden)."""
    return MemorySettings(
        batch_size=getattr(datamodule, "batch_size", None),
        accumulate_grad_batches=trainer.accumulate_grad_batches,
        world_size=trainer.world_size,
        precision=str(trainer.precision),
        activation_checkpointing=getattr(model, "activation_checkpointing", None),
    )


@contextmanager
def exit_on_oom(settings: MemorySettings) -> Iterator[None]:
    """Turn ``torch.OutOfMemoryError`` raised inside the block into `SystemExit(oom_message)`."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        raise SystemExit(oom_message(settings, err)) from err
