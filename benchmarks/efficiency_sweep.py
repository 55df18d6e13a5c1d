"""The scaling sweep of `step_efficiency.py`: bare V-JEPA step time against token count, a
ViT-S at 512 -> 9,216 tokens on a GPU or a ViT-tiny at 64 -> 1,024 on a CPU."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import torch
from efficiency_budget import OverBudget
from efficiency_machine import autocast_for
from efficiency_stages import memory
from efficiency_tools import bare_step_seconds, count_flops, median, recipe_optimizer, to_device

from fmtrain.datamodules.batch import MaskCollator
from fmtrain.masks import MultiBlock
from fmtrain.methods import VJEPAModule
from fmtrain.methods.configs import PredictorConfig
from fmtrain.nn.encoder import ViTEncoder

# sweep: (encoder, predictor, grids (T, H, W) at patch 4 x 16 x 16, batch)
SWEEP_GPU = ("vit_small", PredictorConfig(embed_dim=384, depth=12, num_heads=12))
SWEEP_GPU_GRIDS = [(8, 8, 8), (8, 8, 16), (8, 16, 16), (16, 16, 16), (16, 24, 24)]
SWEEP_CPU = ("vit_tiny", PredictorConfig(embed_dim=96, depth=4, num_heads=4))
SWEEP_CPU_GRIDS = [(4, 4, 4), (4, 4, 8), (4, 8, 8), (8, 8, 8), (8, 8, 16)]
SWEEP_PATCH = (4, 16, 16)


def sweep_precision(device: torch.device) -> str:
    return "bf16-mixed" if device.type == "cuda" else "32-true"


def sweep(args: argparse.Namespace, device: torch.device, peak: dict) -> list[dict]:
    """Bare V-JEPA step time against token count (see the module docstring)."""
    cuda = device.type == "cuda"
    (encoder, predictor), grids = (
        (SWEEP_GPU, SWEEP_GPU_GRIDS) if cuda else (SWEEP_CPU, SWEEP_CPU_GRIDS)
    )
    batch = args.sweep_batch or (8 if cuda else 2)
    autocast = autocast_for(device, sweep_precision(device))
    peak_rate = peak["tflops"] * 1e12
    deadline = time.perf_counter() + args.sweep_budget_s
    rows, rng = [], np.random.default_rng(0)
    for grid in grids:
        tokens = math.prod(grid)
        row: dict[str, Any] = {"tokens": tokens, "grid": list(grid), "batch": batch}
        row |= {"encoder": encoder, "predictor": vars(predictor)}
        try:
            point = (grid, encoder, predictor, batch)
            row |= sweep_point(point, args, device, autocast, rng, peak_rate, deadline)
        except OverBudget as err:
            row["skipped"] = str(err)
        except torch.OutOfMemoryError:
            row["skipped"] = "out of memory"
            torch.cuda.empty_cache()
        rows.append(row)
        if "skipped" in row:  # larger grids take longer still
            break
    return rows


def sweep_point(
    point: tuple[tuple[int, int, int], str, PredictorConfig, int],
    args: argparse.Namespace,
    device: torch.device,
    autocast: Any,
    rng: np.random.Generator,
    peak_rate: float,
    deadline: float,
) -> dict[str, Any]:
    """One sweep point's bare step: time, throughput, FLOPs and memory; raises OverBudget
    when its steps would pass `deadline`."""
    grid, encoder, predictor, batch = point
    module = VJEPAModule(
        input_size=tuple(g * p for g, p in zip(grid, SWEEP_PATCH, strict=True)),
        patch_size=SWEEP_PATCH,
        num_mask_families=2,
        encoder=ViTEncoder(size=encoder),
        predictor=predictor,
    )
    module.to(device).train()
    sampler = MultiBlock()
    sampler.validate(grid)
    collate = MaskCollator(sampler, grid)
    shape = (1, *module.grid.input_size)
    batches = [
        collate([torch.randn(shape) for _ in range(batch)], list(range(batch)), rng)
        for _ in range(2)
    ]
    batches = to_device(batches, device)
    flops, _ = count_flops(module, batches[0], autocast)
    planned = args.warmup + args.steps
    if time.perf_counter() + flops / peak_rate * planned > deadline:
        raise OverBudget(f"{planned} steps of {flops:.3g} FLOPs exceed --sweep_budget_s")
    optimizer = recipe_optimizer(module)
    warm = bare_step_seconds(module, batches, optimizer, autocast, device, args.warmup)
    if time.perf_counter() + warm[-1] * args.steps > deadline:
        raise OverBudget(
            f"warm-up step {warm[-1]:.2f} s; {args.steps} more exceed --sweep_budget_s"
        )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = bare_step_seconds(module, batches, optimizer, autocast, device, args.steps)
    step = median(times)
    mem = memory(module, batches[0], autocast, device)
    return {
        "step_s_median": round(step, 5),
        "step_s_min": round(min(times), 5),
        "step_s_all": [round(t, 4) for t in times],
        "samples_per_s": round(batch / step, 2),
        "tokens_per_s": round(batch * math.prod(grid) / step, 1),
        "flops_per_sample": flops / batch,
        "memory_mib": mem["peak_mib"],
        "memory_kind": mem["kind"],
    }
