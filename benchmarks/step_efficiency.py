"""How close each recipe's training step runs to the hardware, and whether its loader keeps up.

    python benchmarks/step_efficiency.py                            # every recipe, this device
    python benchmarks/step_efficiency.py --recipes recipes/oct_vjepa_demo.yaml --steps 20
    python benchmarks/step_efficiency.py --quick --recipes recipes/oct_vjepa_base.yaml  # CPU
    python benchmarks/step_efficiency.py --peak_tflops 989 --no_recipes   # H100 bf16, sweep only

On the current device (CUDA if present, in the recipe's precision; else the CPU in fp32),
for each recipe, on a few samples its datamodule generates (`write_synthetic`, as
`fmtrain check --synthetic` does) in a temporary folder:

- bare step: forward + backward + AdamW + the method's after-step work (EMA), no Lightning;
  median over --steps steps after --warmup, on the recipe's batches (masks included);
- Lightning: a short `fit` (validation and periodic checkpoints off, the recipe's callbacks,
  clipping and numerics guard on); steady-state step time = median interval between
  `on_train_batch_end` calls after --lightning_warmup steps, data waits included; then
  the bare step again (--steps / 2 after one warm-up): overhead = Lightning step time /
  median of the bare steps before and after the fit, and "drift" = bare after / before says
  how much the machine's load changed meanwhile (1.0: not at all);
- memory: on a GPU the allocator's peak (torch.cuda.max_memory_allocated) over the timed
  bare steps; on a CPU the bytes autograd saves for backward in one step (activations) plus
  fp32 weights, gradients and AdamW moments (not RSS: RSS is process-wide and never falls);
- FLOPs per sample: FlopCounterMode over forward + backward (model FLOPs: no recompute);
- MFU = FLOPs per sample x samples/s / peak; peak from --peak_tflops, else the highest of
  several large-matmul measurements in this run (8192^2 on a GPU, in bf16 for bf16-mixed
  recipes and fp32 for the others; 2048^2 fp32 on a CPU), said which;
- loader: samples/s of the recipe's training loader with 0, 1, 2 workers (--workers), after
  each worker's first batch (start-up, reported apart). The few generated samples are read
  again and again, so this is decode + augment + masks, not storage.

Then a scaling sweep: bare step time vs tokens for a V-JEPA of ViT-S (predictor 384 x 12)
at 512 -> 9,216 tokens on a GPU, or a ViT-tiny (predictor 96 x 4) at 64 -> 1,024 on a CPU.

Every recipe runs under --budget_s: a step predicted (FLOPs / peak, a lower bound) or measured
(after warm-up) to exceed it shrinks the timed steps to fit, or the recipe is skipped with
the reason in the JSON. A recipe that fails records its error and the others go on.

--quick (for recipes too big for a CPU) changes exactly this: per-device batch at most 2;
loader workers in the Lightning fit at most 1; 2 timed steps after 1 warm-up, bare and in
Lightning; 4 loader batches per worker count; --budget_s 240; and when the step's FLOPs
(counted on fake tensors at the recipe's size) exceed what fits the budget at a tenth of the
peak, the input's largest axis is halved, in whole patches (or the network's input multiple),
until the FLOPs should fit (volumes: data.init_args.input_size; video: clip_length and crop;
signals: window), and the data is generated again at that size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
from efficiency_tools import (
    StepClock,
    bare_step_seconds,
    count_flops,
    loader_rate,
    matmul_peak,
    median,
    recipe_optimizer,
    saved_activation_bytes,
    sync,
    to_device,
)

from fmtrain.check.reduced_step import reduced_sizes
from fmtrain.check.synthetic import synthetic_overrides
from fmtrain.datamodules.batch import MaskCollator
from fmtrain.masks import MultiBlock
from fmtrain.methods import VJEPAModule
from fmtrain.methods.configs import PredictorConfig
from fmtrain.nn.encoder import ViTEncoder
from fmtrain.recipe import build_recipe

REPO = Path(__file__).resolve().parents[1]
# real CPU steps ran at about a tenth of the matmul peak (the demo recipes): --quick sizes a
# step's FLOPs for that
QUICK_SLOWDOWN = 10
# recipe keys that set a datamodule's input size, from the model's (axes...) input size
SIZE_KEYS = {
    "VolumeDataModule": lambda size: {"input_size": list(size)},
    "RestorationDataModule": lambda size: {"clip_length": size[0], "crop": list(size[1:])},
    "SignalDataModule": lambda size: {"window": size[-1]},
}
# sweep: (encoder, predictor, grids (T, H, W) at patch 4 x 16 x 16, batch)
SWEEP_GPU = ("vit_small", PredictorConfig(embed_dim=384, depth=12, num_heads=12))
SWEEP_GPU_GRIDS = [(8, 8, 8), (8, 8, 16), (8, 16, 16), (16, 16, 16), (16, 24, 24)]
SWEEP_CPU = ("vit_tiny", PredictorConfig(embed_dim=96, depth=4, num_heads=4))
SWEEP_CPU_GRIDS = [(4, 4, 4), (4, 4, 8), (4, 8, 8), (8, 8, 8), (8, 8, 16)]
SWEEP_PATCH = (4, 16, 16)


class OverBudget(Exception):
    """The recipe would take longer than --budget_s: skipped, with this reason."""


# --- device ---------------------------------------------------------------------------------
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


def measure_peak(peak: dict, device: torch.device, seconds: float = 1.0) -> None:
    """One more matmul measurement into `peak` (unless --peak_tflops gave it); the peak is the
    highest seen: other processes on the machine only ever lower a measurement."""
    if peak["source"] == "--peak_tflops":
        return
    rate = matmul_peak(device, getattr(torch, peak["dtype"]), seconds)
    peak["measured_tflops"].append(round(rate / 1e12, 4))
    peak["tflops"] = max(peak["measured_tflops"])


def new_peak(args: argparse.Namespace, device: torch.device, dtype: str) -> dict[str, Any]:
    """The peak MFU is taken against for steps computing in `dtype`, and where it came from."""
    if args.peak_tflops:
        return {"tflops": args.peak_tflops, "dtype": dtype, "source": "--peak_tflops"}
    n = 8192 if device.type == "cuda" else 2048
    source = (
        f"measured in this run: {n}x{n} {dtype} matmul, the highest of the measurements taken "
        "at the start, before each recipe and before the sweep"
    )
    peak = {"tflops": 0.0, "dtype": dtype, "source": source, "measured_tflops": []}
    measure_peak(peak, device)
    return peak


def peaks_for(args: argparse.Namespace, device: torch.device) -> dict[str, dict]:
    """bf16-mixed recipes on a GPU are measured against a bf16 peak, everything else
    (fp32 recipes on a GPU, every run on a CPU) against an fp32 one."""
    dtypes = ["bfloat16", "float32"] if device.type == "cuda" else ["float32"]
    return {dtype: new_peak(args, device, dtype) for dtype in dtypes}


def peak_of(report: dict, precision: str) -> dict:
    bf16 = "bf16" in precision and "bfloat16" in report["peaks"]
    return report["peaks"]["bfloat16" if bf16 else "float32"]


def set_mfu(report: dict) -> None:
    """MFU of every measured step against the run's final peak for its precision."""
    for r in report["recipes"]:
        peak = peak_of(report, r.get("precision", "32-true"))["tflops"] * 1e12
        for part in ("bare", "lightning"):
            if r.get(part, {}).get("samples_per_s"):
                r[part]["mfu"] = round(r["flops_per_sample"] * r[part]["samples_per_s"] / peak, 4)
        if "bare" in r:
            r["mfu_peak_dtype"] = peak_of(report, r["precision"])["dtype"]
    sweep_peak = peak_of(report, report["sweep_precision"])["tflops"] * 1e12
    for s in report["sweep"]:
        if "samples_per_s" in s:
            s["mfu"] = round(s["flops_per_sample"] * s["samples_per_s"] / sweep_peak, 4)


# --- recipes --------------------------------------------------------------------------------
def trainer_overrides(device: torch.device, folder: Path, max_steps: int) -> list[str]:
    """One device, no loggers/validation/periodic checkpoints: what is timed is the step."""
    return [
        f"--trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "--trainer.devices=1",
        "--trainer.num_nodes=1",
        "--trainer.strategy=auto",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.accumulate_grad_batches=1",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.max_steps={max_steps}",
        f"--trainer.default_root_dir={folder}",
        f"--checkpoint.dirpath={folder / 'checkpoints'}",
        "--checkpoint.every_n_train_steps=0",
        "--checkpoint.save_last=false",
    ] + ([] if device.type == "cuda" else ["--trainer.precision=32-true"])


@dataclass
class Built:
    """A recipe built on generated data, with its first batches and their FLOPs."""

    cli: Any
    batches: list[Any]
    flops: int
    flops_how: str
    fit_workers: int


def fetch_batches(dm: Any, count: int) -> list[Any]:
    """The first `count` training batches, built in this process."""
    dm.num_workers = 0
    iterator = iter(dm.train_dataloader())
    return [next(iterator) for _ in range(count)]


def build_on_data(
    recipe: str, settings: dict, folder: Path, device: torch.device, args: argparse.Namespace
) -> Built:
    overrides = [f"--data.init_args.{k}={json.dumps(v)}" for k, v in settings.items()]
    synthetic = synthetic_overrides(recipe, overrides, folder / "data")
    max_steps = args.lightning_warmup + args.lightning_steps + 1
    cli = build_recipe(
        ["--config", recipe, *overrides, *synthetic, *trainer_overrides(device, folder, max_steps)],
        run=False,
    )
    module, dm = cli.model, cli.datamodule
    fit_workers = dm.num_workers
    dm.prepare_data()
    dm.setup("fit")
    batches = to_device(fetch_batches(dm, min(args.steps, 4)), device)
    module.to(device).train()
    autocast = autocast_for(device, str(cli.trainer.precision))
    flops, how = count_flops(module, batches[0], autocast)
    return Built(cli, batches, flops, how, fit_workers)


def quick_size(built: Built, target_flops: float) -> tuple[dict, str] | None:
    """--quick: the data settings whose input (largest axis halved, in whole patches) cuts the
    step's FLOPs to about `target_flops`, and what changed; None when no cut is needed."""
    module, dm = built.cli.model, built.cli.datamodule
    if built.flops <= target_flops:
        return None
    grid = module.grid
    keys = SIZE_KEYS.get(type(dm).__name__)
    sizes = reduced_sizes(grid.input_size, grid.patch_size, target_flops / built.flops)
    if keys is None or not sizes:
        return {}, f"input kept: no smaller size known for {type(dm).__name__}"
    # the first candidate under the target (they run smallest first), grown back while the
    # recipe's masks do not fit its grid (hierarchical levels need room)
    for size in sizes:
        cells = tuple(s // p for s, p in zip(size, grid.patch_size, strict=True))
        try:
            if getattr(dm, "sampler", None) is not None:
                dm.sampler.validate(cells)
        except ValueError:
            continue
        return keys(size), f"input {list(grid.input_size)} -> {list(size)}"
    return {}, "input kept: the recipe's masks fit no smaller grid"


def prepare(
    recipe: str,
    args: argparse.Namespace,
    device: torch.device,
    peak_rate: float,
    folder: Path,
    result: dict,
) -> Built:
    """The recipe on generated data; under --quick, at most batch 2 and an input small enough."""
    settings: dict[str, Any] = {}
    notes = []
    if args.quick:
        probe = build_recipe(
            ["--config", recipe, *trainer_overrides(device, folder, 10)], run=False
        ).datamodule
        settings["batch_size"] = min(probe.batch_size, 2)
        notes.append(f"batch {probe.batch_size} -> {settings['batch_size']}")
        if probe.num_workers > 1:
            settings["num_workers"] = 1
            notes.append(f"fit workers {probe.num_workers} -> 1")
    built = build_on_data(recipe, settings, folder / "first", device, args)
    if args.quick:
        planned = planned_steps(args, args.steps, args.lightning_steps)
        cut = quick_size(built, peak_rate * args.budget_s / (planned * QUICK_SLOWDOWN))
        if cut is not None:
            notes.append(cut[1])
            if cut[0]:
                built = build_on_data(recipe, settings | cut[0], folder / "quick", device, args)
        result["quick"] = "; ".join(notes)
    return built


def planned_steps(args: argparse.Namespace, steps: int, lightning_steps: int) -> int:
    """Steps a recipe's measurement runs: bare warm-up and timed, the memory pass, the fit
    (warm-up, timed, one more for the last interval), and bare again after it."""
    fit = args.lightning_warmup + lightning_steps + 1
    return args.warmup + steps + 1 + fit + 1 + steps // 2


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


def lightning_fit(cli, args, steps: int, device) -> dict[str, Any]:  # type: ignore[no-untyped-def]
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


# --- scaling sweep --------------------------------------------------------------------------
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


def sweep_point(point, args, device, autocast, rng, peak_rate, deadline) -> dict:  # type: ignore[no-untyped-def]
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


# --- report ---------------------------------------------------------------------------------
def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


RECIPE_COLUMNS = [
    "recipe", "batch", "tokens", "bare step s (median / min)", "bare samples/s", "bare tokens/s",
    "Lightning samples/s", "overhead", "drift", "memory MiB", "GFLOP/sample", "MFU bare",
    "MFU Lightning", "load 1 min",
]  # fmt: skip
SWEEP_COLUMNS = [
    "tokens", "grid", "step s (median)", "step s (min)", "samples/s", "tokens/s",
    "GFLOP/sample", "MFU", "memory MiB",
]  # fmt: skip


def recipe_row(r: dict, workers: list[int]) -> str:
    if "bare" not in r:
        why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r.get('error', '')}"
        return _row([r["recipe"], why[:200]])
    bare, light = r["bare"], r.get("lightning", {})
    loaders = {x["workers"]: x["samples_per_s"] for x in r.get("loader", [])}
    cells = [
        r["recipe"] + (" (quick)" if "quick" in r else ""),
        str(r["batch_size"]),
        str(r["tokens_per_sample"]),
        f"{bare['step_s_median']:.3f} / {bare['step_s_min']:.3f}",
        _fmt(bare["samples_per_s"], ".1f"),
        _fmt(bare["tokens_per_s"], ",.0f"),
        _fmt(light.get("samples_per_s"), ".1f"),
        _fmt(light.get("overhead_vs_bare"), ".2f"),
        _fmt(bare.get("drift_after_vs_before"), ".2f"),
        _fmt(r["memory"]["peak_mib"], ",.0f"),
        _fmt(r["flops_per_sample"] / 1e9, ".2f"),
        _fmt(bare["mfu"], ".1%"),
        _fmt(light.get("mfu"), ".1%"),
        f"{r['load_average_before'][0]} -> {r['load_average_after'][0]}",
    ]
    return _row(cells + [_fmt(loaders.get(w), ".1f") for w in workers])


def sweep_row(s: dict) -> str:
    grid = "x".join(map(str, s["grid"]))
    if "skipped" in s:
        return _row([f"{s['tokens']:,}", grid, f"skipped: {s['skipped']}"])
    return _row([
        f"{s['tokens']:,}", grid, f"{s['step_s_median']:.4f}", f"{s['step_s_min']:.4f}",
        f"{s['samples_per_s']:.1f}", f"{s['tokens_per_s']:,.0f}",
        f"{s['flops_per_sample'] / 1e9:.1f}", f"{s['mfu']:.1%}", f"{s['memory_mib']:,.0f}",
    ])  # fmt: skip


def print_tables(report: dict) -> None:
    peaks = "; ".join(
        f"{p['dtype']} {p['tflops']} TFLOP/s ({p['source']})" for p in report["peaks"].values()
    )
    print(
        f"\n{report['device']}, torch {report['torch']}, Lightning {report['lightning']}, "
        f"commit {report['commit']}\npeak: {peaks}\n"
        f"load average {report['load_average_start']} -> {report['load_average_end']}\n"
    )
    workers = report["settings"]["workers"]
    if report["recipes"]:
        head = RECIPE_COLUMNS + [f"loader w{w} samples/s" for w in workers]
        print(_row(head) + "\n|" + "---|" * len(head))
        for r in report["recipes"]:
            print(recipe_row(r, workers))
        for r in report["recipes"]:
            if "quick" in r:
                print(f"quick, {r['recipe']}: {r['quick']}")
        for kind in {r["memory"]["kind"] for r in report["recipes"] if "memory" in r}:
            print(f"memory: {kind}")
        print(
            "tokens: cells of the recipe's token grid (input / patch; for VRT restoration, "
            "input / the network's input multiple)"
        )
    if report["sweep"]:
        s = report["sweep"][0]
        print(
            f"\nscaling: V-JEPA {s['encoder']}, predictor {s['predictor']}, batch {s['batch']}, "
            f"patch {list(SWEEP_PATCH)}, bare step\n"
        )
        print(_row(SWEEP_COLUMNS) + "\n|" + "---|" * len(SWEEP_COLUMNS))
        for s in report["sweep"]:
            print(sweep_row(s))


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipes", nargs="+", default=None, help="default: recipes/*.yaml")
    parser.add_argument("--no_recipes", action="store_true", help="the sweep only")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (see above)")
    parser.add_argument("--steps", type=int, default=None, help="timed bare steps (10; quick 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed bare steps (3; quick 1)")
    parser.add_argument("--lightning_steps", type=int, default=None, help="timed (10; quick 2)")
    parser.add_argument("--lightning_warmup", type=int, default=None, help="untimed (3; quick 1)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--loader_batches", type=int, default=None, help="per worker count (16)")
    parser.add_argument("--loader_seconds", type=float, default=10.0)
    parser.add_argument("--budget_s", type=float, default=None, help="per recipe (600; quick 240)")
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="peak to take MFU against (e.g. 989 for an H100 SXM in bf16); default: measured "
        "with a large matmul",
    )
    parser.add_argument("--no_sweep", action="store_true")
    parser.add_argument("--sweep_batch", type=int, default=None, help="8 on a GPU, 2 on a CPU")
    parser.add_argument("--sweep_budget_s", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "step_efficiency.json")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"steps": (10, 2), "warmup": (3, 1), "lightning_steps": (10, 2)}
    defaults |= {"lightning_warmup": (3, 1), "loader_batches": (16, 4), "budget_s": (600.0, 240.0)}
    for name, (full, small) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.argv = sys.argv[:1]  # the recipes are built from explicit args, not from ours
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    recipes = (
        [] if args.no_recipes else (args.recipes or sorted(map(str, REPO.glob("recipes/*.yaml"))))
    )
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit(),
        "device": device_name(device),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "load_average_start": load_average(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "peaks": peaks_for(args, device),
        "sweep_precision": sweep_precision(device),
        "recipes": [],
        "sweep": [],
    }
    for recipe in recipes:
        print(f"[step_efficiency] {recipe} ...", file=sys.stderr, flush=True)
        for peak in report["peaks"].values():
            measure_peak(peak, device)
        result: dict[str, Any] = {"recipe": Path(recipe).name}
        report["recipes"].append(result)
        try:
            # the lower of the peaks for the time budget: the recipe's precision is not known yet
            slowest = min(report["peaks"].values(), key=lambda p: p["tflops"])
            measure_recipe(recipe, args, device, slowest, result)
        except OverBudget as err:
            result["skipped"] = str(err)
        except Exception as err:  # one recipe's failure is a finding, not the end of the run
            result["error"] = f"{type(err).__name__}: {err}"[:1000]
            result["traceback"] = traceback.format_exc()[-3000:]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.no_sweep:
        print("[step_efficiency] scaling sweep ...", file=sys.stderr, flush=True)
        sweep_peak = peak_of(report, report["sweep_precision"])
        measure_peak(sweep_peak, device)
        report["sweep"] = sweep(args, device, sweep_peak)
    report["load_average_end"] = load_average()
    set_mfu(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
