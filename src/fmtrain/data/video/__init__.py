"""Video: sequence folders of frames, PyAV decoding, synthetic blur and spike streams.

- `frames`: split/sequence/stream listing with numeric frame order (`list_sequences`).
- `decode`: video files to uint8 RGB arrays (`read_video`, `video_info`).
- `synthesis`: GoPro-style blur, integrate-and-fire spikes, spike voxels.
- `clips`: clip index over sequences and a RAM frame cache that explain when empty.
- `pairs`: a restoration dataset written from one real video.

The names below are imported lazily, so `import fmtrain.data.video` does not load PyAV.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "natural_sort_key": ".frames",
    "list_sequences": ".frames",
    "check_split": ".frames",
    "FrameSequence": ".frames",
    "SequenceListing": ".frames",
    "read_frame": ".frame_io",
    "write_png": ".frame_io",
    "read_video": ".decode",
    "video_info": ".decode",
    "synthesize_blur": ".synthesis",
    "simulate_spikes": ".synthesis",
    "spike_voxels": ".synthesis",
    "luminance": ".synthesis",
    "Clip": ".clips",
    "ClipIndex": ".clips",
    "FrameCache": ".clips",
    "SpikeConfig": ".pairs",
    "write_restoration_pairs": ".pairs",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'fmtrain.data.video' has no attribute {name!r}")
