"""Readers, synthetic generators, preprocessing and datamodules. Knows nothing about models."""

from typing import Any

__all__ = ["OCTDataModule"]


def __getattr__(name: str) -> Any:
    # Lazy, so `fmtrain.data.batch` can be imported without Lightning and the readers.
    if name == "OCTDataModule":
        from .oct_datamodule import OCTDataModule

        return OCTDataModule
    raise AttributeError(f"module 'fmtrain.data' has no attribute {name!r}")
