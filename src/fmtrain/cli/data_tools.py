"""`fmtrain generate-oct`, `generate-signals`, `prepare` and `prepare-signals`: data tools
that need no recipe."""

from __future__ import annotations

import json
import sys

from jsonargparse import CLI

__all__ = [
    "generate_main",
    "generate_signals_main",
    "prepare_main",
    "prepare_signals_main",
]


def generate_main(args: list[str]) -> None:
    from fmtrain.data.synthetic.generate import generate_oct_dataset

    CLI(
        generate_oct_dataset,
        args=args,
        description="write synthetic OCT as DICOM + manifest",
        prog="fmtrain generate-oct",
    )


def prepare_main(args: list[str]) -> int | None:
    from fmtrain.core.storage import join
    from fmtrain.data.volumes.errors import PrepareFailed
    from fmtrain.data.volumes.prepare import prepare_dataset

    try:
        dataset = CLI(
            prepare_dataset,
            args=args,
            description="raw volumes -> prepared zarr",
            prog="fmtrain prepare",
        )
    except PrepareFailed as err:  # the data, not the code: two lines, no traceback
        print(f"fmtrain prepare: {err.explain('--max_skip_fraction')}", file=sys.stderr)
        return 2
    counts = dataset.summary["counts"]
    per_split = ", ".join(f"{k} {v['written']}" for k, v in counts["by_split"].items())
    padded = counts.get("mostly_padding_or_cropped", 0)
    print(
        f"prepared {counts['written']} volumes into {dataset.url} at spacing "
        f"{list(dataset.spacing)} mm, size {list(dataset.size)} ({per_split}); skipped "
        f"{counts['skipped']}: {json.dumps(counts['skipped_by_reason'])}"
        + (f"; {padded} mostly padding or cropping (named in the log)" if padded else "")
        + f"; details in {join(dataset.url, 'summary.json')}"
    )


def generate_signals_main(args: list[str]) -> None:
    from fmtrain.data.synthetic.signals import generate_signal_dataset

    manifest = CLI(
        generate_signal_dataset,
        args=args,
        description="write synthetic ECG + PPG (WFDB and .vital) + manifest.tsv + labels.tsv",
        prog="fmtrain generate-signals",
    )
    print(f"wrote {manifest} (labels beside it)")


def prepare_signals_main(args: list[str]) -> None:
    from fmtrain.core.storage import join
    from fmtrain.data.signals.prepare import prepare_signals

    dataset = CLI(
        prepare_signals,
        args=args,
        description="recordings -> quality-checked, normalised windows (zarr)",
        prog="fmtrain prepare-signals",
    )
    counts = dataset.summary["counts"]
    print(
        f"prepared {counts['windows_written']} windows from {counts['recordings_written']} "
        f"recordings into {dataset.url} ({json.dumps(counts['windows_by_split'])}); refused "
        f"{counts['recordings_skipped']} recordings: {json.dumps(counts['skipped_by_reason'])}; "
        f"rejected windows: {json.dumps(counts['windows_rejected_by_reason'])}; details in "
        f"{join(dataset.url, 'summary.json')}"
    )
