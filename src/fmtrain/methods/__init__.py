"""Pretraining objectives: one LightningModule per method, each a thin shell over its step."""

from .configs import EMAConfig, EncoderConfig, OptimizerConfig, PredictorConfig
from .vjepa import VJEPA
from .vjepa_module import VJEPAModule

__all__ = [
    "VJEPA",
    "EMAConfig",
    "EncoderConfig",
    "OptimizerConfig",
    "PredictorConfig",
    "VJEPAModule",
]
