"""Typed configuration blocks shared by pretraining methods (parsed by jsonargparse)."""

from __future__ import annotations

from dataclasses import dataclass


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
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"model.ema.{name} must lie in [0, 1], got {getattr(self, name)}")
