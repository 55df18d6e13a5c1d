"""What `check` says about the machine a recipe asks for: an accelerator this machine lacks,
and a precision that the accelerator cannot run."""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any

import torch

from fmtrain.check.problems import CheckReport
from fmtrain.core.imports import import_object


def accelerator_name(accelerator: Any) -> str:
    """How the recipe names its accelerator: a name, or the class path of one."""
    path = getattr(accelerator, "class_path", None)
    return str(path or accelerator or "auto")


def _accelerator_here(accelerator: Any) -> bool | None:
    """Whether this machine has `accelerator` (None: a name that needs no device)."""
    name = accelerator_name(accelerator)
    if name in ("gpu", "cuda"):
        return torch.cuda.is_available()
    if name == "mps":
        return torch.backends.mps.is_available()
    if name in ("tpu", "xla"):
        from lightning.pytorch.accelerators import XLAAccelerator

        try:
            return XLAAccelerator.is_available()
        except Exception:  # with torch-xla but off a TPU VM it asks GCE's metadata server
            return False
    if "." in name:  # a class path: the accelerator class knows (`is_available`)
        try:
            return bool(import_object(name).is_available())
        except Exception:  # an unimportable class is the parser's to report
            return None
    return None


def _why_missing(accelerator: Any) -> str:
    """What is missing, where it can be said: torch-xla, or the TPU that PJRT looks for."""
    from fmtrain.engine.xla import is_xla

    if not is_xla(accelerator, None):
        return "this machine has none"
    if importlib.util.find_spec("torch_xla") is None:
        return "torch-xla is not installed here"
    backend = os.environ.get("PJRT_DEVICE") or "unset"
    return f"torch-xla finds no device of this kind here (PJRT_DEVICE={backend})"


def _known_name(report: CheckReport, accelerator: Any) -> bool:
    """A name Lightning knows, or a class; else an error that says how to write either."""
    if not isinstance(accelerator, str):
        return True
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
    if accelerator in names:
        return True
    if "." in accelerator:  # a class path given as a bare string is taken as a name
        fix = f"give a class as trainer.accelerator: {{class_path: {accelerator}}}"
    else:
        fix = f"use one of {', '.join(names)} (lower case), or {{class_path: ...}} for a class"
    report.add("error", "trainer.accelerator",
               f"trainer.accelerator={accelerator!r} is not an accelerator Lightning knows (fit "
               "would stop here)", fix, "device")  # fmt: skip
    return False


def check_accelerator_here(report: CheckReport, accelerator: Any, elsewhere: bool) -> None:
    """An accelerator name Lightning does not know: refused. One the machine lacks: refused,
    or, for a recipe that trains elsewhere, said (the step below ran on the CPU, so its
    timings are not the target's)."""
    if not _known_name(report, accelerator) or _accelerator_here(accelerator) is not False:
        return
    name = accelerator_name(accelerator)
    message = f"the recipe asks for trainer.accelerator={name!r}; {_why_missing(accelerator)}"
    if elsewhere:
        fix = "run check on the training machine for real timings"
        report.add("warning", "trainer.accelerator", f"{message}; the step below ran on the CPU",
                   fix, "device")  # fmt: skip
        return
    report.add(
        "error",
        "trainer.accelerator",
        message + " (fit would stop here)",
        "run check on the machine that trains, or add --elsewhere to check the recipe here "
        "on the CPU for a machine that has it",
        "device",
    )


# what Lightning's XLA precision plugin takes; a GPU recipe's bf16-mixed is refused at fit
_XLA_PRECISIONS = ("32-true", "16-true", "bf16-true")


def check_xla_precision(report: CheckReport, precision: str) -> None:
    if precision in _XLA_PRECISIONS:
        return
    report.add(
        "error",
        "trainer.precision",
        f"{precision} on XLA: Lightning's XLA precision takes only {', '.join(_XLA_PRECISIONS)} "
        "(fit would stop before the first step)",
        "use trainer.precision=bf16-true on a TPU (bf16 compute, as bf16-mixed would be on a "
        "GPU) or 32-true",
        "device",
    )


def check_device(report: CheckReport, precision: str, accelerator: str) -> None:
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and precision.startswith("16"):
        report.add(
            "error",
            "trainer.precision",
            f"{precision} on the CPU: there is no fp16 autocast there (Lightning would quietly "
            "train in bf16-mixed instead, not what the recipe says)",
            "use trainer.precision=bf16-mixed or 32-true on the CPU",
            "device",
        )
    if "bf16" in precision and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        report.add(
            "error",
            "trainer.precision",
            f"{precision} on {torch.cuda.get_device_name()}, which has no bf16",
            "use trainer.precision=16-mixed (with loss scaling) or 32-true",
            "device",
        )
