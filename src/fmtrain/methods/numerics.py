"""Numerics guard: skip steps with a non-finite loss or gradient, find where it began, stop.

The normal path costs one fused norm over the gradients per optimizer step, plus
(`FinitenessRecorder`) one finiteness reduction per module output, all kept on the device.
With a fused optimizer the verdict never visits the host during the step: it becomes the
optimizer's `found_inf` (the fused kernel then leaves weights, moments and step count
untouched, as it does for a loss scaler) and gates the after-step work (an EMA) on the
device; the host reads it later (`StepVerdict`), once the device has finished that step, to
count, log and stop. Other optimizers read it at once (`NumericsGuard.check`, one sync).

When a step turns out bad, the recorded flags name the first module whose output was
non-finite in that very step, and the per-parameter gradient norms name the gradients.
Only when neither shows it is the failed batch run again under hooks (`first_non_finite`);
a non-deterministic kernel (an attention backend that fails now and then) is exactly what
such a replay cannot reproduce.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("fmtrain")

__all__ = [
    "FinitenessRecorder",
    "NonFiniteError",
    "NumericsGuard",
    "StepVerdict",
    "agree_across_ranks",
    "first_non_finite",
]


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


class FinitenessRecorder:
    """Forward hooks noting whether watched module outputs were finite, while `active`.

    Watched are the parts and their direct children (`encoder`, `encoder.patch_embed`,
    `predictor.proj`, ...) and every element of a ModuleList (`encoder.blocks.3`): a block
    is the unit a fault is narrowed to, at ~20 hooks instead of ~200 (every module cost 40%
    of a CPU demo step; these cost ~1%). Each flag is isfinite(sum(output)), one reduction,
    kept as a 0-dim device tensor: no host sync until `first_non_finite` reads them after
    a bad step. Hooks fire innermost first, in execution order.
    """

    def __init__(self) -> None:
        self.active = False
        self.flags: list[tuple[str, str, torch.Tensor]] = []
        self._handles: list = []

    def attach(self, model: nn.Module) -> None:
        self.detach()
        lists = {name for name, m in model.named_modules() if isinstance(m, nn.ModuleList)}
        for name, module in model.named_modules():
            parent = name.rpartition(".")[0]
            if name.count(".") <= 1 or parent in lists:
                self._handles.append(module.register_forward_hook(self._hook(name or "(root)")))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str) -> Callable:
        def hook(module, inputs, output):
            if not self.active:
                return
            tensors = _tensors(output)
            if tensors:
                # a NaN or Inf anywhere makes the sum non-finite: one pass, no bool tensor
                total = sum(t.detach().sum(dtype=torch.float32) for t in tensors)
                self.flags.append((name, type(module).__name__, torch.isfinite(total)))

        return hook

    def reset(self) -> None:
        self.flags.clear()

    def take(self) -> list[tuple[str, str, torch.Tensor]]:
        """The flags recorded so far, handed over (a step's verdict keeps them until it is
        read); the recorder starts empty."""
        flags, self.flags = self.flags, []
        return flags

    def first_non_finite(self, flags: list | None = None) -> str | None:
        """The first module whose output was non-finite in the recorded forward (or in
        `flags`, taken from an earlier step), if any."""
        for name, kind, finite in self.flags if flags is None else flags:
            if not bool(finite):
                return f"forward: module {name} ({kind}) — its output, in the failing step itself"
        return None


def agree_across_ranks(finite: torch.Tensor) -> torch.Tensor:
    """The flag of every rank combined (all finite or not), on the device, without a host
    sync: with sharded gradients (FSDP) each rank sees only its shard's, and ranks that
    disagreed would skip different steps and drift apart."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return finite
    flag = finite.to(torch.float32)  # NCCL reduces no bools
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return flag > 0


@dataclass
class StepVerdict:
    """One optimizer step's finiteness, decided on the device and read on the host later.

    On a CUDA device the flag is copied into pinned host memory without blocking and an
    event marks when the copy is done: `ready()` polls it, so the host reads the verdict
    once the device has finished that step and never waits for it. Elsewhere the flag is
    ready at once. The step's recorded module flags, batch and gradient norms ride along
    for the diagnosis of a bad step.

    Attributes:
        step: the optimizer step (global step) it belongs to.
        finite: 0-dim bool on the device: loss and every gradient finite (on every rank).
        grad_norms: [P] norms of the gradients present (`with_grad` positions), or None.
        with_grad: positions, in `parameters`, of the parameters that had a gradient.
        parameters: the optimizer's parameters, in its order.
        flags: the `FinitenessRecorder` flags of the step's forward.
        batch: the step's batch (for a replay, only when the step was bad).
    """

    step: int
    finite: torch.Tensor
    grad_norms: torch.Tensor | None = None
    with_grad: list[int] = field(default_factory=list)
    parameters: list[nn.Parameter] = field(default_factory=list)
    flags: list = field(default_factory=list)
    batch: Any = None

    def __post_init__(self) -> None:
        self._host: torch.Tensor | None = None
        self._event = None
        if self.finite.device.type == "cuda":
            self._host = torch.empty((), dtype=torch.bool, pin_memory=True)
            self._host.copy_(self.finite, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()

    def ready(self) -> bool:
        """Whether the device has produced the verdict (never blocks)."""
        return self._event is None or self._event.query()

    def ok(self) -> bool:
        """The verdict on the host; waits for the device only when not `ready()`."""
        if self._event is None:
            return bool(self.finite)
        self._event.synchronize()
        return bool(self._host)

    def bad_gradients(self) -> list[int]:
        """Positions, in `parameters`, of the parameters whose gradient was non-finite."""
        if self.grad_norms is None:
            return []
        bad = (~torch.isfinite(self.grad_norms)).nonzero().flatten().tolist()
        return [self.with_grad[j] for j in bad]


# Verdicts the host may leave unread before it waits for the oldest: bounds how far the host
# runs ahead of the device through the guard, and how many batches the verdicts keep alive
# for a replay (usually one or two: a step's verdict is ready by the end of the next step).
_MAX_UNREAD_VERDICTS = 4


class NumericsGuard:
    """Per-step verdicts on loss and gradients, with a limit on consecutive bad steps.

    Args:
        max_consecutive_bad_steps: stop training after this many skipped steps in a row.
    """

    def __init__(self, max_consecutive_bad_steps: int = 5) -> None:
        self.max_consecutive_bad_steps = max_consecutive_bad_steps
        self.consecutive_bad = 0
        self.skipped_steps: list[int] = []
        self.bad_gradients: list[int] = []  # positions in the last bad step's parameter list
        self._unread: deque[StepVerdict] = deque()

    def verdict(
        self, loss: torch.Tensor | None, parameters: list[nn.Parameter]
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
        """(finite, gradient norms, positions with a gradient), all decided on the device:
        `finite` is a 0-dim bool, True when the loss and every gradient are finite on every
        rank. No host sync."""
        with_grad = [i for i, p in enumerate(parameters) if p.grad is not None]
        device = parameters[with_grad[0]].device if with_grad else None
        if loss is not None:
            finite = torch.isfinite(loss.detach()).all()
            device = finite.device
        else:
            finite = torch.ones((), dtype=torch.bool, device=device)
        norms = None
        if with_grad:
            norms = torch.stack(torch._foreach_norm([parameters[i].grad for i in with_grad]))
            finite = finite & torch.isfinite(norms).all().to(finite.device)
        return agree_across_ranks(finite), norms, with_grad

    def check(
        self, loss: torch.Tensor | None, parameters: list[nn.Parameter], step: int = -1
    ) -> bool:
        """True when the loss and every gradient are finite (read on the host: one sync).
        Otherwise the gradients are dropped (`.grad = None`), so the optimizer step that
        follows changes nothing. For optimizers that cannot skip a step on the device."""
        finite, norms, with_grad = self.verdict(loss, parameters)
        verdict = StepVerdict(step=step, finite=finite, grad_norms=norms, with_grad=with_grad)
        if self.conclude(verdict.ok(), verdict):
            return True
        for p in parameters:
            p.grad = None
        return False

    def conclude(self, ok: bool, verdict: StepVerdict) -> bool:
        """Count a step's verdict read on the host (skipped steps, consecutive bad steps,
        which gradients were bad); returns `ok`."""
        if ok:
            self.consecutive_bad = 0
            self.bad_gradients = []
            return True
        self.skipped_steps.append(verdict.step)
        self.bad_gradients = verdict.bad_gradients()
        self.consecutive_bad += 1
        return False

    def submit(self, verdict: StepVerdict) -> None:
        """Queue a verdict decided on the device; `settled` reads it when it is ready."""
        self._unread.append(verdict)

    def settled(self, wait: bool = False) -> Iterator[StepVerdict]:
        """Conclude the queued verdicts the device has produced, in step order, and yield
        the bad ones, one at a time (so that a caller stopping at `exhausted` sees the
        counts of that very step). Never waits, unless `wait` or more than
        `_MAX_UNREAD_VERDICTS` are queued (then for the oldest only)."""
        while self._unread and (
            wait or self._unread[0].ready() or len(self._unread) > _MAX_UNREAD_VERDICTS
        ):
            verdict = self._unread.popleft()
            if not self.conclude(verdict.ok(), verdict):
                yield verdict

    @property
    def exhausted(self) -> bool:
        return self.consecutive_bad >= self.max_consecutive_bad_steps
