"""Signals throughput, raw recordings to optimizer steps: prepare, training loader, train step.

    python benchmarks/signal_throughput.py --participants 300 --duration 60 --workers 2
    python benchmarks/signal_throughput.py --data /tmp/signals --participants 100 --out sig.json

Stages, on synthetic ECG + PPG recordings (WFDB and .vital, written by
`generate_signal_dataset` into `--data`, or a temporary folder, when it holds no manifest):

- prepare: `prepare_signals` with the recipe's window settings and `--workers` processes
  into a fresh folder; windows/s = windows written / wall time (and the rate summary.json
  itself reports);
- training loader: `SignalDataModule.train_dataloader()` with 0 and 2 loader workers, batches
  of `--batch_size` windows masked by the recipe's sampler; the first batch (worker start-up)
  is timed apart from the next `--batches`, which are also split into the rest of the first
  epoch (windows read from the store) and later epochs (a process's cache of recordings);
- train step: the recipe's `MaskedSignalModule` (built by `build_recipe`), forward + backward
  + AdamW step on real batches from the loader, median of `--steps` after `--warmup`. On one
  GPU when present (the recipe's precision), else on the CPU in fp32.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fmtrain.data.signals.prepare import prepare_signals
from fmtrain.data.synthetic.signals import generate_signal_dataset
from fmtrain.engine.bare_step import bare_step, recipe_optimizer

# Lightning and the recipe machinery are imported where used: prepare's spawned workers
# re-import this script, and those imports (~6 s each here) would be timed as preparation.

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "signals_msm_demo.yaml"


def _device_name(cuda: bool) -> str:
    if cuda:
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _build(recipe: Path, manifest: Path, prepared: Path, workers: int, cuda: bool):
    """The recipe's model and datamodule, pointed at `manifest` and preparing into `prepared`."""
    from fmtrain.recipe import build_recipe

    overrides = [
        f"--data.init_args.source={manifest}",
        f"--data.init_args.prepared={prepared}",
        f"--data.init_args.prepare_workers={workers}",
        f"--trainer.accelerator={'gpu' if cuda else 'cpu'}",
        "--trainer.devices=1",
        "--trainer.logger=false",
        f"--trainer.default_root_dir={prepared.parent / 'run'}",  # nothing lands in the repo
    ]
    if not cuda:
        overrides.append("--trainer.precision=32-true")
    argv, sys.argv = sys.argv, sys.argv[:1]  # this script's own flags are not the recipe's
    try:
        cli = build_recipe(["--config", str(recipe), *overrides], run=False)
    finally:
        sys.argv = argv
    return cli.model, cli.datamodule, str(cli.trainer.precision)


def _prepare(dm, workers: int) -> dict:
    """Prepare the datamodule's source with its window settings, timed from outside."""
    start = time.perf_counter()
    dataset = prepare_signals(
        dm.source,
        dm.prepared,
        dm.window_config,
        split_fractions=dm.split_fractions,
        seed=dm.seed,
        workers=workers,
        max_skip_fraction=dm.max_skip_fraction,
        progress=False,
    )
    seconds = time.perf_counter() - start
    counts = dataset.summary["counts"]
    return {
        "workers": workers,
        "recordings": counts["recordings_written"],
        "recordings_skipped": counts["recordings_skipped"],
        "windows": counts["windows_written"],
        "windows_rejected": counts["windows_rejected_by_reason"],
        "seconds": round(seconds, 2),
        "windows_per_s": round(counts["windows_written"] / seconds, 1),
        "windows_per_s_summary_json": dataset.summary["windows_per_second"],
    }


def _loader(dm, num_workers: int, batch_size: int, batches: int) -> dict:
    """Windows/s of the training stream: the first batch (worker start-up) apart, then the
    rest of the first epoch (every recording read from the store) apart from later epochs
    (windows a process has read before come from its memory)."""
    dm.num_workers, dm.batch_size = num_workers, batch_size
    start = time.perf_counter()
    stream = iter(dm.train_dataloader())
    next(stream)
    first = time.perf_counter() - start
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        next(stream)
        times.append(time.perf_counter() - start)
    del stream  # stops the workers before the next measurement
    # batches 1 .. epoch-1 finish the first pass over the split; the DataLoader prefetches,
    # so with workers the boundary is approximate
    epoch = math.ceil(len(dm.train_set) / batch_size)
    parts = {"first_epoch": times[: epoch - 1], "later_epochs": times[epoch - 1 :]}
    return {
        "num_workers": num_workers,
        "batch_size": batch_size,
        "batches_timed": batches,
        "batches_per_epoch": epoch,
        "first_batch_s": round(first, 3),
        "seconds": round(sum(times), 3),
        "windows_per_s": round(batches * batch_size / sum(times), 1),
        **{
            f"{name}_windows_per_s": round(len(t) * batch_size / sum(t), 1)
            for name, t in parts.items()
            if t
        },
    }


def _train_step(module, dm, precision: str, batch_size: int, steps: int, warmup: int) -> dict:
    """Median forward + backward + AdamW step time on real, pre-loaded batches."""
    from lightning.fabric.utilities.apply_func import move_data_to_device

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dm.num_workers, dm.batch_size = 0, batch_size
    stream = iter(dm.train_dataloader())
    # loaded before timing: this stage measures the model, the loader stage the data
    batches = [move_data_to_device(next(stream), device) for _ in range(warmup + steps)]
    module.method.to(device).train()
    optimizer = recipe_optimizer(module)
    bf16 = cuda and "bf16" in precision
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    times = []
    for step, batch in enumerate(batches):
        result = bare_step(
            module, batch, optimizer, autocast=autocast, step=step, total_steps=len(batches)
        )
        if step >= warmup:
            times.append(result.seconds)
    step_time = statistics.median(times)
    return {
        "device": _device_name(cuda),
        "precision": precision if cuda else "32-true",
        "batch_size": batch_size,
        "input": list(batches[0].inputs.shape[1:]),
        "tokens_per_sample": module.grid.num_tokens,
        "params_millions": round(sum(p.numel() for p in module.method.parameters()) / 1e6, 2),
        "steps_timed": len(times),
        "step_time_s_median": round(step_time, 4),
        "samples_per_s": round(batch_size / step_time, 1),
        "last_loss": round(float(result.loss), 4),
    }


def _rate(loader: dict, part: str) -> str:
    value = loader.get(f"{part}_windows_per_s")
    return "n/a" if value is None else f"{value:.0f}/s"


def _table(result: dict) -> str:
    p, t = result["prepare"], result["train_step"]
    rows = [
        ("stage", "setting", "windows/s", "detail"),
        *(
            [("generate", "", "", f"{result['generate_seconds']} s (not a rate: for scale)")]
            if "generate_seconds" in result
            else []
        ),
        (
            "prepare",
            f"{p['workers']} processes",
            f"{p['windows_per_s']:.0f}",
            f"{p['windows']} windows of {p['recordings']} recordings in {p['seconds']} s "
            f"(summary.json: {p['windows_per_s_summary_json']:.0f}/s)",
        ),
        *(
            (
                "train loader",
                f"num_workers={r['num_workers']}",
                f"{r['windows_per_s']:.0f}",
                f"{r['batches_timed']} x {r['batch_size']} in {r['seconds']} s; first epoch "
                f"{_rate(r, 'first_epoch')}, later {_rate(r, 'later_epochs')} "
                f"(first batch {r['first_batch_s']} s)",
            )
            for r in result["loader"]
        ),
        (
            "train step",
            f"batch {t['batch_size']}",
            f"{t['samples_per_s']:.0f}",
            f"median {t['step_time_s_median'] * 1e3:.1f} ms of {t['steps_timed']} steps, "
            f"{t['params_millions']}M params, {t['device']}",
        ),
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def benchmark(args: argparse.Namespace, data: Path, scratch: Path) -> dict:
    manifest = data / "manifest.tsv"
    result: dict = {"data": str(data), "recipe": str(args.recipe), "torch": torch.__version__}
    if not manifest.exists():
        start = time.perf_counter()
        generate_signal_dataset(
            data,
            num_participants=args.participants,
            duration_s=args.duration,
            workers=args.workers,
            progress=False,
        )
        result["generate_seconds"] = round(time.perf_counter() - start, 2)
    cuda = torch.cuda.is_available()
    module, dm, precision = _build(args.recipe, manifest, scratch / "prepared", args.workers, cuda)
    recipe_batch_size = dm.batch_size  # before the loader stage sets its own
    c = dm.window_config
    result["windows"] = {"channels": list(c.channels), "rate": c.rate, "window": c.window,
                         "hop": c.hop, "tokens": dm.tokens}  # fmt: skip
    result["prepare"] = _prepare(dm, args.workers)
    dm.setup("fit")
    result["loader"] = [_loader(dm, n, args.batch_size, args.batches) for n in (0, 2)]
    batch_size = args.train_batch_size or recipe_batch_size
    result["train_step"] = _train_step(module, dm, precision, batch_size, args.steps, args.warmup)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--participants", type=int, default=300)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per recording")
    parser.add_argument("--workers", type=int, default=2, help="generate/prepare processes")
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--batch_size", type=int, default=64, help="loader batch size")
    parser.add_argument("--batches", type=int, default=50, help="loader batches timed")
    parser.add_argument(
        "--train_batch_size", type=int, default=None, help="default: the recipe's batch_size"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fmtrain-signals-") as tmp:
        scratch = Path(tmp)
        data = args.data or scratch / "data"
        result = benchmark(args, data, scratch)
        if args.data is None:
            result["data"] += " (temporary, removed)"
    print(_table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
