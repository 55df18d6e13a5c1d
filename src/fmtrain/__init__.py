"""fmtrain: self-supervised pretraining for volumes, video and 1D signals."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["export_encoder", "load_encoder"]


def __getattr__(name: str) -> Any:
    # lazy, so `import fmtrain` stays light and never pulls in Lightning
    if name in __all__:
        from fmtrain import export

        return getattr(export, name)
    raise AttributeError(f"module 'fmtrain' has no attribute {name!r}")
