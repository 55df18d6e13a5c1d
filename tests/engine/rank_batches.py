"""A callback for the multi-process tests: each rank writes the sample ids of every training
batch it ran, with the step, to `<folder>/rank<r>.jsonl` (given by class path in a recipe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback


class RecordBatches(Callback):
    """Append {"step", "ids", "train_samples"} per training batch, one file per global rank."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {
            "step": trainer.global_step - 1,  # the optimizer step this batch was used for
            "ids": batch.sample_ids.tolist(),
            "train_samples": len(trainer.datamodule.train_set),
        }
        with (self.folder / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_records(folder: Path, rank: int) -> list[dict[str, Any]]:
    """The records one rank wrote, in order."""
    path = folder / f"rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]
