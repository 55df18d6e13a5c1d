"""Does masked signal modeling beat random init on ECG + PPG? A measurement, not a test.

    python benchmarks/quality_signals.py                         # CPU, about 40 minutes
    python benchmarks/quality_signals.py --participants 300 --max_steps 3000 --probes linear knn

Generates synthetic ECG + PPG recordings (WFDB and .vital, labels: heart rate, rhythm,
noise; two devices), pretrains recipes/signals_msm_demo.yaml (or --recipe) on them, then
runs `fmtrain probe` (linear, k-NN, attentive; 3 random-init seeds; participant bootstrap)
on the test split. The target: the pretrained encoder's heart-rate MAE (bpm) is at least
20% lower than the random-init mean, with the pretrained 95% interval below every random
seed's interval. Writes quality.json and prints the table and the verdict.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from fmtrain.cli import run_cli
from fmtrain.cli.evaluate import probe as run_probe
from fmtrain.data.synthetic.signals import generate_signal_dataset

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "signals_msm_demo.yaml"
# The benchmark's own schedule for the demo model: 6,000 steps at lr 5e-4 after 100 warmup
# steps. The demo recipe runs lr 1e-3 for 3,000 steps to get past the early plateau in its
# time budget; over 6,000 steps that higher rate gave a weaker encoder (linear heart-rate
# MAE 6.03 vs 4.55 bpm, 2026-11-25). Later overrides on the command line win.
SCHEDULE = [
    "--trainer.max_steps=6000",
    "--model.init_args.optimizer.lr=5e-4",
    "--model.init_args.optimizer.warmup_steps=100",
]


def _verdict(result: dict, task: str = "heart_rate", metric: str = "mae") -> dict:
    pre = result["pretrained"]["tasks"][task]["probes"]
    rnd = [r["tasks"][task]["probes"] for r in result["random"]]
    out = {}
    for probe, scores in pre.items():
        p = scores["metrics"][metric]
        r = [s[probe]["metrics"][metric] for s in rnd]
        mean = sum(x["value"] for x in r) / len(r)
        reduction = 1.0 - p["value"] / mean
        separated = p["high"] < min(x["low"] for x in r)  # lower is better
        out[probe] = {
            "pretrained": p,
            "random": r,
            "reduction": reduction,
            "intervals_separate": separated,
            "target_met": reduction >= 0.20 and separated,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/quality_signals"))
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--participants", type=int, default=600)
    parser.add_argument("--duration", type=int, default=60, help="seconds per recording")
    parser.add_argument("--max_steps", type=int, default=None)
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/ckpt")
    parser.add_argument("--probes", nargs="+", default=["linear", "knn", "attentive"])
    args, extra = parser.parse_known_args()
    start = time.perf_counter()
    data = args.out / "data"
    if not (data / "manifest.tsv").exists():
        generate_signal_dataset(
            data, num_participants=args.participants, duration_s=args.duration, seed=7, workers=2
        )
    overrides = [f"--data.init_args.source={data / 'manifest.tsv'}", *SCHEDULE, *extra]
    if args.max_steps:
        overrides.append(f"--trainer.max_steps={args.max_steps}")
    # keep the last state for probing: the demo recipe keeps the best validation loss too
    fit_args = ["fit", "--config", str(args.recipe), *overrides]
    fit_args += [f"--trainer.default_root_dir={args.out}", f"--checkpoint.dirpath={args.out}/ckpt"]
    fit_args += ["--resume=true"] if args.resume else []
    cli = run_cli(fit_args)
    fit_seconds = time.perf_counter() - start
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    result = run_probe(
        str(args.recipe),
        ckpt,
        out_dir=str(args.out / "probe"),
        n_boot=args.n_boot,
        probes=tuple(args.probes),
        overrides=overrides,
    )
    verdict = _verdict(result)
    summary = {
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "recipe": str(args.recipe),
        "overrides": overrides,
        "steps": cli.trainer.global_step,
        "fit_seconds_including_data": round(fit_seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "test_windows": result["splits"]["test"],
        "heart_rate_mae": verdict,
        "table": result["table"],
    }
    (args.out / "quality.json").write_text(json.dumps(summary, indent=1))
    print(result["table"])
    for probe, v in verdict.items():
        print(
            f"{probe}: heart-rate MAE pretrained {v['pretrained']['value']:.2f} "
            f"[{v['pretrained']['low']:.2f}, {v['pretrained']['high']:.2f}] bpm vs random "
            f"{[round(r['value'], 2) for r in v['random']]}: {v['reduction']:+.1%} lower, "
            f"intervals separate: {v['intervals_separate']}, target met: {v['target_met']}"
        )
    print(f"{summary['wall_seconds']} s on {summary['device']}; {args.out / 'quality.json'}")


if __name__ == "__main__":
    sys.exit(main())
