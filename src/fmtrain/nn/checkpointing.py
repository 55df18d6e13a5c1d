"""Activation checkpointing as a switch on any stack of blocks."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, *, checkpointed: bool) -> torch.Tensor:
    """Apply `blocks` in order, recomputing activations in backward when `checkpointed`.

    `use_reentrant=False` is the variant that composes with torch.compile and with
    inputs that do not require grad (the reentrant one silently drops their gradients).
    """
    for block in blocks:
        if checkpointed and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x
