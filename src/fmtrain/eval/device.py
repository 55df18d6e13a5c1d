"""Where evaluation runs: the accelerator when there is one, as the user asks otherwise."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

__all__ = ["encode_autocast", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """ "auto" (or None): the first CUDA device when there is one, else the CPU; otherwise
    the named device, refused with the option to change when it does not exist here."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: there is no CUDA device here; use --device cpu (or auto)"
        )
    return resolved


def encode_autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast for frozen encoding on GPUs that have bf16; full precision elsewhere
    (CPU autocast would change the CPU results that earlier runs reported)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
