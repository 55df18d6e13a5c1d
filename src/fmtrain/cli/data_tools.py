"""`fmtrain generate-oct` and `fmtrain prepare`: data tools that need no recipe."""

from __future__ import annotations

import json

from jsonargparse import CLI

__all__ = ["generate_main", "prepare_main"]


def generate_main(args: list[str]) -> None:
    from fmtrain.data.synthetic.generate import generate_oct_dataset

    CLI(
        generate_oct_dataset,
        args=args,
        description="write synthetic OCT as DICOM + manifest",
        prog="fmtrain generate-oct",
    )


def prepare_main(args: list[str]) -> None:
    from fmtrain.core.storage import join
    from fmtrain.data.volumes.prepare import prepare_dataset

    dataset = CLI(
        prepare_dataset,
        args=args,
        description="raw volumes -> prepared zarr",
        prog="fmtrain prepare",
    )
    counts = dataset.summary["counts"]
    print(
        f"prepared {counts['written']} volumes into {dataset.url} "
        f"({json.dumps(counts['by_split'])}); skipped {counts['skipped']}: "
        f"{json.dumps(counts['skipped_by_reason'])}; details in "
        f"{join(dataset.url, 'summary.json')}"
    )
