"""Measuring pieces for `step_efficiency.py`: a bare training step's time, its FLOPs and
memory, the device's matmul peak, Lightning's steady-state step rate and a loader's rate.

Every time is taken with the device synchronised at both ends (CUDA), so bare and Lightning
figures are measured the same way.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from torch.utils.flop_counter import FlopCounterMode

from fmtrain.check.fake_pass import fake_costs
from fmtrain.engine.bare_step import bare_step, recipe_optimizer

__all__ = [
    "StepClock",
    "bare_step_seconds",
    "count_flops",
    "loader_rate",
    "matmul_peak",
    "recipe_optimizer",
    "saved_activation_bytes",
    "sync",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """FLOP/s of a large square matmul on `device` in `dtype` (8192 on a GPU, 2048 on a CPU):
    what this device reaches on the work transformers spend most time in."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: kernel selection, first allocation
    sync(device)
    flops, start = 0, time.perf_counter()
    while True:
        a @ b
        flops += 2 * n**3
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return flops / elapsed


def bare_step_seconds(
    module: Any,
    batches: Sequence[Any],
    optimizer: torch.optim.Optimizer,
    autocast: AbstractContextManager,
    device: torch.device,
    steps: int,
    on_first: Callable[[float], None] | None = None,
) -> list[float]:
    """Seconds of `steps` training steps, cycling through `batches` (already on `device`).
    `on_first(seconds)` sees the first step's time before the others run (and may raise to
    stop a run that would take too long)."""
    times = []
    for i in range(steps):
        times.append(
            bare_step(module, batches[i % len(batches)], optimizer, autocast=autocast).seconds
        )
        if i == 0 and on_first is not None:
            on_first(times[0])
    return times


def count_flops(module: Any, batch: Any, autocast: AbstractContextManager) -> tuple[int, str]:
    """Model FLOPs of one forward + backward of `batch` (matmuls, convolutions, attention;
    FlopCounterMode), without activation checkpointing's recomputation, and how counted:
    on fake tensors when the step allows it (no memory, no time), else on a real pass."""
    try:
        return fake_costs(module, batch, autocast, checkpointing=False).flops, "fake tensors"
    except Exception as err:  # data-dependent steps (a .item() on values) have no fake pass
        reason = type(err).__name__
    recipe = module.activation_checkpointing
    module.set_activation_checkpointing(False)
    counter = FlopCounterMode(display=False)
    try:
        with counter:  # one entry: entering again would clear the forward's counts
            with autocast:
                loss = module.run_forward(batch).loss
            loss.backward()
    finally:
        module.method.zero_grad(set_to_none=True)
        module.set_activation_checkpointing(recipe)
    return int(counter.get_total_flops()), f"real pass (no fake pass: {reason})"


def saved_activation_bytes(module: Any, batch: Any, autocast: AbstractContextManager) -> int:
    """Bytes of the distinct tensors autograd saves for backward in one forward of `batch`
    (the recipe's checkpointing mode): the activation memory of a step, on any device."""
    saved = bare_step(module, batch, autocast=autocast, measure_saved=True).saved_bytes
    module.method.zero_grad(set_to_none=True)
    return int(saved or 0)


class StepClock(Callback):
    """Time stamps at the end of every training batch (device synchronised): the intervals
    between them are Lightning's steady-state step times, data waits included."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        sync(pl_module.device)
        self.stamps.append(time.perf_counter())

    def intervals(self, skip: int) -> list[float]:
        """Step times after the first `skip` steps (warm-up, worker start)."""
        times = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return times[skip:]


def loader_rate(dm: Any, workers: int, batches: int, seconds: float) -> dict[str, Any]:
    """Samples/s of the datamodule's training loader with `workers` processes, after its
    first batch per worker (start-up, reported apart); at most `batches` batches or about
    `seconds` seconds."""
    dm.num_workers = workers
    loader = dm.train_dataloader()
    start = time.perf_counter()
    iterator = iter(loader)
    for _ in range(max(workers, 1)):  # every worker's first batch: process start, imports
        next(iterator)
    startup = time.perf_counter() - start
    samples, begin = 0, time.perf_counter()
    done = 0
    while done < batches and time.perf_counter() - begin < seconds:
        batch = next(iterator)
        samples += batch.inputs.shape[0]
        done += 1
    elapsed = time.perf_counter() - begin
    del iterator, loader  # persistent workers end with their loader
    return {
        "workers": workers,
        "startup_s": round(startup, 3),
        "batches_timed": done,
        "samples_per_s": round(samples / elapsed, 2) if done else None,
    }


def to_device(batches: Sequence[Any], device: torch.device) -> list[Any]:
    return [move_data_to_device(b, device) for b in batches]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
