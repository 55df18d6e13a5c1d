"""One recipe's measuring stages for `step_efficiency.py`: the bare step, its memory, the
loader at each worker count, a short Lightning fit, and the bare step again after it."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from efficiency_budget import OverBudget, planned_steps
from efficiency_machine import autocast_for, load_average
from efficiency_recipe import prepare
from efficiency_tools import (
    StepClock,
    bare_step_seconds,
    loader_rate,
    median,
    recipe_optimizer,
    saved_activation_bytes,
    sync,
)


def measure_recipe(
    recipe: str, args: argparse.Namespace, device: torch.device, peak: dict, result: dict
) -> None:
    """Fill `result` (see the module docstring); raises OverBudget with what it has so far."""
    started = time.perf_counter()
    deadline = started + args.budget_s
    peak_rate = peak["tflops"] * 1e12
    result["load_average_before"] = load_average()
    with tempfile.TemporaryDirectory(prefix="fmtrain-efficiency-") as tmp:
        built = prepare(recipe, args, device, peak_rate, Path(tmp), result)
        cli, batches, flops = built.cli, built.batches, built.flops
        module, dm = cli.model, cli.datamodule
        precision = str(cli.trainer.precision)
        b = batches[0].inputs.shape[0]
        autocast = autocast_for(device, precision)
        result |= {
            "precision": precision,
            "batch_size": b,
            "input_shape": list(batches[0].inputs.shape[1:]),
            "tokens_per_sample": module.grid.num_tokens,
            "token_grid": list(module.grid.shape),
            "activation_checkpointing": module.activation_checkpointing,
            "parameters_millions": round(sum(p.numel() for p in module.parameters()) / 1e6, 3),
            "flops_per_sample": flops / b,
            "flops_counted_on": built.flops_how,
            "setup_s": round(time.perf_counter() - started, 1),
        }
        planned = planned_steps(args, args.steps, args.lightning_steps)
        lower_bound = flops / peak_rate
        if time.perf_counter() + lower_bound * planned > deadline:
            raise OverBudget(
                f"{planned} steps of at least {lower_bound:.2f} s each (FLOPs / peak, a lower "
                f"bound) exceed what is left of --budget_s={args.budget_s}"
            )

        optimizer = recipe_optimizer(module)

        def first_step(seconds: float) -> None:
            result["first_step_s"] = round(seconds, 3)
            # the first step also warms up (allocator, kernels): later ones take >= half of it
            if seconds * planned / 2 > deadline - time.perf_counter():
                raise OverBudget(
                    f"the first (warm-up) step took {seconds:.2f} s; {planned} steps would "
                    f"exceed --budget_s={args.budget_s}"
                )

        warm = bare_step_seconds(
            module, batches, optimizer, autocast, device, args.warmup, on_first=first_step
        )
        steps, light = args.steps, args.lightning_steps
        left = deadline - time.perf_counter()
        need = warm[-1] * (planned_steps(args, steps, light) - args.warmup) * 1.3
        if need > left:  # fewer timed steps, never fewer than 2 of each
            scale = left / need
            steps, light = max(2, int(steps * scale)), max(2, int(light * scale))
            result["steps_shrunk_to_fit_budget"] = {"bare": steps, "lightning": light}
            need = warm[-1] * (planned_steps(args, steps, light) - args.warmup) * 1.3
            if need > left:
                raise OverBudget(
                    f"a warm step took {warm[-1]:.2f} s: even 2 timed steps of each kind need "
                    f"about {need:.0f} s, over the {left:.0f} s left of --budget_s={args.budget_s}"
                )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = bare_step_seconds(module, batches, optimizer, autocast, device, steps)
        bare = median(times)
        result["bare"] = {
            "steps_timed": len(times),
            "step_s_median": round(bare, 5),
            "step_s_min": round(min(times), 5),
            "step_s_max": round(max(times), 5),
            "samples_per_s": round(b / bare, 2),
            "tokens_per_s": round(b * module.grid.num_tokens / bare, 1),
        }
        result["memory"] = memory(module, batches[0], autocast, device)
        del optimizer

        result["loader"] = []
        for w in args.workers:
            seconds = min(args.loader_seconds, max(1.0, (deadline - time.perf_counter()) / 8))
            result["loader"].append(loader_rate(dm, w, args.loader_batches, seconds))
        dm.num_workers = built.fit_workers
        result["lightning"] = lightning_fit(cli, args, light, device)
        result["lightning"]["fit_workers"] = built.fit_workers
        # the bare step again after the fit (one warm-up): a load that changed meanwhile shows
        # as a drift, and the overhead is taken against the bare steps on both sides of it
        module.to(device).train()  # Lightning's teardown moved it to the CPU
        optimizer = recipe_optimizer(module)
        after = bare_step_seconds(module, batches, optimizer, autocast, device, 1 + steps // 2)
        after = after[1:] or after
        result["bare"]["after_fit_step_s_median"] = round(median(after), 5)
        result["bare"]["drift_after_vs_before"] = round(median(after) / bare, 3)
        if result["lightning"].get("step_s_median"):
            both = median(times + after)
            result["lightning"]["overhead_vs_bare"] = round(
                result["lightning"]["step_s_median"] / both, 3
            )
        at_fit = next((r for r in result["loader"] if r["workers"] == built.fit_workers), None)
        if at_fit and at_fit["samples_per_s"] and result["lightning"].get("samples_per_s"):
            result["loader_headroom_at_fit_workers"] = round(
                at_fit["samples_per_s"] / result["lightning"]["samples_per_s"], 2
            )
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_after"] = load_average()


def memory(module: Any, batch: Any, autocast: Any, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {
            "peak_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
            "kind": "torch.cuda.max_memory_allocated over the timed bare steps",
        }
    params = list(module.method.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    fixed = 4 * 4 * trainable + 4 * (sum(p.numel() for p in params) - trainable)
    saved = saved_activation_bytes(module, batch, autocast)
    return {
        "peak_mib": round((saved + fixed) / 2**20, 1),
        "activations_mib": round(saved / 2**20, 1),
        "kind": "saved-for-backward activations of one step + fp32 weights, gradients and "
        "AdamW moments (frozen parts: weights only); not RSS",
    }


def lightning_fit(
    cli: Any, args: argparse.Namespace, steps: int, device: torch.device
) -> dict[str, Any]:
    """A short real `fit` of the built recipe; steady-state step time from a callback."""
    trainer, module = cli.trainer, cli.model
    trainer.fit_loop.epoch_loop.max_steps = args.lightning_warmup + steps + 1
    clock = StepClock()
    trainer.callbacks.append(clock)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    trainer.fit(module, datamodule=cli.datamodule)
    sync(device)
    times = clock.intervals(args.lightning_warmup)
    if not times:
        return {"error": f"fit stopped after {len(clock.stamps)} steps; nothing to time"}
    step = median(times)
    b = cli.datamodule.batch_size
    out = {
        "steps_timed": len(times),
        "step_s_median": round(step, 5),
        "samples_per_s": round(b / step, 2),
        "tokens_per_s": round(b * module.grid.num_tokens / step, 1),
        "fit_wall_s": round(time.perf_counter() - start, 2),
    }
    if device.type == "cuda":
        out["peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
