"""A few generated samples in a recipe's modality and geometry, written where the recipe's
datamodule can read them: `fmtrain check RECIPE --synthetic` checks a recipe before its data
exists. Each writer reads the recipe's data settings (defaults from the class) and returns
the `data.init_args` values that point the recipe at what it wrote. Each is a datamodule's
`write_synthetic` classmethod: `write_synthetic(folder, settings)`.

Enough samples are written for one per-device batch in the training split and at least one
in every other split; not a dataset, so `check` does not judge its size.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

from fmtrain.data.splits import DEFAULT_FRACTIONS

__all__ = ["synthetic_restoration", "synthetic_signals", "synthetic_volumes"]


def _setting(cls: type, settings: dict, name: str) -> Any:
    """The recipe's value of `name`, else the class's default."""
    if settings.get(name) is not None:
        return settings[name]
    return inspect.signature(cls.__init__).parameters[name].default


def _participants(cls: type, settings: dict, per_participant: int, devices: int = 1) -> int:
    """Enough participants for one batch of training samples and some in every other split.

    Splits are cut within each device group (`fmtrain.data.splits`), so every one of the
    `devices` groups needs 2 / (smallest fraction) participants for rounding to give each
    split at least one (a validation split left empty is refused)."""
    fractions = dict(_setting(cls, settings, "split_fractions") or DEFAULT_FRACTIONS)
    train = fractions.get(_setting(cls, settings, "train_split"), max(fractions.values()))
    batch = int(_setting(cls, settings, "batch_size"))
    for_batch = math.ceil((batch + 1) / (per_participant * max(train, 1e-3))) + 1
    smallest = min((f for f in fractions.values() if f > 0), default=1.0)
    for_splits = devices * math.ceil(2 / max(smallest, 1e-3))
    return max(for_batch, for_splits, 4)


def synthetic_volumes(cls: type, folder: str | Path, settings: dict) -> dict[str, Any]:
    """NIfTI volumes covering the recipe's field of view (see `write_synthetic_volumes`)."""
    folder = Path(folder)
    from fmtrain.data.synthetic.volumes import write_synthetic_volumes

    size = [int(s) for s in _setting(cls, settings, "input_size")]
    spacing = [float(s) for s in _setting(cls, settings, "spacing")]
    n = _participants(cls, settings, per_participant=1)
    source = write_synthetic_volumes(folder / "volumes", n, size=size, spacing=spacing)
    # the recipe's device / region filters name real scanners: none of them made these
    return {
        "source": str(source),
        "prepared": str(folder / "prepared"),
        "devices": None,
        "anatomic_regions": None,
        "lateralities": None,
    }


def synthetic_signals(cls: type, folder: str | Path, settings: dict) -> dict[str, Any]:
    """Synthetic ECG + PPG recordings (WFDB and .vital) long enough for several windows."""
    folder = Path(folder)
    from fmtrain.data.synthetic.signals import generate_signal_dataset

    rate = float(_setting(cls, settings, "rate"))
    window = int(_setting(cls, settings, "window"))
    hop = int(_setting(cls, settings, "hop") or max(window // 2, 1))
    duration = max(60.0, math.ceil(4 * window / rate))
    per_recording = max(1, int((duration * rate - window) // hop) + 1)
    # the generator alternates two devices (bedside and wearable)
    n = _participants(cls, settings, per_participant=per_recording, devices=2)
    manifest = generate_signal_dataset(
        folder / "signals", num_participants=n, duration_s=duration, progress=False
    )
    return {"source": str(manifest), "prepared": str(folder / "prepared")}


def synthetic_restoration(cls: type, folder: str | Path, settings: dict) -> dict[str, Any]:
    """Drifting-pattern sequences with blur and spike voxels (see `write_synthetic_pairs`)."""
    folder = Path(folder)
    from fmtrain.data.synthetic.video_pairs import write_synthetic_pairs

    crop = [int(c) for c in _setting(cls, settings, "crop")]
    clip = int(_setting(cls, settings, "clip_length"))
    stride = int(_setting(cls, settings, "clip_stride"))
    batch = int(_setting(cls, settings, "batch_size"))
    bins = int(_setting(cls, settings, "spike_bins"))
    frames = clip + 3 * stride
    clips_per_sequence = (frames - clip) // stride + 1
    size = (crop[0] + 16, crop[1] + 16)
    root = folder / "video"
    train = _setting(cls, settings, "train_split")
    sequences = math.ceil(batch / clips_per_sequence) + 1
    write_synthetic_pairs(
        root, train, sequences=sequences, frames=frames, size=size, spike_bins=bins
    )
    val = _setting(cls, settings, "val_split")
    if val:
        write_synthetic_pairs(root, val, sequences=1, frames=clip, size=size, spike_bins=bins)
    return {"root": str(root)}
