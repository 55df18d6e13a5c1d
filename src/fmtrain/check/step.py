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
from lightning.fabric.utilities.apply_func import move_data_to_device

from fmtrain.check.contracts import check_token_contract
from fmtrain.check.problems import CheckReport
from fmtrain.methods.numerics import first_non_finite

__all__ = ["run_step"]


def _stage(name: str, tensor: torch.Tensor) -> dict:
    return {"stage": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype)}


def _record_stages(report: CheckReport, module, batch) -> None:
    method = module.method
    report.stages.append(_stage("input", batch.inputs))
    contexts, targets = getattr(batch, "contexts", []), getattr(batch, "targets", [])
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
            out = module.run_forward(batch)
    finally:
        for h in handles:
            h.remove()
    unique = {}
    for s in seen:  # one row per stage and shape
        unique.setdefault((s["stage"], tuple(s["shape"])), s)
    report.stages += list(unique.values())
    for i, loss in enumerate(out.loss_per_mask):
        report.stages.append(_stage(f"loss [{i}]", loss))
    check_token_contract(report, list(unique.values()), module.stage_widths())


def _saved_bytes(module, batch, autocast) -> tuple[int, torch.Tensor]:
    """Forward + backward, counting the bytes of tensors saved for backward."""
    total, seen = [0], set()

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        loss = module.run_forward(batch).loss
    loss.backward()
    return total[0], loss.detach()


def run_step(report: CheckReport, module, batch, per_device: int, precision: str) -> None:
    """Stages, parameter counts, loss/gradient finiteness, step time and memory."""
    method = module.method
    device = next(method.parameters()).device
    # one sample when a sample alone is big (e.g. 9,216 tokens of ViT-B on a CPU)
    width = getattr(module.evaluation_encoder(), "embed_dim", 768)
    m = 1 if module.grid.num_tokens * width > 2_000_000 else min(2, batch.inputs.shape[0])
    batch = move_data_to_device(batch.head(m), device)
    _record_stages(report, module, batch)
    for name, child in method.named_children():
        report.parameters[name] = sum(p.numel() for p in child.parameters())
    trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in method.parameters() if not p.requires_grad)
    report.parameters["trainable"] = trainable

    cuda = device.type == "cuda"
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if "bf16" in precision else nullcontext()
    )
    method.train()
    recipe_ac = module.activation_checkpointing
    activations, seconds = {}, {}
    for enable in (False, True):
        module.set_activation_checkpointing(enable)
        method.zero_grad(set_to_none=True)
        start = time.perf_counter()
        activations[enable], loss = _saved_bytes(module, batch, autocast)
        seconds[enable] = time.perf_counter() - start
        if not enable:
            _check_finite(report, module, batch, loss)
    module.set_activation_checkpointing(recipe_ac)

    times = []
    if cuda:  # warm-up, then timed passes; on the CPU the measured passes above suffice
        torch.cuda.reset_peak_memory_stats(device)
        for i in range(3):
            method.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            with autocast:
                loss = module.run_forward(batch).loss
            loss.backward()
            torch.cuda.synchronize(device)
            if i:
                times.append(time.perf_counter() - start)
    else:
        times = [seconds[False]]
    method.zero_grad(set_to_none=True)
    step = statistics.median(times)
    # fp32 weights, gradients and AdamW's two moments; frozen parts (an EMA target) weights only
    fixed = 4 * 4 * trainable + 4 * frozen
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


def _check_finite(report: CheckReport, module, batch, loss: torch.Tensor) -> None:
    method = module.method
    grads = [p.grad for p in method.parameters() if p.grad is not None]
    finite = bool(torch.isfinite(loss).all()) and all(bool(torch.isfinite(g).all()) for g in grads)
    if finite:
        return
    method.zero_grad(set_to_none=True)
    origin = first_non_finite(method, lambda: module.run_forward(batch).loss)
    report.add(
        "error",
        "model.init_args",
        f"the first loss or gradient is non-finite (loss {float(loss):.4g}); it began in {origin}",
        "check the inputs' scale and normalization, lower model.init_args.optimizer.lr, "
        "or train in bf16-mixed instead of fp16",
        "numerics",
    )
