"""A recipe built for `step_efficiency.py`: on data its datamodule generates, on one device
with loggers, validation and periodic checkpoints off, with its first batches and their
FLOPs; under --quick, at a smaller batch and input."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from efficiency_budget import planned_steps
from efficiency_machine import autocast_for
from efficiency_tools import count_flops, to_device

from fmtrain.check.reduced_step import reduced_sizes
from fmtrain.check.synthetic import synthetic_overrides
from fmtrain.recipe import build_recipe

# real CPU steps ran at about a tenth of the matmul peak (the demo recipes): --quick sizes a
# step's FLOPs for that
QUICK_SLOWDOWN = 10
# recipe keys that set a datamodule's input size, from the model's (axes...) input size
SIZE_KEYS = {
    "VolumeDataModule": lambda size: {"input_size": list(size)},
    "RestorationDataModule": lambda size: {"clip_length": size[0], "crop": list(size[1:])},
    "SignalDataModule": lambda size: {"window": size[-1]},
}


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
