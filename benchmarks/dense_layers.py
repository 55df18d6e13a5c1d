"""Where does a pretrained encoder keep local detail? Dense probes of every encoder block.

    python benchmarks/dense_layers.py runs/quality_oct/v-jepa/ckpt/last.ckpt
    python benchmarks/dense_layers.py CKPT --eyes 32 100 --layers 1 2 3   # quicker

`quality_oct.py` probes the last block only. This script trains the same two linear heads
(`upsampled`, `per_voxel`) on the frozen tokens of each block of the checkpoint's evaluation
encoder and of 3 random-init encoders of its architecture, on held-out synthetic eyes of the
CPU preset's geometry, and prints per block the paired gain in mean foreground Dice, in the
layers' Dice (inner retina, outer retina, RPE, choroid, sclera) and in the lesions' Dice. A method
whose last block loses the layers while an earlier block keeps them has specialised its
output for its own objective; one that loses them everywhere never encoded them. A
diagnostic, not a score: the benchmark's verdict stays on the last block.

Writes dense_layers.json and dense_layers.md beside the checkpoint unless --out says where.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from quality_oct import HEADS, LESIONS, dense_eyes, random_twin

from fmtrain.data.synthetic.synthetic_oct import SEGMENTATION_CLASSES
from fmtrain.eval.dense_probe import DenseProbeConfig, compare_dense, dense_probe
from fmtrain.export import load_encoder

TISSUE_LAYERS = ("inner_retina", "outer_retina", "rpe", "choroid", "sclera")
# summaries printed per block: the probe's own ones and the retinal layers averaged
COLUMNS = ("mean_foreground", "tissue layers", "lesions")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path, help="a fit's checkpoint (or an exported encoder)")
    parser.add_argument("--layers", type=int, nargs="+", help="default: every block")
    parser.add_argument("--eyes", type=int, nargs=2, default=(64, 300), metavar=("TRAIN", "TEST"))
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=(0.375, 0.03, 0.094), help="mm (z, y, x)"
    )
    parser.add_argument("--lesion_scale", type=float, nargs=2, default=(1.0, 3.0))
    parser.add_argument("--scale", type=float, default=0.25, help="device matrix scale")
    parser.add_argument("--random_seeds", type=int, default=3)
    parser.add_argument("--n_boot", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def layer_gains(comparison: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per block: each summary column's pretrained, random mean and paired difference."""
    out = {}
    for layer, rows in comparison["layers"].items():
        by_name = {row["name"]: row for row in rows}
        tissue = [by_name[n] for n in TISSUE_LAYERS if n in by_name]
        cells = {name: by_name[name] for name in ("mean_foreground", "lesions") if name in by_name}
        if tissue:  # the layers' mean of the per-class values (intervals are per class)
            cells["tissue layers"] = {
                key: {"value": float(np.mean([t[key]["value"] for t in tissue]))}
                for key in ("pretrained", "random", "difference")
            } | {"excludes_zero": _all_one_way(tissue)}
        out[layer] = cells
    return out


def _all_one_way(rows: list[dict[str, Any]]) -> bool:
    """Every row's difference interval excludes 0, on the same side."""
    signs = {np.sign(r["difference"]["value"]) for r in rows}
    return all(r["excludes_zero"] for r in rows) and len(signs) == 1


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Dense probes per block: {result['ckpt']}",
        "",
        f"{result['eyes'][0]} training and {result['eyes'][1]} test eyes; gains are the "
        f"pretrained Dice less the mean of {result['random_seeds']} random inits (`*`: the "
        "paired 95% interval excludes 0; for the tissue layers, every layer's does, on one "
        "side).",
        "",
    ]
    for head, blocks in result["heads"].items():
        lines += [
            f"## `{head}` head",
            "",
            "| block | " + " | ".join(f"{c}: pretrained / random, gain" for c in COLUMNS) + " |",
            "|---|" + "---|" * len(COLUMNS),
        ]
        for layer, cells in blocks.items():
            row = [layer]
            for column in COLUMNS:
                cell = cells.get(column)
                if cell is None:
                    row.append("n/a")
                    continue
                mark = "*" if cell["excludes_zero"] else ""
                row.append(
                    f"{cell['pretrained']['value']:.3f} / {cell['random']['value']:.3f}, "
                    f"{cell['difference']['value']:+.3f}{mark}"
                )
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    encoder = load_encoder(str(args.ckpt))
    config = encoder.fmtrain_config
    depth = len(encoder.blocks) if hasattr(encoder, "blocks") else None
    layers = args.layers or (list(range(depth)) if depth else [-1])
    geometry = {"target_spacing": tuple(args.spacing), "size": tuple(config["input_size"])}
    lesion = tuple(args.lesion_scale)
    # the same held-out eyes as quality_oct.py (its seeds), so the last block matches it
    train = dense_eyes(args.eyes[0], 500_000, args.scale, lesion, geometry)
    test = dense_eyes(args.eyes[1], 600_000, args.scale, lesion, geometry)
    randoms = [random_twin(config, 1000 + s) for s in range(args.random_seeds)]
    result: dict[str, Any] = {
        "ckpt": str(args.ckpt),
        "eyes": list(args.eyes),
        "random_seeds": args.random_seeds,
        "layers": layers,
        "heads": {},
    }
    for head in HEADS:
        common = dict(
            layers=layers,
            lesion_classes=LESIONS,
            n_boot=args.n_boot,
            config=DenseProbeConfig(head=head, steps=300),
        )
        data = (*train, *test, SEGMENTATION_CLASSES)
        pretrained = dense_probe(encoder, *data, **common)
        random = [dense_probe(r, *data, **common) for r in randoms]
        result["heads"][head] = layer_gains(compare_dense(pretrained, random, n_boot=args.n_boot))
        print(f"{head}: done after {time.perf_counter() - started:.0f} s", flush=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    out = args.out or args.ckpt.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "dense_layers.json").write_text(json.dumps(result, indent=1))
    (out / "dense_layers.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
