"""Does V-JEPA pretraining beat random init on a downstream task? A measurement, not a test.

    python benchmarks/quality_oct.py                       # one GPU, ~30 minutes
    python benchmarks/quality_oct.py --cpu --max_steps 8000 --participants 6000   # CPU, ~2 h

Generates synthetic OCT (pathology labels: normal / drusen / fluid / thinning), pretrains
recipes/oct_vjepa_quality.yaml, then runs `fmtrain probe` (linear, k-NN, attentive; 3
random-init seeds; participant bootstrap) on the test split, and trains the same encoder
architecture on the labels as a supervised upper bound. The target: the pretrained
encoder beats random init on pathology by >= 10 points of balanced accuracy, with the
pretrained 95% interval above every random seed's interval, on >= 1,000 test volumes.
Writes quality.json and prints the table and the verdict.

--cpu shrinks the model to the demo's geometry (16x64x64, patches 4x8x8, ViT-128x4, batch 8,
fp32, no loader workers) so that a 2-core machine gets through it.
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
from fmtrain.data.synthetic.generate import generate_oct_dataset
from fmtrain.data.volumes.prepared import PreparedDataset
from fmtrain.eval.embed import read_labels
from fmtrain.eval.supervised import supervised_upper_bound

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "oct_vjepa_quality.yaml"
CPU_OVERRIDES = [
    "--trainer.accelerator=cpu",
    "--trainer.precision=32-true",
    "--data.init_args.input_size=[16,64,64]",
    "--data.init_args.spacing=[0.375,0.03,0.094]",
    "--model.init_args.patch_size=[4,8,8]",
    "--model.init_args.encoder.size=vit_micro",
    "--model.init_args.predictor.embed_dim=64",
    "--model.init_args.predictor.depth=2",
    "--model.init_args.predictor.num_heads=4",
    "--data.init_args.batch_size=8",
    "--data.init_args.num_workers=0",
    "--data.init_args.prepare_workers=2",
]


def _verdict(result: dict, task: str = "pathology") -> dict:
    pre = result["pretrained"]["tasks"][task]["probes"]
    rnd = [r["tasks"][task]["probes"] for r in result["random"]]
    out = {}
    for probe, scores in pre.items():
        p = scores["metrics"]["balanced_accuracy"]
        r = [s[probe]["metrics"]["balanced_accuracy"] for s in rnd]
        gain = p["value"] - sum(x["value"] for x in r) / len(r)
        separated = p["low"] > max(x["high"] for x in r)
        out[probe] = {
            "pretrained": p,
            "random": r,
            "gain": gain,
            "intervals_separate": separated,
            "target_met": gain >= 0.10 and separated,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    parser.add_argument("--participants", type=int, default=6000)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--max_steps", type=int, default=None)
    parser.add_argument("--cpu", action="store_true", help="the demo-sized model, see above")
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from the newest checkpoint in OUT/ckpt",
    )
    parser.add_argument(
        "--probes", nargs="+", default=["linear", "knn", "attentive"], help="which probes"
    )
    parser.add_argument(
        "--supervised_epochs",
        type=int,
        default=30,
        help="epochs of the supervised upper bound (0: skip it)",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    data = args.out / "data"
    if not (data / "manifest.tsv").exists():
        generate_oct_dataset(data, num_participants=args.participants, scale=args.scale, seed=7)
    overrides = [f"--data.init_args.source={data / 'manifest.tsv'}"]
    overrides += CPU_OVERRIDES if args.cpu else []
    if args.max_steps:
        overrides.append(f"--trainer.max_steps={args.max_steps}")
    fit_args = ["fit", "--config", str(RECIPE), *overrides]
    fit_args += [f"--trainer.default_root_dir={args.out}", f"--checkpoint.dirpath={args.out}/ckpt"]
    fit_args += ["--resume=true"] if args.resume else []
    cli = run_cli(fit_args)
    fit_seconds = time.perf_counter() - start
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    result = run_probe(
        str(RECIPE),
        ckpt,
        out_dir=str(args.out / "probe"),
        n_boot=args.n_boot,
        probes=tuple(args.probes),
        overrides=overrides,
    )
    verdict = _verdict(result)
    supervised = None
    if args.supervised_epochs:
        # the architecture trained on the labels: what the task allows, for scale
        prepared = PreparedDataset(cli.datamodule.prepared)
        labels = {k: row["pathology"] for k, row in read_labels(data / "labels.tsv").items()}
        supervised = supervised_upper_bound(
            cli.model.random_encoder(seed=0),
            prepared.split("train"),
            prepared.split("test"),
            labels,
            epochs=args.supervised_epochs,
            n_boot=args.n_boot,
        )
    summary = {
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "cpu_preset": args.cpu,
        "steps": cli.trainer.global_step,
        "resumed": args.resume,
        "fit_seconds_including_data": round(fit_seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "test_volumes": result["splits"]["test"],
        "pathology_balanced_accuracy": verdict,
        "supervised_upper_bound": supervised,
        "table": result["table"],
    }
    (args.out / "quality.json").write_text(json.dumps(summary, indent=1))
    print(result["table"])
    for probe, v in verdict.items():
        print(
            f"{probe}: pretrained {v['pretrained']['value']:.3f} "
            f"[{v['pretrained']['low']:.3f}, {v['pretrained']['high']:.3f}] vs random "
            f"{[round(r['value'], 3) for r in v['random']]}: gain {v['gain']:+.3f}, "
            f"intervals separate: {v['intervals_separate']}, target met: {v['target_met']}"
        )
    if supervised:
        b = supervised["balanced_accuracy"]
        print(
            f"supervised upper bound (same architecture trained on the labels): "
            f"{b['value']:.3f} [{b['low']:.3f}, {b['high']:.3f}] after "
            f"{supervised['epochs_run']} epochs, {supervised['seconds']} s"
        )
    print(f"{summary['wall_seconds']} s on {summary['device']}; {args.out / 'quality.json'}")


if __name__ == "__main__":
    sys.exit(main())
