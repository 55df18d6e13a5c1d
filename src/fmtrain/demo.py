"""The CPU demo: generate OCT DICOMs, pretrain V-JEPA, check the features did not collapse."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from .cli import run_cli
from .data.generate import generate_oct_dataset
from .eval.collapse import rank_against_random_init
from .methods import VJEPAModule
from .nn.vit import VisionTransformer

log = logging.getLogger("fmtrain")


def _loss_curve(csv_path: Path) -> list[tuple[int, float]]:
    with csv_path.open() as f:
        return [
            (int(row["step"]), float(row["train/loss"]))
            for row in csv.DictReader(f)
            if row.get("train/loss")
        ]


def run_demo(
    recipe: str = "recipes/oct_vjepa_demo.yaml",
    out_dir: str = "demo_output",
    num_participants: int = 288,
    scale: float = 0.25,
    max_steps: int | None = None,
) -> dict:
    """Generate synthetic OCT, pretrain the recipe, and report loss and feature rank.

    Args:
        recipe: V-JEPA recipe to train.
        out_dir: where data, logs, checkpoints and results go.
        num_participants: synthetic participants (one OCT volume each).
        scale: resolution factor of the generated volumes (1.0 = the devices' real size).
        max_steps: override the recipe's trainer.max_steps (e.g. for a quick look).
    """
    start = time.perf_counter()
    out, data = Path(out_dir), Path(out_dir) / "data"
    if not (data / "manifest.tsv").exists():
        print(f"[demo] generating {num_participants} synthetic OCT volumes as DICOM in {data}")
        generate_oct_dataset(
            data, num_participants=num_participants, scale=scale, seed=0, workers=2
        )
    run_dir = out / "run"
    args = ["fit", "--config", recipe, f"--data.init_args.source={data / 'manifest.tsv'}"]
    args += [
        f"--trainer.default_root_dir={run_dir}",
        f"--checkpoint.dirpath={run_dir / 'checkpoints'}",
    ]
    if max_steps is not None:
        args.append(f"--trainer.max_steps={max_steps}")
    cli = run_cli(args)
    train_seconds = time.perf_counter() - start

    module: VJEPAModule = cli.model
    dm = cli.datamodule
    held_out = [b.inputs for b in dm.val_dataloader()]
    torch.manual_seed(12345)
    random_encoder = VisionTransformer.from_size(
        module.encoder_config.size, grid=module.grid, in_chans=module.encoder_config.in_chans
    )
    ranks = rank_against_random_init(module.method.target_encoder, random_encoder, held_out)
    csv_logger = next(lg for lg in cli.trainer.loggers if isinstance(lg, CSVLogger))
    tb_logger = next(lg for lg in cli.trainer.loggers if isinstance(lg, TensorBoardLogger))
    curve = _loss_curve(Path(csv_logger.log_dir) / "metrics.csv")
    head, tail = curve[: max(len(curve) // 10, 1)], curve[-max(len(curve) // 10, 1) :]
    results = {
        "wall_seconds": round(time.perf_counter() - start, 1),
        "fit_seconds_including_data": round(train_seconds, 1),
        "steps": cli.trainer.global_step,
        "loss_first": curve[0][1] if curve else None,
        "loss_start_mean": sum(v for _, v in head) / len(head) if curve else None,
        "loss_end_mean": sum(v for _, v in tail) / len(tail) if curve else None,
        **ranks,
        "collapsed": ranks["rank_ratio"] < 0.25,
        "checkpoint": cli.trainer.checkpoint_callback.last_model_path,
        "tensorboard": f"tensorboard --logdir {tb_logger.log_dir}",
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n[demo] done in {:.0f} s".format(results["wall_seconds"]))
    print(
        f"[demo] loss {results['loss_start_mean']:.4f} (first 10% of steps) -> "
        f"{results['loss_end_mean']:.4f} (last 10%)"
    )
    print(
        f"[demo] effective rank of pooled target features on {ranks['num_samples']} held-out "
        f"volumes: pretrained {ranks['effective_rank_pretrained']:.1f} vs random init "
        f"{ranks['effective_rank_random_init']:.1f} (ratio {ranks['rank_ratio']:.2f}; "
        f"below 0.25 would mean collapse)"
    )
    print(f"[demo] results: {out / 'results.json'}")
    print(f"[demo] checkpoint: {results['checkpoint']}")
    print(f"[demo] curves: {results['tensorboard']}")
    return results
