"""Typed configuration blocks shared by pretraining methods (parsed by jsonargparse).

Each block checks its values where they are declared and names them by their recipe key
(methods take them as `model.init_args.<block>`), so `check` and `fit` refuse a bad value
when the recipe is read, with the key, the value and what would be accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_KEY = "model.init_args"


def _require(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"{_KEY}.{key}={value}: expected {expected}")


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _nearest_divisors(width: int, heads: int) -> str:
    divisors = [d for d in range(1, width + 1) if width % d == 0]
    below = max((d for d in divisors if d < heads), default=1)
    above = min((d for d in divisors if d > heads), default=width)
    return f"{below} or {above}"


def _check_transformer(block: str, embed_dim: int, depth: int, num_heads: int) -> None:
    """A transformer block's width, depth and heads, named under model.init_args.<block>."""
    _require(depth >= 1, f"{block}.depth", depth, "at least 1 block")
    _require(embed_dim >= 1, f"{block}.embed_dim", embed_dim, "a width of at least 1")
    _require(num_heads >= 1, f"{block}.num_heads", num_heads, "at least 1 head")
    _require(
        embed_dim % num_heads == 0,
        f"{block}.num_heads",
        num_heads,
        f"a divisor of {_KEY}.{block}.embed_dim={embed_dim} (e.g. "
        f"{_nearest_divisors(embed_dim, num_heads)})",
    )


@dataclass(kw_only=True)
class PredictorConfig:
    """JEPA predictor: narrower than the encoder.

    Args:
        embed_dim: predictor width.
        depth: predictor blocks.
        num_heads: attention heads (must divide embed_dim).
    """

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 12

    def __post_init__(self) -> None:
        _check_transformer("predictor", self.embed_dim, self.depth, self.num_heads)


@dataclass(kw_only=True)
class DecoderConfig:
    """MAE decoder: a narrow transformer with mask tokens, predicting pixels.

    Args:
        embed_dim: decoder width.
        depth: decoder blocks.
        num_heads: attention heads (must divide embed_dim).
    """

    embed_dim: int = 256
    depth: int = 4
    num_heads: int = 8

    def __post_init__(self) -> None:
        _check_transformer("decoder", self.embed_dim, self.depth, self.num_heads)


@dataclass(kw_only=True)
class OptimizerConfig:
    """AdamW with linear warmup + cosine learning rate and a cosine weight-decay ramp.

    Args:
        lr: peak learning rate.
        start_lr: learning rate at step 0.
        final_lr: learning rate at the last step.
        warmup_steps: steps of linear warmup.
        weight_decay: weight decay at step 0 (biases and norms never decay).
        final_weight_decay: weight decay at the last step.
        betas: AdamW betas.
    """

    lr: float = 6.25e-4
    start_lr: float = 2e-4
    final_lr: float = 1e-6
    warmup_steps: int = 40
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        _require(_finite(self.lr) and self.lr > 0, "optimizer.lr", self.lr, "a finite rate > 0")
        for name in ("start_lr", "final_lr", "weight_decay", "final_weight_decay"):
            value = getattr(self, name)
            _require(_finite(value) and value >= 0, f"optimizer.{name}", value, "finite, >= 0")
        for name in ("start_lr", "final_lr"):
            value = getattr(self, name)
            _require(
                value <= self.lr,
                f"optimizer.{name}",
                value,
                f"at most the peak {_KEY}.optimizer.lr={self.lr} (warmup rises to the peak, "
                "cosine decays from it)",
            )
        _require(
            isinstance(self.warmup_steps, int) and self.warmup_steps >= 0,
            "optimizer.warmup_steps",
            self.warmup_steps,
            "a whole number of steps >= 0",
        )
        _require(
            len(self.betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in self.betas),
            "optimizer.betas",
            list(self.betas),
            "two numbers in [0, 1), e.g. [0.9, 0.999]",
        )


@dataclass(kw_only=True)
class EMAConfig:
    """Target-encoder momentum, ramped linearly over the run.

    Args:
        momentum: momentum at step 0.
        final_momentum: momentum at the last step.
    """

    momentum: float = 0.998
    final_momentum: float = 1.0

    def __post_init__(self) -> None:
        for name in ("momentum", "final_momentum"):
            value = getattr(self, name)
            _require(_finite(value) and 0.0 <= value <= 1.0, f"ema.{name}", value, "in [0, 1]")
        _require(
            self.final_momentum >= self.momentum,
            "ema.final_momentum",
            self.final_momentum,
            f">= {_KEY}.ema.momentum={self.momentum} (the target must slow down, not speed up)",
        )
