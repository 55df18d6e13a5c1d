"""The tiny test recipe's data, prepared once in a folder of its own (shared by tests)."""

from __future__ import annotations

from pathlib import Path


def prepare_tiny_store(oct_dataset: Path) -> str:
    """Prepare `oct_dataset` as tests/recipes/oct_vjepa_tiny.yaml reads it (input_size
    [8, 32, 32]); return the prepared folder (reused when already complete)."""
    from fmtrain.datamodules import VolumeDataModule

    dm = VolumeDataModule(
        source=f"{oct_dataset}/manifest.tsv",
        input_size=(8, 32, 32),
        spacing=(0.75, 0.06, 0.19),
        patch_size=(2, 8, 8),
        masks="none",
        split_fractions={"train": 0.75, "val": 0.25},
        prepare_workers=1,
    )
    dm.prepare_data()
    return dm.prepared
