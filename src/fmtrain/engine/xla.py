"""XLA (a TPU, or XLA's CPU backend for tests) through Lightning: which recipes train on it,
and an accelerator that starts off a TPU VM too.

Lightning's ``tpu`` accelerator counts cores by asking a TPU VM's metadata server, so off a
TPU VM it cannot start at all, even when torch-xla runs on XLA's CPU backend
(``PJRT_DEVICE=CPU``). `PJRTAccelerator` counts the devices of the PJRT backend the
environment names, and on a TPU does what Lightning does. The checkpoint IO that XLA runs
get is `fmtrain.engine.checkpoint_io.XLAAtomicCheckpointIO`.

torch-xla is optional: this module imports without it; the accelerator refuses to be built
without it, as Lightning's does.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.accelerators.xla import _XLA_AVAILABLE
from lightning.pytorch.accelerators import XLAAccelerator

from fmtrain.core.imports import import_object

__all__ = ["PJRTAccelerator", "is_xla"]

# Lightning's names for XLA strategies, as a recipe's `trainer.strategy` spells them
_XLA_STRATEGIES = ("xla", "single_xla", "xla_debug", "xla_fsdp")


class PJRTAccelerator(XLAAccelerator):
    """Lightning's XLA accelerator, counting the devices of the PJRT backend that
    ``PJRT_DEVICE`` names: ``CPU`` (``CPU_NUM_DEVICES``, default 1), ``CUDA``/``GPU``
    (``GPU_NUM_DEVICES``, default every visible GPU) or ``TPU`` (Lightning's own count).

    In a recipe: ``trainer.accelerator: {class_path: fmtrain.engine.xla.PJRTAccelerator}``.
    On a TPU VM it behaves as ``trainer.accelerator: tpu``.
    """

    @staticmethod
    def auto_device_count() -> int:
        if not _XLA_AVAILABLE:
            return 0
        backend = os.environ.get("PJRT_DEVICE", "").upper()
        if backend == "CPU":
            return int(os.environ.get("CPU_NUM_DEVICES", "1"))
        if backend in ("CUDA", "GPU"):
            return int(os.environ.get("GPU_NUM_DEVICES", str(torch.cuda.device_count())))
        try:  # a TPU, or nothing named: Lightning asks the TPU runtime and the VM
            return XLAAccelerator.auto_device_count()
        except Exception:  # off a TPU VM: a connection error from GCE's metadata server
            return 0

    @staticmethod
    def is_available() -> bool:
        return PJRTAccelerator.auto_device_count() > 0

    @staticmethod
    def parse_devices(devices: int | str | list[int]) -> int | list[int]:
        return _parse_devices(devices, PJRTAccelerator.auto_device_count())

    @staticmethod
    def get_parallel_devices(devices: int | str | list[int]) -> list[torch.device]:
        parsed = _parse_devices(devices, PJRTAccelerator.auto_device_count())
        if isinstance(parsed, int):
            return [torch.device("xla", i) for i in range(parsed)]
        return [torch.device("xla", parsed[0])]


def _parse_devices(devices: int | str | list[int], count: int) -> int | list[int]:
    """Lightning's rule for XLA: all devices, one, or one chosen by index, against `count`."""
    if isinstance(devices, str):
        text = devices.strip()
        devices = int(text) if text.isdigit() else [int(d) for d in text.split(",") if d.strip()]
    if isinstance(devices, int) and devices in (1, count):
        return devices
    if isinstance(devices, (list, tuple)) and len(devices) == 1 and 0 <= devices[0] < count:
        return list(devices)
    raise ValueError(
        f"trainer.devices={devices!r} on XLA with {count} device(s) here: XLA runs on one device "
        f"or on all of them. Use 1, {count} or [i] with 0 <= i < {count}."
    )


def _class_path(value: Any) -> str | None:
    path = getattr(value, "class_path", None)
    if path is None and isinstance(value, dict):
        path = value.get("class_path")
    return path


def _is_subclass(path: str | None, base: type | tuple[type, ...]) -> bool:
    """Whether the class at the dotted `path` subclasses `base` (False if it cannot be imported)."""
    if not path:
        return False
    try:
        cls = import_object(path)
    except (ImportError, AttributeError, ValueError):
        return False
    return isinstance(cls, type) and issubclass(cls, base)


def is_xla(accelerator: Any, strategy: Any) -> bool:
    """Whether a recipe's `trainer.accelerator` and `trainer.strategy` train on XLA: the names
    ``tpu``/``xla``, an XLA strategy's name, or a class path of an XLA accelerator/strategy."""
    if isinstance(accelerator, XLAAccelerator):
        return True
    if isinstance(accelerator, str) and accelerator.lower() in ("tpu", "xla"):
        return True
    if isinstance(strategy, str) and strategy.lower() in _XLA_STRATEGIES:
        return True
    from lightning.pytorch.strategies import SingleDeviceXLAStrategy, XLAStrategy

    if isinstance(strategy, (SingleDeviceXLAStrategy, XLAStrategy)):
        return True
    return _is_subclass(_class_path(accelerator), XLAAccelerator) or _is_subclass(
        _class_path(strategy), (SingleDeviceXLAStrategy, XLAStrategy)
    )
