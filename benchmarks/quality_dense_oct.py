"""V-JEPA, MAE and MiM+SparK on synthetic OCT under one budget: dense and classification
probes of each, against random init of the same architecture. A measurement, not a test.

    python benchmarks/quality_dense_oct.py                     # CPU, demo geometry
    python benchmarks/quality_dense_oct.py --max_steps 3000 --participants 800

Pretrains recipes/oct_vjepa_demo.yaml, oct_mae_demo.yaml and oct_mim_spark_demo.yaml (and
MiM on the demo's ViT: the two encoder families on one task) on the same generated data
(16x64x64 volumes, a 4x8x8 token grid, batch 8, the same number of steps), then for every
checkpoint:

- dense probe: a per-token linear head on frozen features, upsampled to voxels, trained
  on held-out synthetic eyes with their segmentation truth (retinal bands, choroid,
  sclera; fluid and drusen lesions), Dice per class on other held-out eyes, with
  bootstrap intervals over test volumes, paired against 3 random-init encoders;
- classification probes (`fmtrain probe`: linear and k-NN on pathology and foveal
  thickness) on the pretraining data's test split, against the same random inits.

Writes dense_quality.json and dense_quality.md (tables) under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fmtrain.cli import run_cli
from fmtrain.cli.evaluate import probe as run_probe
from fmtrain.data.synthetic.generate import generate_oct_dataset
from fmtrain.data.synthetic.oct_devices import OCT_DEVICES
from fmtrain.data.synthetic.synthetic_oct import PATHOLOGIES, SEGMENTATION_CLASSES, synthesize_oct
from fmtrain.data.volumes.preprocess import prepare_labels, prepare_volume
from fmtrain.eval.dense_probe import compare_dense, dense_probe, format_dense_table
from fmtrain.export import build_from_config, load_encoder

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# name -> (recipe, overrides); MiM+ViT is the MiM recipe with the MAE demo's ViT and decoder
METHODS: dict[str, tuple[Path, list[str]]] = {
    "V-JEPA": (RECIPES / "oct_vjepa_demo.yaml", []),
    "MAE": (RECIPES / "oct_mae_demo.yaml", []),
    "MiM+SparK": (RECIPES / "oct_mim_spark_demo.yaml", []),
    "MiM+ViT": (
        RECIPES / "oct_mim_spark_demo.yaml",
        [
            "--model.init_args.encoder=fmtrain.nn.ViTEncoder",
            "--model.init_args.encoder.init_args.size=vit_micro",
            "--model.init_args.decoder.depth=2",
            "--model.init_args.decoder.num_heads=4",
        ],
    ),
}
# the demo recipes' geometry (all three share it)
SPACING, SIZE = (0.375, 0.03, 0.094), (16, 64, 64)
LESIONS = ("fluid", "drusen")


def probe_volumes(count: int, first_seed: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Held-out synthetic eyes (devices and pathologies in turn) and their segmentations,
    prepared exactly as `prepare` prepares training volumes."""
    devices = list(OCT_DEVICES)
    volumes, labels = [], []
    for i in range(count):
        device = OCT_DEVICES[devices[i % len(devices)]].scaled(scale)
        pathology = PATHOLOGIES[(i // len(devices)) % len(PATHOLOGIES)]
        eye = synthesize_oct(device, seed=first_seed + i, pathology=pathology)
        volumes.append(prepare_volume(eye.volume, eye.spacing, target_spacing=SPACING, size=SIZE))
        labels.append(
            prepare_labels(eye.segmentation, eye.spacing, target_spacing=SPACING, size=SIZE)
        )
    return np.stack(volumes)[:, None], np.stack(labels).astype(np.int64)


def random_encoder(config: dict, seed: int) -> torch.nn.Module:
    """The checkpoint's architecture, freshly initialised with `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_from_config(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/dense_quality"))
    parser.add_argument("--participants", type=int, default=240)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--max_steps", type=int, default=600)
    parser.add_argument("--probe_train", type=int, default=48, help="dense-probe train eyes")
    parser.add_argument("--probe_test", type=int, default=32, help="dense-probe test eyes")
    parser.add_argument("--random_seeds", type=int, default=3)
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()
    started = time.perf_counter()
    data = args.out / "data"
    if not (data / "manifest.tsv").exists():
        generate_oct_dataset(
            data, num_participants=args.participants, scale=args.scale, seed=11, workers=2
        )
    train_x, train_y = probe_volumes(args.probe_train, 500_000, args.scale)
    test_x, test_y = probe_volumes(args.probe_test, 600_000, args.scale)
    source = [f"--data.init_args.source={data / 'manifest.tsv'}"]
    results: dict = {}
    for name, (recipe, extra) in METHODS.items():
        if name not in args.methods:
            continue
        root = args.out / name.replace("+", "_").lower()
        t0 = time.perf_counter()
        fit = ["fit", "--config", str(recipe), *source, *extra]
        fit += [f"--trainer.max_steps={args.max_steps}"]
        fit += [f"--trainer.default_root_dir={root}", f"--checkpoint.dirpath={root}/ckpt"]
        cli = run_cli(fit)
        fit_seconds = time.perf_counter() - t0
        ckpt = cli.trainer.checkpoint_callback.last_model_path
        t0 = time.perf_counter()
        classification = run_probe(
            str(recipe),
            ckpt,
            out_dir=str(root / "probe"),
            random_seeds=args.random_seeds,
            n_boot=args.n_boot,
            probes=("linear", "knn"),
            overrides=source + extra,
        )
        encoder = load_encoder(ckpt)
        config = encoder.fmtrain_config
        common = dict(lesion_classes=LESIONS, n_boot=args.n_boot)
        pretrained = dense_probe(
            encoder, train_x, train_y, test_x, test_y, SEGMENTATION_CLASSES, **common
        )
        randoms = [
            dense_probe(
                random_encoder(config, 1000 + s),
                train_x,
                train_y,
                test_x,
                test_y,
                SEGMENTATION_CLASSES,
                **common,
            )
            for s in range(args.random_seeds)
        ]
        dense = compare_dense(pretrained, randoms, n_boot=args.n_boot)
        results[name] = {
            "recipe": recipe.name,
            "overrides": extra,
            "steps": cli.trainer.global_step,
            "fit_seconds": round(fit_seconds, 1),
            "probe_seconds": round(time.perf_counter() - t0, 1),
            "dense": dense,
            "dense_table": format_dense_table(dense),
            "classification_table": classification.get("table"),
            "classification": classification.get("comparison"),
        }
        print(f"\n## {name} ({cli.trainer.global_step} steps, {fit_seconds:.0f} s)")
        print(results[name]["dense_table"])
        print(results[name]["classification_table"])
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({os.cpu_count()} cores, {platform.machine()})",
        "torch": torch.__version__,
        "participants": args.participants,
        "probe_volumes": {"train": args.probe_train, "test": args.probe_test},
        "budget": f"{args.max_steps} steps x batch 8 each, same data and token grid",
        "wall_seconds": round(time.perf_counter() - started, 1),
        "methods": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dense_quality.json").write_text(json.dumps(summary, indent=2, default=str))
    lines = [f"# Dense and classification probes ({summary['date']}, {summary['device']})", ""]
    for name, r in results.items():
        lines += [f"## {name}: {r['steps']} steps, fit {r['fit_seconds']} s", ""]
        lines += [r["dense_table"], "", r["classification_table"] or "", ""]
    (args.out / "dense_quality.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'dense_quality.json'} in {summary['wall_seconds']} s")


if __name__ == "__main__":
    main()
