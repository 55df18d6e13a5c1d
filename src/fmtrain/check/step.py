"""Forward and backward on the current device: stage shapes, parameters, time, memory.

Activation memory is measured as the bytes autograd saves for backward (a saved-tensors
hook), which works on CPU and GPU alike; on a GPU the allocator's peak is reported too.
Estimates for the full per-device batch scale activations linearly with the batch and add
parameters, gradients and AdamW's two moments.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from ..methods.numerics import first_non_finite
from .contracts import check_token_contract
from .problems import CheckReport

__all__ = ["run_step"]


def _slice(batch, m: int):
    return (
        batch.inputs[:m],
        [c[:m] for c in batch.contexts],
        [t[:m] for t in batch.targets],
    )


def _stage(name: str, tensor: torch.Tensor) -> dict:
    return {"stage": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype)}


def _record_stages(report: CheckReport, method, inputs, contexts, targets) -> None:
    report.stages.append(
        {"stage": "input", "shape": list(inputs.shape), "dtype": str(inputs.dtype)}
    )
    for i, (c, t) in enumerate(zip(contexts, targets, strict=True)):
        report.stages.append(_stage(f"context indices [{i}]", c))
        report.stages.append(_stage(f"target indices [{i}]", t))
    seen, handles = [], []
    for name, child in method.named_children():

        def hook(module, args, output, name=name):
            if isinstance(output, torch.Tensor):
                seen.append(
                    {"stage": name, "shape": list(output.shape), "dtype": str(output.dtype)}
                )

        handles.append(child.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = method(inputs, contexts, targets)
    finally:
        for h in handles:
            h.remove()
    unique = {}
    for s in seen:  # one row per stage and shape
        unique.setdefault((s["stage"], tuple(s["shape"])), s)
    report.stages += list(unique.values())
    for i, loss in enumerate(out.loss_per_mask):
        report.stages.append(_stage(f"loss [{i}]", loss))
    check_token_contract(report, list(unique.values()))


def _saved_bytes(method, args, autocast) -> tuple[int, torch.Tensor]:
    """Forward + backward, counting the bytes of tensors saved for backward."""
    total, seen = [0], set()

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        loss = method(*args).loss
    loss.backward()
    return total[0], loss.detach()


def _set_checkpointing(method, enable: bool) -> None:
    for part in (method.encoder, method.predictor):
        part.set_grad_checkpointing(enable)


def run_step(report: CheckReport, module, batch, per_device: int, precision: str) -> None:
    """Stages, parameter counts, loss/gradient finiteness, step time and memory."""
    method = module.method
    device = next(method.parameters()).device
    # one sample when a sample alone is big (e.g. 9,216 tokens of ViT-B on a CPU)
    big = module.grid.num_tokens * method.encoder.embed_dim > 2_000_000
    m = 1 if big else min(2, batch.inputs.shape[0])
    args = tuple(
        a.to(device) if isinstance(a, torch.Tensor) else [t.to(device) for t in a]
        for a in _slice(batch, m)
    )
    _record_stages(report, method, *args)
    for name, child in method.named_children():
        report.parameters[name] = sum(p.numel() for p in child.parameters())
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    report.parameters["trainable (encoder + predictor)"] = trainable

    cuda = device.type == "cuda"
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if "bf16" in precision else nullcontext()
    )
    method.train()
    recipe_ac = module.encoder_config.activation_checkpointing
    activations, seconds = {}, {}
    for enable in (False, True):
        _set_checkpointing(method, enable)
        method.zero_grad(set_to_none=True)
        start = time.perf_counter()
        activations[enable], loss = _saved_bytes(method, args, autocast)
        seconds[enable] = time.perf_counter() - start
        if not enable:
            _check_finite(report, method, args, loss)
    _set_checkpointing(method, recipe_ac)

    times = []
    if cuda:  # warm-up, then timed passes; on the CPU the measured passes above suffice
        torch.cuda.reset_peak_memory_stats(device)
        for i in range(3):
            method.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            with autocast:
                loss = method(*args).loss
            loss.backward()
            torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - start)
    else:
        times = [seconds[False]]
    method.zero_grad(set_to_none=True)
    step = statistics.median(times)
    fixed = 4 * 4 * trainable + 4 * report.parameters.get("target_encoder", 0)
    mib = 2**20
    perf = report.performance
    perf["micro-batch"] = m
    perf["forward+backward per micro-batch (s)"] = round(step, 4)
    perf["forward+backward with checkpointing (s)"] = round(seconds[True], 4)
    perf[f"estimated per step at data.batch_size={per_device} (s)"] = round(
        step * per_device / m, 3
    )
    for enable, label in ((False, "without"), (True, "with")):
        per_sample = activations[enable] / m
        micro = round(activations[enable] / mib, 1)
        perf[f"activations {label} checkpointing, micro-batch (MiB)"] = micro
        perf[f"estimated memory {label} checkpointing at batch {per_device} (MiB)"] = round(
            (fixed + per_sample * per_device) / mib, 1
        )
    perf["activation checkpointing in recipe"] = recipe_ac
    if cuda:
        perf["measured peak CUDA memory, micro-batch (MiB)"] = round(
            torch.cuda.max_memory_allocated(device) / mib, 1
        )


def _check_finite(report: CheckReport, method, args, loss: torch.Tensor) -> None:
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    finite = bool(torch.isfinite(loss).all()) and all(bool(torch.isfinite(g).all()) for g in grads)
    if finite:
        return
    method.zero_grad(set_to_none=True)
    origin = first_non_finite(method, lambda: method(*args).loss)
    report.add(
        "error",
        "model.init_args",
        f"the first loss or gradient is non-finite (loss {float(loss):.4g}); it began in {origin}",
        "check the inputs' scale and normalization, lower model.init_args.optimizer.lr, "
        "or train in bf16-mixed instead of fp16",
        "numerics",
    )
