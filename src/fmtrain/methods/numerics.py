"""Numerics guard: skip steps with a non-finite loss or gradient, find where it began, stop.

The normal path costs one fused finiteness check over the gradients per optimizer step.
Only after a failure are forward and backward hooks armed on every module, and the failed
batch is run again to name the first module whose output (or gradient) went non-finite.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger("fmtrain")

__all__ = ["NonFiniteError", "NumericsGuard", "first_non_finite"]


class NonFiniteError(RuntimeError):
    """Training stopped after too many consecutive non-finite steps."""


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value] if value.is_floating_point() else []
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if hasattr(value, "__dataclass_fields__"):
        return [t for name in value.__dataclass_fields__ for t in _tensors(getattr(value, name))]
    return []


def _finite(value: object) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _tensors(value))


def first_non_finite(model: nn.Module, run: Callable[[], torch.Tensor]) -> str:
    """Run `run` (forward, returning a loss) and its backward under hooks; describe the first
    parameter, activation or gradient that is non-finite. Leaves `.grad` untouched."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return f"parameter {name} holds non-finite values (it was corrupted by an earlier step)"
    found: list[str] = []
    handles = []

    def forward_hook(name):
        def hook(module, inputs, output):
            if found or _finite(output):
                return
            where = "its input" if not _finite(inputs) else "its output"
            found.append(f"forward: module {name} ({type(module).__name__}) — {where}")

        return hook

    def backward_hook(name):
        def hook(module, grad_input, grad_output):
            if not found and not _finite(grad_input):
                found.append(f"backward: gradient into module {name} ({type(module).__name__})")

        return hook

    modules = [(n, m) for n, m in model.named_modules() if n]
    # full backward hooks must exist before the forward they observe
    for name, module in modules:
        handles.append(module.register_forward_hook(forward_hook(name)))
        handles.append(module.register_full_backward_hook(backward_hook(name)))
    with warnings.catch_warnings():
        # hooks on modules whose inputs need no grad warn that they fire on outputs: fine here
        warnings.filterwarnings("ignore", message="Full backward hook")
        try:
            loss = run()
            if not found and not _finite(loss):
                found.append("the loss itself (every module output was finite)")
            if not found:
                named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
                # autograd.grad, not backward(): nothing accumulates into .grad or reaches DDP
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
                if not found:
                    bad = [n for (n, _), g in zip(named, grads, strict=True)
                           if g is not None and not bool(torch.isfinite(g).all())]  # fmt: skip
                    found.append(f"gradient of parameter {bad[0]}" if bad else "not reproduced")
        finally:
            for h in handles:
                h.remove()
    return found[0]


class NumericsGuard:
    """Per-step verdicts on loss and gradients, with a limit on consecutive bad steps.

    Args:
        max_consecutive_bad_steps: stop training after this many skipped steps in a row.
    """

    def __init__(self, max_consecutive_bad_steps: int = 5) -> None:
        self.max_consecutive_bad_steps = max_consecutive_bad_steps
        self.consecutive_bad = 0
        self.skipped_steps: list[int] = []

    def check(self, loss: torch.Tensor | None, parameters: list[nn.Parameter]) -> bool:
        """True when the loss and every gradient are finite. Otherwise the gradients are
        dropped (`.grad = None`), so the optimizer step that follows changes nothing."""
        grads = [p.grad for p in parameters if p.grad is not None]
        finite = loss is None or bool(torch.isfinite(loss.detach()).all())
        if finite and grads:
            norms = torch._foreach_norm(grads)
            finite = bool(torch.isfinite(torch.stack(norms)).all())
        if finite:
            self.consecutive_bad = 0
            return True
        for p in parameters:
            p.grad = None
        self.consecutive_bad += 1
        return False

    @property
    def exhausted(self) -> bool:
        return self.consecutive_bad >= self.max_consecutive_bad_steps
