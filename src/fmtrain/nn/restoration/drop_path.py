"""Stochastic depth as arithmetic: one graph for every step, no data-dependent branches."""

from __future__ import annotations

import torch


def drop_path_scales(
    rates: torch.Tensor, batch: int, *, training: bool, device: torch.device
) -> torch.Tensor:
    """Per-sample multipliers for residual branches (stochastic depth, Huang et al. 2016).

    A branch is kept with probability 1 - rate and then scaled by 1 / (1 - rate), so its
    expectation is unchanged. The uniform draw happens in train and eval alike and only the
    rates change, so the traced graph is the same on every step (no `if random < p`).
    `training` is read once per call as a Python bool, which torch.compile guards on anyway.

    Args:
        rates: drop probabilities in [0, 1), shape [*R] (e.g. [depth, 2]: attention and MLP
            branch of every block in a stage), a float32 buffer.
        batch: batch size B.
        training: False gives exact ones (eval keeps every branch, unscaled).
        device: where to draw the uniform numbers.

    Returns:
        float32 tensor [*R, B] of 0 or 1 / (1 - rate) in training, all ones otherwise.
    """
    # Multiplying by 0 instead of 1 in eval turns every rate into 0: rand >= 0 always holds
    # and the division is by exactly 1, so eval equals a model built with drop_path=0.
    rates = rates * float(training)
    draw = torch.rand((*rates.shape, batch), device=device, dtype=torch.float32)
    keep = (draw >= rates.unsqueeze(-1)).to(torch.float32)
    return keep / (1.0 - rates).unsqueeze(-1)
