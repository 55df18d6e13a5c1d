"""Does pretraining beat random init on OCT, at equal compute? A measurement, not a test.

    python benchmarks/quality_oct.py --budget_min 30                 # CPU preset, ~3 h on 2 cores
    python benchmarks/quality_oct.py --budget_min 5 --methods V-JEPA # a quick look
    python benchmarks/quality_oct.py --preset gpu --budget_min 30    # the quality/base recipes

Every method gets the same wall time of fit on this machine (`--budget_min`; data loading
and validation included; the steps that fill it are measured by a short calibration fit, so
each method's schedules end where its budget does) and the FLOPs it spent are reported
beside it. Then, on the same generated data:

- **pathology** (normal / drusen / fluid / thinning; drusen and fluid pockets drawn from
  `--lesion_scale`, smaller than one token to several tokens across, sizes per class in the
  output): `fmtrain probe` linear and attentive probes of the frozen evaluation encoder on
  the test split, against 3 random-init encoders of the same architecture, paired
  participant-bootstrap intervals;
- **dense**: held-out synthetic eyes with their segmentation, two linear heads on frozen
  tokens (`upsampled`: class logits per token, interpolated; `per_voxel`: each token to its
  own patch's voxels), Dice per class with intervals, against the same random inits;
- **supervised bound**: the same encoder architecture trained end to end on the pathology
  labels (what the task allows at this size), beside every table.

Writes quality.json, quality.md and rank_curves.png under --out. A method already in
--out/quality.json with the same settings is kept, not rerun: a run cut short goes on
where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from budget_tools import VAL_RANK, collapse_warnings, fit_for_budget, lesion_sizes, rank_curve

from fmtrain.cli.evaluate import probe as run_probe
from fmtrain.data.synthetic.generate import generate_oct_dataset
from fmtrain.data.synthetic.oct_devices import OCT_DEVICES
from fmtrain.data.synthetic.synthetic_oct import PATHOLOGIES, SEGMENTATION_CLASSES, synthesize_oct
from fmtrain.data.volumes.prepared import PreparedDataset
from fmtrain.data.volumes.preprocess import prepare_labels, prepare_volume
from fmtrain.eval.dense_probe import (
    DenseProbeConfig,
    compare_dense,
    dense_probe,
    format_dense_table,
)
from fmtrain.eval.embed import read_labels
from fmtrain.eval.supervised import supervised_upper_bound
from fmtrain.export import build_from_config, load_encoder

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# preset -> method -> recipe; the CPU preset is the demo geometry (16x64x64 at
# 0.375x0.03x0.094 mm, 4x8x8 patches), the GPU one the quality/base recipes as they are
PRESETS: dict[str, dict[str, Path]] = {
    "cpu": {
        "V-JEPA": RECIPES / "oct_vjepa_demo.yaml",
        "MAE": RECIPES / "oct_mae_demo.yaml",
        "MiM+SparK": RECIPES / "oct_mim_spark_demo.yaml",
    },
    "gpu": {
        "V-JEPA": RECIPES / "oct_vjepa_quality.yaml",
        "MAE": RECIPES / "oct_mae_base.yaml",
        "MiM+SparK": RECIPES / "oct_mim_spark_base.yaml",
    },
}
# 20% of participants tested: >= 300 test volumes from 1,500 participants
SPLITS = "--data.init_args.split_fractions={train: 0.7, val: 0.1, test: 0.2}"
LESIONS = ("fluid", "drusen")
HEADS = ("upsampled", "per_voxel")


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def dense_eyes(
    count: int, first_seed: int, scale: float, lesion_scale: tuple[float, float], geometry: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out synthetic eyes (devices and pathologies in turn, lesion scales log-uniform
    in `lesion_scale`) and their segmentations, prepared as `prepare` prepares volumes."""
    devices = list(OCT_DEVICES)
    rng = np.random.default_rng(first_seed)
    volumes, labels = [], []
    for i in range(count):
        device = OCT_DEVICES[devices[i % len(devices)]].scaled(scale)
        pathology = PATHOLOGIES[(i // len(devices)) % len(PATHOLOGIES)]
        size = float(np.exp(rng.uniform(*np.log(lesion_scale))))
        eye = synthesize_oct(device, seed=first_seed + i, pathology=pathology, lesion_scale=size)
        volumes.append(prepare_volume(eye.volume, eye.spacing, **geometry))
        labels.append(prepare_labels(eye.segmentation, eye.spacing, **geometry))
    return np.stack(volumes)[:, None], np.stack(labels).astype(np.int64)


def random_twin(config: dict, seed: int) -> torch.nn.Module:
    """The checkpoint's encoder architecture, freshly initialised with `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_from_config(config).eval()


def dense_tables(ckpt: str, eyes: dict, seeds: int, n_boot: int) -> dict[str, Any]:
    encoder = load_encoder(ckpt)
    randoms = [random_twin(encoder.fmtrain_config, 1000 + s) for s in range(seeds)]
    out = {}
    for head in HEADS:
        common = dict(
            lesion_classes=LESIONS, n_boot=n_boot, config=DenseProbeConfig(head=head, steps=300)
        )
        args = (*eyes["train"], *eyes["test"], SEGMENTATION_CLASSES)
        pretrained = dense_probe(encoder, *args, **common)
        random = [dense_probe(r, *args, **common) for r in randoms]
        comparison = compare_dense(pretrained, random, n_boot=n_boot)
        out[head] = {"comparison": comparison, "table": format_dense_table(comparison)}
    return out


def pathology_verdict(result: dict) -> dict[str, Any]:
    """Per probe: pretrained, random mean and the paired gain with its interval."""
    rows = {}
    for row in result.get("comparison", {}).get("rows", []):
        if row.get("task") == "pathology" and row.get("metric") == "balanced_accuracy":
            rows[row["probe"]] = row
    return rows


def supervised(
    cli: Any, data: Path, epochs: int, n_boot: int, max_seconds: float
) -> dict[str, Any]:
    prepared = PreparedDataset(cli.datamodule.prepared)
    labels = {k: row["pathology"] for k, row in read_labels(data / "labels.tsv").items()}
    return supervised_upper_bound(
        cli.model.random_encoder(seed=0),
        prepared.split("train"),
        prepared.split("test"),
        labels,
        epochs=epochs,
        n_boot=n_boot,
        max_seconds=max_seconds,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/quality_oct"))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--methods", nargs="+", default=list(PRESETS["cpu"]))
    parser.add_argument("--budget_min", type=float, default=30.0, help="fit minutes per method")
    parser.add_argument("--participants", type=int, default=1600)
    parser.add_argument("--scale", type=float, default=0.25, help="device matrix scale")
    parser.add_argument(
        "--lesion_scale",
        type=float,
        nargs=2,
        default=(1.0, 3.0),
        help="drusen and fluid size range relative to clinical early disease (log-uniform)",
    )
    parser.add_argument("--dense_train", type=int, default=64, help="dense-probe train eyes")
    parser.add_argument("--dense_test", type=int, default=300, help="dense-probe test eyes")
    parser.add_argument("--random_seeds", type=int, default=3)
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--probes", nargs="+", default=["linear", "attentive"])
    parser.add_argument("--supervised_epochs", type=int, default=30, help="0: no bound")
    parser.add_argument(
        "--supervised_min",
        type=float,
        default=20.0,
        help="wall-time cap on each supervised bound (the CNN's epochs are slow on a CPU)",
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every method")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    methods = PRESETS[args.preset]
    unknown = [m for m in args.methods if m not in methods]
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {list(methods)}")
    data = args.out / "data"
    if not (data / "lesions.tsv").exists():
        generate_oct_dataset(
            data,
            num_participants=args.participants,
            scale=args.scale,
            seed=7,
            workers=2,
            lesion_scale=tuple(args.lesion_scale),
        )
    source = [f"--data.init_args.source={data / 'manifest.tsv'}", SPLITS, *args.overrides]
    settings = {
        "preset": args.preset,
        "budget_min": args.budget_min,
        "participants": args.participants,
        "lesion_scale": list(args.lesion_scale),
        "dense_eyes": [args.dense_train, args.dense_test],
        "random_seeds": args.random_seeds,
        "probes": list(args.probes),
        "overrides": list(args.overrides),
    }
    summary = earlier_summary(args.out / "quality.json", settings)
    summary |= {"date": time.strftime("%Y-%m-%d"), "device": device_name()}
    summary["torch"] = torch.__version__
    eyes: dict[str, Any] = {}
    for name in args.methods:
        if name in summary["methods"]:
            print(f"{name}: kept from {args.out / 'quality.json'}")
            continue
        recipe = methods[name]
        root = args.out / name.replace("+", "_").lower()
        if root.exists():  # a fit cut short before its scores were written: start it afresh
            shutil.rmtree(root)
        fit = fit_for_budget(["fit", "--config", str(recipe), *source], args.budget_min * 60, root)
        cli = fit.cli
        grid = cli.model.grid
        if not eyes:
            token_mm = tuple(
                p * s for p, s in zip(grid.patch_size, cli.datamodule.spacing, strict=True)
            )
            summary["lesion_sizes"] = lesion_sizes(data, token_mm)
            summary["token_mm"] = [round(t, 4) for t in token_mm]
            geometry = {
                "target_spacing": tuple(cli.datamodule.spacing),
                "size": tuple(grid.input_size),
            }
            lesion = tuple(args.lesion_scale)
            eyes["train"] = dense_eyes(args.dense_train, 500_000, args.scale, lesion, geometry)
            eyes["test"] = dense_eyes(args.dense_test, 600_000, args.scale, lesion, geometry)
        ckpt = cli.trainer.checkpoint_callback.last_model_path
        t0 = time.perf_counter()
        classification = run_probe(
            str(recipe),
            ckpt,
            out_dir=str(root / "probe"),
            random_seeds=args.random_seeds,
            n_boot=args.n_boot,
            probes=tuple(args.probes),
            overrides=source,
        )
        dense = dense_tables(ckpt, eyes, args.random_seeds, args.n_boot)
        architecture = json.dumps(cli.model.encoder_config()["encoder"], sort_keys=True)
        if args.supervised_epochs and architecture not in summary["supervised"]:
            bound = supervised(
                cli, data, args.supervised_epochs, args.n_boot, args.supervised_min * 60
            )
            summary["supervised"][architecture] = bound
        summary["methods"][name] = {
            "recipe": recipe.name,
            "architecture": architecture,
            **fit.summary(),
            "eval_s": round(time.perf_counter() - t0, 1),
            "test_volumes": classification.get("splits", {}).get("test"),
            "classification_table": classification.get("table"),
            "pathology": pathology_verdict(classification),
            "dense": {h: d["comparison"] for h, d in dense.items()},
            "dense_tables": {h: d["table"] for h, d in dense.items()},
            "rank_curve": rank_curve(root),
            "val_rank_curve": rank_curve(root, VAL_RANK),
            "collapse_warning_steps": collapse_warnings(root),
        }
        print(f"\n## {name}: {fit.steps} steps in {fit.fit_s:.0f} s, {fit.total_flops:.3g} FLOPs")
        print(classification.get("table"))
        for head in HEADS:
            print(dense[head]["table"])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "quality.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["wall_s"] = round(summary.get("wall_s", 0) + time.perf_counter() - started, 1)
    (args.out / "quality.json").write_text(json.dumps(summary, indent=1, default=str))
    (args.out / "quality.md").write_text(markdown(summary))
    plot_rank_curves(summary, args.out / "rank_curves.png")
    print(markdown(summary))
    return 0


def earlier_summary(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The summary an earlier run with the same settings left at `path` (its finished
    methods are kept), else a fresh one."""
    if path.exists():
        earlier = json.loads(path.read_text())
        if all(earlier.get(k) == v for k, v in settings.items()):
            return earlier
        print(f"{path}: written with other settings; starting afresh")
    return {**settings, "methods": {}, "supervised": {}}


def plot_rank_curves(summary: dict[str, Any], path: Path) -> None:
    """Effective rank over each method's fit: of the validation features (every method) and
    of a training batch's target features (the collapse monitor; methods with a target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (val_axis, train_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, m in summary["methods"].items():
        label = f"{name} ({m['steps']} steps)"
        if m.get("val_rank_curve"):
            steps, ranks = zip(*m["val_rank_curve"], strict=True)
            val_axis.plot(steps, ranks, marker="o", label=label)
        if m.get("rank_curve"):
            steps, ranks = zip(*m["rank_curve"], strict=True)
            train_axis.plot(steps, ranks, label=label)
    val_axis.set_title("validation features (eval mode)", fontsize=9)
    train_axis.set_title(
        "one training batch (collapse monitor: V-JEPA's target tokens, others' visible ones)",
        fontsize=8,
    )
    for axis in (val_axis, train_axis):
        axis.set_xlabel("training step")
        axis.set_ylabel("effective rank, pooled features")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(
        f"{summary['budget_min']:g} min of fit per method, {summary['device']}", fontsize=9
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _unfinished(bound: dict[str, Any]) -> str:
    """A warning for a bound cut short by --supervised_min: the encoder was still learning,
    so its score says what the task allows no better than a random-init probe does."""
    if bound.get("stopped_by") != "time":
        return ""
    return (
        " **cut short by --supervised_min while still learning: not a bound; raise"
        " --supervised_min**"
    )


def _warnings(count: int | None) -> str:
    # None: a run from before every method was monitored (MAE, MiM+SparK before 2026-12-05)
    return "not monitored" if count is None else str(count)


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# OCT quality at equal compute ({summary['date']}, {summary['device']}, "
        f"torch {summary['torch']})",
        "",
        f"Budget: {summary['budget_min']:g} min of fit per method; {summary['participants']} "
        f"participants, lesion scale {summary['lesion_scale']}, token "
        f"{summary.get('token_mm')} mm.",
        "",
        "| method | steps | fit (s) | FLOPs | collapse warnings |",
        "|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        lines.append(
            f"| {name} | {m['steps']} | {m['fit_s']} | {m['total_flops']:.3g} "
            f"| {_warnings(m['collapse_warning_steps'])} |"
        )
    lines += ["", "Supervised bound (same architecture trained on the labels):", ""]
    for architecture, bound in summary["supervised"].items():
        b = bound["balanced_accuracy"]
        lines.append(
            f"- {architecture}: {b['value']:.3f} [{b['low']:.3f}, {b['high']:.3f}] "
            f"({bound['epochs_run']} epochs, stopped by {bound.get('stopped_by', 'epochs')}, "
            f"{bound['seconds']} s)" + _unfinished(bound)
        )
    lines += ["", "Lesion sizes (largest lesion per volume, p5/p50/p95):", ""]
    for pathology, entry in summary.get("lesion_sizes", {}).items():
        lines.append(f"- {pathology}: {json.dumps(entry)}")
    for name, m in summary["methods"].items():
        lines += ["", f"## {name}", "", m["classification_table"] or "", ""]
        for head in HEADS:
            lines += [m["dense_tables"][head], ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
