"""The one rule for the global batch: per-device batch x devices x nodes x accumulation.

`fmtrain fit --global_batch_size` refuses to start on a mismatch and `fmtrain check` reports
it; both describe it with the same words so a user sees one message, not two dialects.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


def global_batch_mismatch(
    wanted: int | None, per_device: int, world: int, accumulate: int
) -> tuple[str, str] | None:
    """(problem, fix) when `wanted` differs from the product; None when it matches or is unset."""
    if wanted is None:
        return None
    actual = per_device * world * accumulate
    if actual == wanted:
        return None
    suggested = max(wanted // (per_device * world), 1)
    problem = (
        f"global_batch_size={wanted} but data.batch_size ({per_device}) x devices x nodes "
        f"({world}) x trainer.accumulate_grad_batches ({accumulate}) = {actual}"
    )
    fix = f"set trainer.accumulate_grad_batches={suggested} or change data.batch_size"
    return problem, fix


def global_batch_error(wanted: int | None, per_device: int, world: int, accumulate: int) -> str:
    """The message `fit` stops with on a mismatch ('' when the product matches)."""
    mismatch = global_batch_mismatch(wanted, per_device, world, accumulate)
    if mismatch is None:
        return ""
    problem, fix = mismatch
    return f"{problem}. {fix[0].upper()}{fix[1:]} so the product matches."


class GlobalBatchCheck(Callback):
    """The same rule, judged inside the launched processes, for strategies whose world is
    known only there: Lightning's XLA strategy reports a world of 1 until it has started one
    process per device on every host (the XLA runtime then says how many there are)."""

    def __init__(self, global_batch_size: int) -> None:
        self.global_batch_size = global_batch_size

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        message = global_batch_error(
            self.global_batch_size,
            trainer.datamodule.batch_size,
            trainer.world_size,
            trainer.accumulate_grad_batches,
        )
        if message:
            raise ValueError(f"fmtrain fit: {message}")
