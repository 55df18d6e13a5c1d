"""Forward and backward on the current device: stage shapes, parameters, time, memory.

Activation memory is measured as the bytes autograd saves for backward (a saved-tensors
hook), which works on CPU and GPU alike; on a GPU the allocator's peak is reported too.
Estimates for the full per-device batch scale activations linearly with the batch and add
parameters, gradients and AdamW's two moments. Step time is measured at the recipe's
per-device batch when that is cheap enough here, else at two sizes and fitted (t = a + b x
batch), always after an untimed warm-up pass; with compile, the first (compiling) passes are
reported apart.

Before any real pass, a pass on fake tensors (`fake_pass`) measures the full-size shapes,
memory and FLOPs; a step that would not fit the time or memory here is not run at full size,
and a real step at reduced input size (`reduced_step`) stands in for its numerics.
"""

from __future__ import annotations

import statistics
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch._subclasses.fake_tensor import FakeTensorMode

from fmtrain.check.contracts import check_token_contract
from fmtrain.check.fake_pass import FakeCosts, fake_batch, fake_costs, matmul_rate
from fmtrain.check.problems import CheckReport
from fmtrain.check.reduced_step import run_reduced_step
from fmtrain.engine.bare_step import bare_step, recipe_optimizer
from fmtrain.masks.base import MaskSampler
from fmtrain.methods.base import PretrainMethod
from fmtrain.methods.numerics import first_non_finite

__all__ = ["run_step"]


def _stage(name: str, tensor: torch.Tensor) -> dict:
    return {"stage": name, "shape": list(tensor.shape), "dtype": str(tensor.dtype)}


def _record_stages(
    report: CheckReport, module: PretrainMethod, batch: Any, eager: bool = False
) -> None:
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
        with torch.no_grad():  # eager on fake tensors: compiling them is for real ones
            out = module.forward_batch(batch) if eager else module.run_forward(batch)
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


def run_step(
    report: CheckReport,
    module: PretrainMethod,
    batch: Any,
    per_device: int,
    precision: str,
    sampler: MaskSampler | None = None,
) -> None:
    """Stages, parameter counts, loss/gradient finiteness, step time and memory."""
    full_batch = batch
    method = module.method
    device = next(method.parameters()).device
    recipe_ac = module.activation_checkpointing
    # one sample when a sample alone is big (e.g. 9,216 tokens of ViT-B on a CPU), or when the
    # recipe checkpoints activations: it says they are too large to keep
    width = getattr(module.evaluation_encoder(), "embed_dim", 768)
    big = module.grid.num_tokens * width > 2_000_000 or recipe_ac
    m = 1 if big else min(2, batch.inputs.shape[0])
    batch = move_data_to_device(batch.head(m), device)
    for name, child in method.named_children():
        report.parameters[name] = sum(p.numel() for p in child.parameters())
    report.parameters["trainable"] = sum(p.numel() for p in method.parameters() if p.requires_grad)

    cuda = device.type == "cuda"
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if "bf16" in precision else nullcontext()
    )
    available = available_memory(device)
    method.train()
    # what a real pass would cost, measured on fake tensors first: never more than fits here
    perf = report.performance
    try:
        fake = fake_costs(module, batch, autocast, recipe_ac)
    except Exception as err:  # data-dependent steps (a .item() on values) have no fake pass
        perf["forward+backward FLOPs per sample"] = f"not counted ({type(err).__name__})"
    else:
        rate = matmul_rate(device)
        perf["forward+backward FLOPs per sample"] = f"{fake.flops / m:.3g}"
        if fake.flops / rate > _REAL_PASS_BUDGET_S or (
            available is not None and fake.saved_bytes > _MEMORY_SHARE * available
        ):
            _fake_only(report, module, batch, m, per_device, autocast, fake, rate, available)
            _reduced(report, module, batch, sampler, _REDUCED_STEP_BUDGET_S * rate / fake.flops)
            return
    _record_stages(report, module, batch)
    method.train()
    compiled = module.compile_backend is not None
    activations, seconds = {}, {}
    # the recipe's own mode first; a partial one (some blocks) is measured beside both ends
    modes = [recipe_ac, not recipe_ac] if isinstance(recipe_ac, bool) else [recipe_ac, False, True]
    for enable in modes:
        if not enable and True in activations and available is not None:
            bound = activations[True] * _CHECKPOINT_SAVING_BOUND
            if bound > _MEMORY_SHARE * available:  # the other mode could take the machine down
                report.performance["activations without checkpointing"] = (
                    f"not measured: up to {bound / 2**20:,.0f} MiB judged from the checkpointed "
                    f"pass, over {_MEMORY_SHARE:.0%} of the {available / 2**20:,.0f} MiB free"
                )
                continue
        module.set_activation_checkpointing(enable)
        measured = bare_step(module, batch, autocast=autocast, measure_saved=True)
        activations[_mode(enable)], seconds[_mode(enable)] = measured.saved_bytes, measured.seconds
        if enable == recipe_ac:
            _check_finite(report, module, batch, measured.loss)
    module.set_activation_checkpointing(recipe_ac)
    if compiled:  # the passes above compiled the graphs: their time is not a step's
        report.performance["compile warm-up, first passes (s)"] = round(sum(seconds.values()), 2)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    per_sample_bytes = activations[_mode(recipe_ac)] / m
    timing = _time_steps(
        module,
        full_batch,
        per_device,
        m,
        autocast,
        device,
        per_sample_bytes,
        available,
        seconds[_mode(recipe_ac)] if not compiled else 0.0,
    )
    method.zero_grad(set_to_none=True)
    mib = 2**20
    perf["micro-batch"] = m
    perf["train step per micro-batch (s)"] = round(timing[m], 4)
    if not compiled and True in seconds:
        perf["forward+backward with checkpointing (s)"] = round(seconds[True], 4)
    predicted, method_used = _predict(timing, per_device)
    perf[f"step time at data.batch_size={per_device} (s)"] = round(predicted, 4)
    perf["step time method"] = method_used
    _memory_rows(report, module, activations, m, per_device)
    if cuda:
        perf["measured peak CUDA memory, timed batches (MiB)"] = round(
            torch.cuda.max_memory_allocated(device) / mib, 1
        )


# Seconds of timed passes check may spend on a second batch size: the recipe's batch when its
# passes fit (judged from the micro-batch's), else twice the micro-batch, else none.
_TIMING_BUDGET_S = 10.0
# A real pass predicted (FLOPs / matmul rate, a lower bound) to take longer than this is not
# run: the fake pass's shapes, memory and FLOPs stand for it.
_REAL_PASS_BUDGET_S = 5.0
# The predicted (lower-bound) time of the real step at reduced size; real steps run a few times
# slower than matmul speed, so this keeps it to seconds.
_REDUCED_STEP_BUDGET_S = 1.0
# The share of the free memory a pass may be expected to take; above it, check does not run it.
_MEMORY_SHARE = 0.5
# How many times more activation memory a pass without checkpointing may take than one with
# it (measured 7x for VRTLite-small; transformers of depth d keep roughly d blocks' worth).
_CHECKPOINT_SAVING_BOUND = 16


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a pass: the GPU's free memory, or the host's MemAvailable (Linux);
    None where it cannot be read (then no pass is skipped for memory)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _mode(setting: object) -> bool | str:
    """A checkpointing setting as a table key: False, True, or "partial" (n blocks or a
    fraction of them; 1 would otherwise be the same key as True)."""
    return setting if isinstance(setting, bool) else "partial"


def _memory_rows(
    report: CheckReport, module: PretrainMethod, saved: dict[str, int], m: int, per_device: int
) -> None:
    """Activation bytes of the micro-batch per checkpointing mode measured (`saved`: mode ->
    bytes, modes as `_mode` keys them), and the memory they give at the per-device batch
    with the fixed part: fp32 weights, gradients and AdamW's two moments, weights alone for
    frozen parts (an EMA target)."""
    params = list(module.method.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    fixed, mib, perf = 4 * 4 * trainable + 4 * frozen, 2**20, report.performance
    setting = module.activation_checkpointing
    share = f"{setting} block(s)" if isinstance(setting, int) else f"{setting:g} of the blocks"
    partial = f"with partial ({share} per stack)"
    for enable, label in ((False, "without"), ("partial", partial), (True, "with")):
        if enable not in saved:
            continue
        per_sample = saved[enable] / m
        perf[f"activations {label} checkpointing, micro-batch (MiB)"] = round(
            saved[enable] / mib, 1
        )
        perf[f"estimated memory {label} checkpointing at batch {per_device} (MiB)"] = round(
            (fixed + per_sample * per_device) / mib, 1
        )
    perf["activation checkpointing in recipe"] = module.activation_checkpointing


def _fake_only(
    report: CheckReport,
    module: PretrainMethod,
    batch: Any,
    m: int,
    per_device: int,
    autocast: AbstractContextManager,
    fake: FakeCosts,
    rate: float,
    available: int | None,
) -> None:
    """Stages, memory and a predicted step time from fake tensors alone, and a warning that
    the real loss and gradients were not computed here."""
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        _record_stages(report, module, fake_batch(batch, mode), eager=True)
    other = fake_costs(module, batch, autocast, not module.activation_checkpointing)
    saved = {_mode(module.activation_checkpointing): fake.saved_bytes}
    saved[not module.activation_checkpointing] = other.saved_bytes
    perf, mib = report.performance, 2**20
    perf["micro-batch"] = m
    step = fake.flops / m * per_device / rate
    perf[f"step time at data.batch_size={per_device} (s)"] = round(step, 3)
    perf["step time method"] = (
        f"predicted, not run: {fake.flops / m:.3g} FLOPs per sample at the measured matmul "
        f"rate {rate / 1e9:.0f} GFLOP/s (a lower bound)"
    )
    _memory_rows(report, module, saved, m, per_device)
    free = f"{available / mib:,.0f} MiB free" if available is not None else "memory unknown"
    report.add(
        "warning",
        "model.init_args",
        f"shapes, memory and FLOPs come from a fake-tensor pass: a real forward/backward of "
        f"{m} sample(s) would take at least {fake.flops / rate:.0f} s or "
        f"{fake.saved_bytes / mib:,.0f} MiB here ({free}): the full-size loss and gradients "
        "were not computed (a real step at reduced input size was, see the table)",
        "run check on the training machine to compute them at full size (and time the step)",
        "device",
    )


def _reduced(
    report: CheckReport,
    module: PretrainMethod,
    batch: Any,
    sampler: MaskSampler | None,
    flop_fraction: float,
) -> None:
    """The real step the full size could not afford, at a smaller input."""
    perf = report.performance
    try:
        result = run_reduced_step(module, batch, sampler, min(flop_fraction, 0.5))
    except Exception as err:  # a method check cannot rebuild smaller: say so, do not fail it
        perf["real step at reduced size"] = f"not run: {type(err).__name__}: {err}"[:200]
        return
    if "skipped" in result:
        perf["real step at reduced size"] = f"not run: {result['skipped']}"
        return
    perf["real step at reduced size"] = (
        f"input {result['input_size']}: loss {result['loss']:.4g}, "
        f"{'finite' if result['finite'] else 'NOT finite'}, {result['seconds']} s"
    )
    if not result["finite"]:
        report.add(
            "error",
            "model.init_args",
            f"the first loss or gradients are non-finite in a real step of the recipe's method "
            f"at reduced input {result['input_size']} (loss {result['loss']:.4g})",
            "check the inputs' scale and normalization, lower model.init_args.optimizer.lr, "
            "or train in bf16-mixed instead of fp16",
            "numerics",
        )


def _time_steps(
    module: PretrainMethod,
    batch: Any,
    per_device: int,
    m: int,
    autocast: AbstractContextManager,
    device: torch.device,
    per_sample_bytes: float,
    available: int | None,
    first_pass_s: float,
) -> dict[int, float]:
    """Median forward + backward seconds per batch size, each after an untimed warm-up pass
    (allocator, autotuning and, with compile, a recompile for the shape): micro-batch m
    first, then the recipe's per-device batch when its passes fit the time budget and the
    free memory, else 2m. A micro-batch whose first pass alone took the time budget is not
    timed again: that pass's time stands (it is an upper bound, warm-up included)."""
    available_samples = batch.inputs.shape[0]
    repeats = 3 if device.type == "cuda" else 2
    timing: dict[int, float] = {}
    optimizer = recipe_optimizer(module)

    def measure(size: int) -> None:
        part = move_data_to_device(batch.head(size), device)
        bare_step(module, part, optimizer, autocast=autocast)  # warm-up
        timing[size] = statistics.median(
            bare_step(module, part, optimizer, autocast=autocast).seconds for _ in range(repeats)
        )

    def affordable(size: int) -> bool:
        seconds = (1 + repeats) * timing[m] / m * size
        fits = available is None or per_sample_bytes * size <= _MEMORY_SHARE * available
        return size <= available_samples and seconds <= _TIMING_BUDGET_S and fits

    if first_pass_s * (1 + repeats) > _TIMING_BUDGET_S:
        timing[m] = first_pass_s
        return timing
    measure(m)
    if per_device != m and affordable(per_device):
        measure(per_device)
    elif per_device > m and affordable(2 * m):
        measure(2 * m)
    return timing


def _predict(timing: dict[int, float], per_device: int) -> tuple[float, str]:
    """Step time at the per-device batch, and how it was obtained."""
    if per_device in timing:
        return timing[per_device], (
            f"measured at batch {per_device}: forward, backward, optimizer update (median "
            "after a warm-up)"
        )
    sizes = sorted(timing)
    if len(sizes) == 1:
        (b,) = sizes
        return timing[b] * per_device / b, f"scaled linearly from batch {b} (one size measured)"
    b1, b2 = sizes[0], sizes[-1]
    slope = (timing[b2] - timing[b1]) / (b2 - b1)
    intercept = timing[b1] - slope * b1
    predicted = max(intercept + slope * per_device, timing[b2])
    return predicted, (
        f"fitted t = {intercept:.4f} s + {slope:.4f} s x batch through batches {b1} and {b2}"
    )


def _check_finite(
    report: CheckReport, module: PretrainMethod, batch: Any, loss: torch.Tensor
) -> None:
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
