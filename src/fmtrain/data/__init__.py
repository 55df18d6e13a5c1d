"""What reads files and what generates them, one wing per modality; knows nothing of models.

- `volumes/`: DICOM/NIfTI readers, catalogs and manifests, participant splits, `prepare` (zarr).
- `synthetic/`: generators that write real file formats (synthetic OCT as DICOM).

The names below are imported lazily, so `import fmtrain.data` stays cheap.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "read_volume": ".volumes.read",
    "prepare_dataset": ".volumes.prepare",
    "PreparedDataset": ".volumes.prepared",
    "read_catalog": ".volumes.catalog",
    "Volume": ".volumes.volume",
    "VolumeReadError": ".volumes.errors",
    "generate_oct_dataset": ".synthetic.generate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'fmtrain.data' has no attribute {name!r}")
