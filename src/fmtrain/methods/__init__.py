"""Pretraining methods: one small subclass of `PretrainMethod` per objective.

Names are imported lazily so that `fmtrain.methods.configs` (kept in checkpoints) loads
without Lightning.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "PretrainMethod": ".base",
    "MethodOutput": ".base",
    "RecipeLink": ".links",
    "VJEPA": ".vjepa",
    "VJEPAModule": ".vjepa",
    "MAE": ".mae",
    "MAEModule": ".mae",
    "MiM": ".mim",
    "MiMModule": ".mim",
    "CrossLevelConfig": ".mim",
    "RestorationModule": ".restore",
    "RestorationLossConfig": ".restore",
    "MaskedSignalModel": ".msm",
    "MaskedSignalModule": ".msm",
    "EMAConfig": ".configs",
    "ema_copy": ".ema",
    "ema_momentum": ".ema",
    "ema_update": ".ema",
    "DecoderConfig": ".configs",
    "OptimizerConfig": ".configs",
    "PredictorConfig": ".configs",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'fmtrain.methods' has no attribute {name!r}")
