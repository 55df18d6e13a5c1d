"""A forward + backward pass on fake tensors: every stage's shape, the bytes autograd would
save and the FLOPs, at the recipe's full size, in seconds and without the memory.

Check runs it before any real pass, so that a recipe too big for the machine check runs on
(ViT-L on 9,216 tokens on a laptop) is measured instead of killing the machine: the real
pass runs only when the fake one says it fits the time and memory here.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["FakeCosts", "fake_batch", "fake_costs", "matmul_rate"]


@dataclass(frozen=True)
class FakeCosts:
    """What one forward + backward of a batch would cost.

    Attributes:
        saved_bytes: bytes of the tensors autograd saves for backward (views counted apart,
            so an upper bound).
        flops: forward + backward FLOPs of the matmuls and convolutions (FlopCounterMode).
    """

    saved_bytes: int
    flops: int


def fake_batch(batch: Any, mode: FakeTensorMode) -> Any:
    """The batch with its float inputs faked (indices stay real: they pick tokens)."""
    fields = dict(vars(batch))
    for name, value in fields.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            fields[name] = mode.from_tensor(value)
    return type(batch)(**fields)


def fake_costs(
    module: Any, batch: Any, autocast: AbstractContextManager, checkpointing: bool
) -> FakeCosts:
    """Forward + backward of `batch` under fake tensors with activation checkpointing on or
    off; the module's real parameters are read, never written (their grads are cleared)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    recipe = module.activation_checkpointing
    module.set_activation_checkpointing(checkpointing)
    counter = FlopCounterMode(display=False)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = fake_batch(batch, mode)
            with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                with autocast:  # eager: a compiled graph is traced later, on real tensors
                    loss = module.forward_batch(fake).loss
                loss.backward()
    finally:
        module.method.zero_grad(set_to_none=True)  # fake gradients must not stay behind
        module.set_activation_checkpointing(recipe)
    return FakeCosts(saved_bytes=total[0], flops=int(counter.get_total_flops()))


def matmul_rate(device: torch.device, seconds: float = 0.2) -> float:
    """FLOP/s of a 1024 x 1024 fp32 matmul on `device`: what a step's FLOPs are divided by
    to predict its time (a lower bound: real steps run below matmul speed)."""
    a = torch.randn(1024, 1024, device=device)
    flops, start = 0, time.perf_counter()
    while True:
        a @ a
        flops += 2 * 1024**3
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return flops / elapsed
