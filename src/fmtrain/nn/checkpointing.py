"""Activation checkpointing as a switch on any stack of blocks: all, none, or some."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

#: `activation_checkpointing`: False (none), True (every block), an int n (n blocks of each
#: stack, at most all of them) or a float in [0, 1] (that fraction of each stack's blocks).
Checkpointing = bool | int | float


def checked_setting(value: object, key: str) -> Checkpointing:
    """`value` if it is a valid `activation_checkpointing` setting; else a ValueError that
    names `key` (the recipe key) and what is accepted."""
    ok = (
        isinstance(value, bool)
        or (isinstance(value, int) and value >= 0)
        or (isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0)
    )
    if not ok:
        raise ValueError(
            f"{key}={value!r}: expected true (every block), false (none), a whole number of "
            "blocks per stack (e.g. 6: six blocks recompute their activations in backward) or "
            "a fraction of the blocks in [0, 1] (e.g. 0.5)"
        )
    return value  # type: ignore[return-value]


def checkpointed_blocks(depth: int, setting: Checkpointing) -> list[bool]:
    """Which of `depth` blocks recompute their activations in backward.

    Partial settings spread the checkpointed blocks evenly over the stack (block i is one
    when floor((i + 1) k / depth) > floor(i k / depth), k the number checkpointed): the
    activation memory saved depends only on how many, and spreading them keeps the
    recomputation interleaved with the kept activations.
    """
    if isinstance(setting, bool):
        count = depth if setting else 0
    elif isinstance(setting, int):
        count = min(setting, depth)
    else:
        count = round(setting * depth)
    return [(i + 1) * count // depth > i * count // depth for i in range(depth)]


def run_blocks(
    blocks: Sequence[nn.Module] | Iterable[nn.Module],
    x: torch.Tensor,
    *,
    checkpointed: Checkpointing,
) -> torch.Tensor:
    """Apply `blocks` in order, recomputing activations in backward for the blocks that the
    `checkpointed` setting selects (`checkpointed_blocks`).

    `use_reentrant=False` is the variant that composes with torch.compile and with
    inputs that do not require grad (the reentrant one silently drops their gradients).
    """
    blocks = list(blocks)
    which = checkpointed_blocks(len(blocks), checkpointed)
    grad = torch.is_grad_enabled()
    for block, recompute in zip(blocks, which, strict=True):
        x = checkpoint(block, x, use_reentrant=False) if recompute and grad else block(x)
    return x
