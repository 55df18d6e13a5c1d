"""Why V-JEPA does or does not beat random init on OCT: one change per row, equal wall time.

    python benchmarks/vjepa_ablation.py --budget_min 4                   # every row, CPU
    python benchmarks/vjepa_ablation.py --budget_min 4 --rows baseline ema_fast --parallel 1

Every row is recipes/oct_vjepa_demo.yaml (the CPU preset of benchmarks/quality_oct.py) with
one change, fitted for the same wall time (`benchmarks/budget_tools.fit_for_budget`: the
steps that fill the budget are measured first, so schedules end with the budget) on the same
generated data (lesions from smaller than one token to several tokens across). Per row:
steps, fit seconds, FLOPs; the linear probe's pathology balanced accuracy of the evaluation
encoder (the EMA target, as V-JEPA evaluates, unless the row says otherwise) against 3
random-init encoders with a paired participant-bootstrap interval; the same probe on the
online (context) encoder and its effective rank on the test split; the collapse monitor's
effective-rank curve and warnings; the final validation effective rank.

`--parallel 2` runs two rows at a time, one thread each (every row under the same load,
so the wall times stay comparable; say so when quoting them). Writes ablation.json and
ablation.md under --out; rows already in ablation.json are not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "oct_vjepa_demo.yaml"
SPLITS = "--data.init_args.split_fractions={train: 0.7, val: 0.1, test: 0.2}"
M = "--model.init_args."
# row -> (what it changes, overrides of the demo recipe)
ROWS: dict[str, tuple[str, list[str]]] = {
    "baseline": ("the demo recipe before issue 23 (EMA 0.998->1, lr 5e-4, L1, LN targets)", []),
    "ema_fast": ("EMA 0.99 -> 0.999", [f"{M}ema.momentum=0.99", f"{M}ema.final_momentum=0.999"]),
    "ema_slow": ("EMA 0.9995 -> 1.0", [f"{M}ema.momentum=0.9995"]),
    "ema_none": ("EMA 1.0: a frozen random target", [f"{M}ema.momentum=1.0"]),
    "lr_low": ("lr 2e-4 (start 5e-5)", [f"{M}optimizer.lr=2e-4", f"{M}optimizer.start_lr=5e-5"]),
    "lr_high": ("lr 1e-3 (start 2e-4)", [f"{M}optimizer.lr=1e-3", f"{M}optimizer.start_lr=2e-4"]),
    "warmup_long": ("warmup 300 steps", [f"{M}optimizer.warmup_steps=300"]),
    "wd_flat": (
        "weight decay 0.05 throughout",
        [f"{M}optimizer.weight_decay=0.05", f"{M}optimizer.final_weight_decay=0.05"],
    ),
    "target_centred": (
        "targets less the batch mean token per position",
        [f"{M}target_norm=position_centred"],
    ),
    "loss_l2": ("L2 instead of L1", [f"{M}loss=l2"]),
    "predictor_deep": (
        "predictor 128 wide, 4 deep",
        [f"{M}predictor.embed_dim=128", f"{M}predictor.depth=4", f"{M}predictor.num_heads=4"],
    ),
    "predictor_shallow": ("predictor 1 block", [f"{M}predictor.depth=1"]),
    "masks_short": (
        "8 blocks at 0.15 only",
        [
            "--data.init_args.masks.init_args.families=[{num_blocks: 8, spatial_scale: "
            "[0.15, 0.15], temporal_scale: [1.0, 1.0]}]"
        ],
    ),
    "masks_long": (
        "2 blocks at 0.7 only",
        [
            "--data.init_args.masks.init_args.families=[{num_blocks: 2, spatial_scale: "
            "[0.7, 0.7], temporal_scale: [1.0, 1.0]}]"
        ],
    ),
    "patch_2x8x8": ("patches 2x8x8 (512 tokens)", [f"{M}patch_size=[2,8,8]"]),
    "batch_16": ("batch 16", ["--data.init_args.batch_size=16"]),
}


def run_row(name: str, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """Fit one row for the budget and probe it; runs in its own process."""
    import torch

    torch.set_num_threads(threads)
    import numpy as np
    from budget_tools import collapse_warnings, fit_for_budget, rank_curve

    from fmtrain.cli.evaluate import probe as run_probe
    from fmtrain.data.volumes.prepared import PreparedDataset
    from fmtrain.eval.embed import embed_split, read_labels
    from fmtrain.eval.linear_knn import linear_probe
    from fmtrain.eval.metrics import balanced_accuracy
    from fmtrain.eval.rank import effective_rank

    data = args.out / "data"
    root = args.out / name
    source = [f"--data.init_args.source={data / 'manifest.tsv'}", SPLITS]
    extra = [*source, *ROWS[name][1]]
    fit = fit_for_budget(["fit", "--config", str(RECIPE), *extra], args.budget_min * 60, root)
    ckpt = fit.cli.trainer.checkpoint_callback.last_model_path
    probed = run_probe(
        str(RECIPE),
        ckpt,
        out_dir=str(root / "probe"),
        random_seeds=3,
        n_boot=args.n_boot,
        probes=("linear",),
        overrides=extra,
    )
    rows = probed.get("comparison", {}).get("rows", [])
    pathology = next(
        (r for r in rows if r["task"] == "pathology" and r["metric"] == "balanced_accuracy"),
        None,
    )
    # the online encoder, probed the same way: is the lag of the EMA target the problem?
    labels = {k: r["pathology"] for k, r in read_labels(data / "labels.tsv").items()}
    prepared = PreparedDataset(fit.cli.datamodule.prepared)
    train = embed_split(fit.cli.model.method.encoder, prepared.split("train"), keep_tokens=False)
    test = embed_split(fit.cli.model.method.encoder, prepared.split("test"), keep_tokens=False)
    y_train = np.asarray([labels[k] for k in train["keys"]])
    y_test = np.asarray([labels[k] for k in test["keys"]])
    proba = linear_probe(
        train["pooled"],
        y_train,
        test["pooled"],
        "classification",
        train_groups=np.asarray(train["participants"]),
    )
    online = balanced_accuracy(np.searchsorted(np.unique(y_train), y_test), proba)
    metrics = fit.cli.trainer.callback_metrics
    return {
        "row": name,
        "change": ROWS[name][0],
        "overrides": ROWS[name][1],
        **fit.summary(),
        "threads": threads,
        "pathology_linear": pathology,
        "online_encoder_linear_bacc": round(float(online), 4),
        "online_encoder_test_rank": round(effective_rank(torch.as_tensor(test["pooled"])), 2),
        "val_effective_rank": float(metrics.get("val/effective_rank", float("nan"))),
        "rank_curve": rank_curve(root),
        "collapse_warning_steps": collapse_warnings(root),
    }


def _fmt(interval: dict[str, Any] | None, signed: bool = False) -> str:
    if not interval:
        return "n/a"
    spec = "+.3f" if signed else ".3f"
    return f"{interval['value']:{spec}} [{interval['low']:{spec}}, {interval['high']:{spec}}]"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# V-JEPA ablation ({report['date']}, {report['device']}, {report['budget_min']:g} min "
        f"of fit per row, {report['parallel']} row(s) at a time)",
        "",
        "| row | change | steps | fit (s) | FLOPs | pathology bacc, evaluation encoder [95% CI] "
        "| random init (mean of 3) | gain [paired 95% CI] | online encoder bacc (test rank) "
        "| rank (train batch, first -> last) | val rank | collapse warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"].values():
        p = r.get("pathology_linear") or {}
        curve = r.get("rank_curve") or []
        ranks = f"{curve[0][1]:.1f} -> {curve[-1][1]:.1f}" if curve else "n/a"
        random = p.get("random", {}).get("mean")
        lines.append(
            f"| {r['row']} | {r['change']} | {r['steps']} | {r['fit_s']} "
            f"| {r['total_flops']:.3g} | {_fmt(p.get('pretrained'))} "
            f"| {random:.3f} | {_fmt(p.get('gain'), signed=True)} "
            f"| {r['online_encoder_linear_bacc']:.3f} ({r.get('online_encoder_test_rank', 'n/a')}) "
            f"| {ranks} | {r['val_effective_rank']:.1f} "
            f"| {r['collapse_warning_steps']} |"
            if random is not None
            else f"| {r['row']} | {r['change']} | {r['steps']} | {r['fit_s']} | n/a |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/vjepa_ablation"))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--budget_min", type=float, default=4.0)
    parser.add_argument("--participants", type=int, default=1600)
    parser.add_argument("--lesion_scale", type=float, nargs=2, default=(1.0, 3.0))
    parser.add_argument("--parallel", type=int, default=2, help="rows at a time")
    parser.add_argument("--n_boot", type=int, default=1000)
    args = parser.parse_args(argv)
    from fmtrain.data.synthetic.generate import generate_oct_dataset

    data = args.out / "data"
    if not (data / "lesions.tsv").exists():
        generate_oct_dataset(
            data,
            num_participants=args.participants,
            scale=0.25,
            seed=7,
            workers=2,
            lesion_scale=tuple(args.lesion_scale),
        )
    path = args.out / "ablation.json"
    report = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    report |= {
        "date": time.strftime("%Y-%m-%d"),
        "device": f"CPU ({os.cpu_count()} cores)",
        "budget_min": args.budget_min,
        "parallel": args.parallel,
        "recipe": RECIPE.name,
    }
    todo = [r for r in args.rows if r not in report["rows"]]
    if todo:
        # the first row prepares the data alone; then rows share the prepared store
        first = run_row(todo[0], args, threads=1 if args.parallel > 1 else 2)
        report["rows"][first["row"]] = first
        path.write_text(json.dumps(report, indent=1, default=str))
    threads = max(1, (os.cpu_count() or 2) // args.parallel)
    with ProcessPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_row, r, args, threads) for r in todo[1:]]
        for future in futures:
            row = future.result()
            report["rows"][row["row"]] = row
            path.write_text(json.dumps(report, indent=1, default=str))
            print(markdown(report), flush=True)
    (args.out / "ablation.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
