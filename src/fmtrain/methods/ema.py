"""The EMA teacher, one piece for every teacher-student objective (V-JEPA's target encoder,
a data2vec-style teacher, a BYOL target): a frozen copy of a student, the momentum schedule,
and the update after each optimizer step.

The update is decided on the device: after a step the numerics guard skipped, `applied` is a
0-d False and the teacher keeps its weights (momentum 1, exactly), without a host sync.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fmtrain.methods.configs import EMAConfig
from fmtrain.methods.schedules import linear

__all__ = ["EMAConfig", "ema_copy", "ema_momentum", "ema_update"]


def ema_copy(student: nn.Module) -> nn.Module:
    """The teacher: a deep copy of `student` that takes no gradients. Keep it in eval mode
    (no dropout or stochastic depth in a teacher): call `.eval()` on it in the objective's
    `train()`."""
    return copy.deepcopy(student).requires_grad_(False).eval()


def ema_momentum(config: EMAConfig, step: int, total_steps: int) -> float:
    """The momentum at `step`: linear from `config.momentum` to `config.final_momentum`."""
    return linear(step, total_steps=total_steps, start=config.momentum, end=config.final_momentum)


@torch.no_grad()
def ema_update(
    teacher: nn.Module,
    student: nn.Module,
    momentum: float,
    applied: torch.Tensor | None = None,
) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter.

    `applied` (0-d bool on the device), when given and False, leaves the teacher exactly as
    it was: the optimizer step was skipped.
    """
    target = list(teacher.parameters())
    online = [p.detach() for p in student.parameters()]
    if len(target) != len(online):
        raise ValueError(
            f"EMA teacher has {len(target)} parameters, its student {len(online)}: the teacher "
            "must be a copy of the student (ema_copy)"
        )
    if applied is None:
        torch._foreach_mul_(target, momentum)
        torch._foreach_add_(target, online, alpha=1.0 - momentum)
        return
    kept = torch.where(applied, momentum, 1.0)  # x * 1 + online * 0 is exactly x
    torch._foreach_mul_(target, kept)
    torch._foreach_add_(target, torch._foreach_mul(online, 1.0 - kept))
