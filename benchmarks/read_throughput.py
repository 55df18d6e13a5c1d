"""Volumes/s for raw OCT DICOM -> tensor and prepared -> batch, against MONAI, as JSON.

    python benchmarks/read_throughput.py [--data demo_output/data] [--num_volumes 48]
    python benchmarks/read_throughput.py --data /tmp/oct_full --scale 1.0 --num_volumes 8 \
        --recipe recipes/oct_vjepa_base.yaml      # the devices' real geometry

Stages, each on the same synthetic OCT DICOMs (generated if `--data` has none) in one run:

- fmtrain raw: `read_volume` (pydicom, spacing from the functional groups) + resample to the
  demo recipe's spacing with area anti-aliasing + crop/pad + normalize, one process;
- MONAI raw: `LoadImage` (its PydicomReader) + `Spacing` to the same spacing, one process;
  also records the spacing MONAI reported for the first file next to the true one;
- fmtrain prepare: the same work as "fmtrain raw", by `prepare` with 2 processes, into zarr;
- fmtrain prepared -> batch: random volumes from the zarr, augmented and masked into
  batches, as the training stream builds them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

from fmtrain.core.grid import TokenGrid
from fmtrain.data.synthetic.generate import generate_oct_dataset
from fmtrain.data.volumes.augment import AugmentConfig, augment
from fmtrain.data.volumes.manifest import read_manifest
from fmtrain.data.volumes.prepare import prepare_dataset
from fmtrain.data.volumes.preprocess import prepare_volume
from fmtrain.data.volumes.read import read_volume
from fmtrain.datamodules.batch import MaskCollator
from fmtrain.datamodules.stream import PretrainStream
from fmtrain.masks import MultiBlock, MultiBlockSpec

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "oct_vjepa_demo.yaml"


def _rate(count: int, seconds: float) -> dict:
    return {
        "volumes": count,
        "seconds": round(seconds, 3),
        "volumes_per_s": round(count / seconds, 2),
    }


def _fmtrain_raw(files: list[str], spacing, size) -> dict:
    start = time.perf_counter()
    for path in files:
        v = read_volume(path)
        prepare_volume(v.array, v.spacing, target_spacing=spacing, size=size)
    return _rate(len(files), time.perf_counter() - start)


def _monai_raw(files: list[str], spacing, truth) -> dict:
    """MONAI's LoadImage reads these OCT files with 1 mm spacing and the frame axis second;
    Spacing would then upsample ~30x (tens of GB). So it is timed with the true spacing put
    into the affine by hand, and what MONAI read is reported beside the truth."""
    from monai.transforms import EnsureChannelFirst, LoadImage, Spacing

    load = LoadImage(reader="PydicomReader", image_only=True)
    channel_first, resample = EnsureChannelFirst(), Spacing(spacing)
    first = load(files[0])
    monai_shape = list(first.shape)
    # which of our (z, y, x) axes each MONAI axis is, matched by length
    order = [list(truth.shape).index(n) for n in monai_shape]
    start = time.perf_counter()
    for path in files:
        true = read_volume(path) if path != files[0] else truth
        image = channel_first(load(path))
        image.affine = torch.diag(
            torch.tensor([*(true.spacing[i] for i in order), 1.0], dtype=torch.float64)
        )
        resample(image)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    for path in files:  # our reader ran inside the loop only to supply the true spacing
        read_volume(path)
    result = _rate(len(files), seconds - (time.perf_counter() - start))
    result["as_read_by_monai"] = {
        "shape": monai_shape,
        "spacing_mm": [round(float(s), 5) for s in first.pixdim[: len(monai_shape)]],
        "true_shape_zyx": list(truth.shape),
        "true_spacing_zyx_mm": [round(s, 5) for s in truth.spacing],
        "voxels_spacing_would_make_from_that": int(
            np.prod(
                [
                    n * float(p) / t
                    for n, p, t in zip(monai_shape, first.pixdim.tolist(), spacing, strict=True)
                ]
            )
        ),
    }
    return result


def _prepared_to_batch(dataset, grid, masks, batch_size: int, batches: int) -> dict:
    train = dataset.split("train")
    stream = PretrainStream(
        train,
        batch_size=batch_size,
        make_batch=MaskCollator(MultiBlock(families=masks), grid.shape),
        transform=partial(augment, cfg=AugmentConfig()),
    )
    start = time.perf_counter()
    for k in range(batches):
        stream.build(k)
    return _rate(batches * batch_size, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("demo_output/data"))
    parser.add_argument("--num_volumes", type=int, default=48)
    parser.add_argument(
        "--scale", type=float, default=0.25, help="size of generated volumes (1.0 = real)"
    )
    parser.add_argument("--recipe", type=Path, default=RECIPE, help="spacing, size, patch, masks")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one process, one core: the per-process rate
    config = yaml.safe_load(args.recipe.read_text())
    recipe, patch = config["data"]["init_args"], config["model"]["init_args"]["patch_size"]
    spacing, size = tuple(recipe["spacing"]), tuple(recipe["input_size"])
    if not (args.data / "manifest.tsv").exists():
        generate_oct_dataset(args.data, num_participants=args.num_volumes, scale=args.scale, seed=0)
    rows = read_manifest(args.data / "manifest.tsv")[: args.num_volumes]
    files = [str((args.data / r.filepath).resolve()) for r in rows]
    truth = read_volume(files[0])
    result: dict = {"data": str(args.data), "recipe": str(args.recipe)}
    result |= {"target_spacing": spacing, "target_size": size}
    result["fmtrain_raw_to_tensor"] = _fmtrain_raw(files, spacing, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result["monai_loadimage_spacing"] = _monai_raw(files, spacing, truth)
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "files.txt"
        listing.write_text("\n".join(files) + "\n")
        start = time.perf_counter()
        dataset = prepare_dataset(
            str(listing),
            f"{tmp}/prepared",
            spacing=spacing,
            size=size,
            split_fractions={"train": 1.0},
            workers=2,
            progress=False,
        )
        result["fmtrain_prepare_2_processes"] = _rate(len(files), time.perf_counter() - start)
        grid = TokenGrid.from_sizes(size, patch)
        masks = recipe["masks"]  # a list of families, or a MultiBlock class_path block
        families = masks["init_args"]["families"] if isinstance(masks, dict) else masks
        masks = [MultiBlockSpec(**m) for m in families]
        result["fmtrain_prepared_to_batch"] = _prepared_to_batch(dataset, grid, masks, 8, 12)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
