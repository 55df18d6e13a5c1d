"""The machine `step_efficiency.py` runs on: the device's name, the load average, the
checkout's commit, and the autocast context for a recipe's precision."""

from __future__ import annotations

import os
import platform
import subprocess
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def autocast_for(device: torch.device, precision: str) -> Any:
    if device.type == "cuda" and "bf16" in precision:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cuda" and precision.startswith("16"):
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def commit() -> str:
    try:
        git = ["git", "-C", str(REPO)]
        out = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        if out.returncode:
            return "unknown (not a git checkout)"
        return out.stdout.strip() + (" (working tree has changes)" if dirty else "")
    except OSError:
        return "unknown"
