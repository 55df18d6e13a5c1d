"""Train-step throughput and peak memory of a recipe's model on this machine, as JSON.

    python benchmarks/train_step_throughput.py recipes/oct_vjepa_demo.yaml
    python benchmarks/train_step_throughput.py recipes/oct_vjepa_base.yaml --batch_size 1 --steps 2

Times full V-JEPA optimizer steps (target encode, context encode, predict, loss, backward,
AdamW, EMA) on random inputs of the recipe's shape with masks from the recipe's real
sampler. Runs on one GPU if present (recipe precision), else on the CPU in fp32.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from fmtrain.cli import run_cli
from fmtrain.datamodules.batch import MaskCollator
from fmtrain.engine.bare_step import bare_step, recipe_optimizer


def _build(recipe: str, cuda: bool):
    overrides = [f"--trainer.accelerator={'gpu' if cuda else 'cpu'}", "--trainer.devices=1"]
    overrides += ["--trainer.strategy=auto", "--trainer.logger=false"]
    if not cuda:
        overrides.append("--trainer.precision=32-true")
    cli = run_cli(["--config", recipe, *overrides], run=False)
    return cli.model, cli.datamodule, str(cli.trainer.precision)


def _cpu_name() -> str:
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def benchmark(recipe: str, batch_size: int | None, steps: int, warmup: int) -> dict:
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    module, dm, precision = _build(recipe, cuda)
    method = module.method.to(device)
    b = batch_size or dm.batch_size
    collate = MaskCollator(dm.sampler, dm.grid.shape)
    rng = np.random.default_rng(0)
    optimizer = recipe_optimizer(module)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if cuda and "bf16" in precision
        else nullcontext()
    )
    times = []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        shape = (module.in_chans, *dm.input_size)
        batch = collate([torch.randn(shape) for _ in range(b)], list(range(b)), rng)
        batch = move_data_to_device(batch, device)
        # the recipe's own schedules (EMA momentum for JEPA), at this step of the run
        seconds = bare_step(
            module, batch, optimizer, autocast=autocast, step=step, total_steps=warmup + steps
        ).seconds
        if step >= warmup:
            times.append(seconds)
    step_time = statistics.median(times)
    tokens = module.grid.num_tokens
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "recipe": recipe,
        "device": torch.cuda.get_device_name() if cuda else _cpu_name(),
        "precision": precision if cuda else "32-true",
        "torch": torch.__version__,
        "batch_size": b,
        "input_size": list(dm.input_size),
        "tokens_per_sample": tokens,
        "mask_tokens_per_sample": {
            "context": [c.shape[1] for c in batch.contexts],
            "target": [t.shape[1] for t in batch.targets],
        },
        "params_millions": {
            name: round(count(part) / 1e6, 2) for name, part in method.named_children()
        },
        "activation_checkpointing": module.activation_checkpointing,
        "steps_timed": len(times),
        "step_time_s_median": round(step_time, 4),
        "step_time_s_all": [round(t, 4) for t in times],
        "samples_per_s": round(b / step_time, 3),
        "tokens_per_s": round(b * tokens / step_time, 1),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": "cuda max_memory_allocated" if cuda else "process max RSS",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("recipe")
    parser.add_argument(
        "--batch_size", type=int, default=None, help="default: the recipe's per-device batch"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = benchmark(args.recipe, args.batch_size, args.steps, args.warmup)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
