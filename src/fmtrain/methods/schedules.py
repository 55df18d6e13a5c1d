"""Step-indexed schedules. Pure functions of the step, so a resumed run recomputes them exactly."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, *, warmup_steps: int, total_steps: int, start: float, peak: float, final: float
) -> float:
    """Linear warmup from `start` to `peak`, then cosine decay to `final` at `total_steps`."""
    if step < warmup_steps:
        return start + (peak - start) * step / max(warmup_steps, 1)
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine(step: int, *, total_steps: int, start: float, end: float) -> float:
    """Cosine ramp from `start` to `end` (V-JEPA's weight-decay schedule)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear(step: int, *, total_steps: int, start: float, end: float) -> float:
    """Linear ramp from `start` to `end` (V-JEPA's EMA momentum schedule)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return start + (end - start) * progress
