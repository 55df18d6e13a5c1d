"""One training step without Lightning: forward, backward and, given an optimizer, its update
and the method's after-step work (an EMA teacher): what `fit` does per step, minus the data,
the loggers and the guard. `check` and the benchmarks time and measure this one step instead
of each keeping a copy of it.

The module is a fmtrain method (`PretrainMethod`): `run_forward(batch).loss`, `method`,
`configure_optimizers()`, `schedule_values(step, total)` and `after_optimizer_step(values)`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["StepResult", "bare_step", "recipe_optimizer", "saved_tensor_bytes"]


@dataclass(frozen=True)
class StepResult:
    """What one bare step gave.

    Attributes:
        loss: the step's loss, detached.
        seconds: wall time of the step, the device synchronised before and after.
        saved_bytes: bytes of the distinct tensors autograd saved for backward (None when
            not measured): the step's activation memory, on any device.
    """

    loss: torch.Tensor
    seconds: float
    saved_bytes: int | None = None


def recipe_optimizer(module: Any) -> torch.optim.Optimizer | None:
    """The recipe's optimizer, built as `fit` builds it (None if the method gives no
    optimizer `fit` could step by itself)."""
    built = module.configure_optimizers()
    if isinstance(built, (list, tuple)):
        built = built[0] if built else None
    if isinstance(built, dict):
        built = built.get("optimizer")
    return built if isinstance(built, torch.optim.Optimizer) else None


@contextlib.contextmanager
def saved_tensor_bytes() -> Iterator[list[int]]:
    """Within the block, count the bytes of the distinct tensors autograd saves (a view of a
    saved storage with the same dtype and shape counts once); read `[0]` after it."""
    seen: dict[tuple, int] = {}
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen[key] = t.numel() * t.element_size()
            total[0] += seen[key]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_step(
    module: Any,
    batch: Any,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    autocast: AbstractContextManager | None = None,
    measure_saved: bool = False,
    step: int = 0,
    total_steps: int = 1,
) -> StepResult:
    """One step of `module` on `batch` (already on the module's device).

    Gradients are cleared first and left in place after (to be inspected); with an
    `optimizer`, it steps and the method's after-step work runs with the schedules' values
    at `step` of `total_steps`.
    """
    device = next(module.method.parameters()).device
    module.method.zero_grad(set_to_none=True)
    counting = saved_tensor_bytes() if measure_saved else nullcontext([0])
    _sync(device)
    start = time.perf_counter()
    with counting as saved, autocast or nullcontext():
        loss = module.run_forward(batch).loss
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        module.after_optimizer_step(module.schedule_values(step, total_steps))
    _sync(device)
    seconds = time.perf_counter() - start
    return StepResult(loss.detach(), seconds, saved[0] if measure_saved else None)
