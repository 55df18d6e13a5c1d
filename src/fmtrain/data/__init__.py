"""Readers, manifests, splits, prepared datasets, synthetic generators and datamodules.

Knows nothing about models. The names below are imported lazily, so `fmtrain.data.batch`
can be imported without Lightning and the readers.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "VolumeDataModule": ".volume_datamodule",
    "read_volume": ".read",
    "prepare_dataset": ".prepare",
    "PreparedDataset": ".prepared",
    "read_catalog": ".catalog",
    "Volume": ".volume",
    "VolumeReadError": ".errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'fmtrain.data' has no attribute {name!r}")
