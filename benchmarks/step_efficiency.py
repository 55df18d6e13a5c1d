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
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import lightning
import torch
from efficiency_budget import OverBudget
from efficiency_machine import REPO, commit, device_name, load_average
from efficiency_peaks import measure_peak, peak_of, peaks_for, set_mfu
from efficiency_report import print_tables
from efficiency_stages import measure_recipe
from efficiency_sweep import sweep, sweep_precision


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
