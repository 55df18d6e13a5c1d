"""OCT volumes from an AI-READI-style manifest, as masked pretraining batches."""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..masks import MultiBlockMaskSampler, MultiBlockSpec
from ..nn.grid import TokenGrid
from .augment import AugmentConfig, augment
from .batch import MaskCollator, MaskedBatch
from .cache import VolumeCache, build_volume_cache, cache_key
from .dicom_oct import read_oct_dicom
from .manifest import ManifestRow, read_manifest
from .preprocess import prepare_volume
from .stream import PretrainStream

log = logging.getLogger("fmtrain.data")


def default_masks() -> list[MultiBlockSpec]:
    """V-JEPA's mix: 8 short-range blocks at 15% and 2 long-range blocks at 70% of the area."""
    return [
        MultiBlockSpec(num_blocks=8, spatial_scale=(0.15, 0.15)),
        MultiBlockSpec(num_blocks=2, spatial_scale=(0.7, 0.7)),
    ]


def split_participants(
    participants: list[str], val_fraction: float, seed: int
) -> tuple[set[str], set[str]]:
    """Deterministic participant-level train/val split (no participant in both)."""
    unique = sorted(set(participants))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = round(len(unique) * val_fraction) if len(unique) > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and len(unique) > 1 else 0), len(unique) - 1)
    val = {unique[i] for i in order[:n_val]}
    return set(unique) - val, val


def _load_and_prepare(path: str, *, spacing: tuple, size: tuple) -> np.ndarray:
    volume = read_oct_dicom(path)
    return prepare_volume(volume.array, volume.spacing, target_spacing=spacing, size=size)


class _ValidationSet(Dataset):
    def __init__(self, cache: VolumeCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.cache.load(index), index


class _ValidationCollate:
    """Masks for validation batches drawn from a fixed seed per batch: the same every time."""

    def __init__(self, collator: MaskCollator, seed: int) -> None:
        self.collator, self.seed = collator, seed

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> MaskedBatch:
        ids = [i for _, i in items]
        rng = np.random.default_rng((self.seed, 7, ids[0]))
        return self.collator([v for v, _ in items], ids, rng)


class OCTDataModule(pl.LightningDataModule):
    """Retinal OCT DICOMs listed in a manifest -> preprocessed cache -> masked batches.

    Args:
        root: folder holding the manifest; file paths in it are relative to this folder.
        manifest: manifest file name (AI-READI columns).
        devices: keep only these device models (case-insensitive `manufacturers_model_name`,
            e.g. ["Spectralis", "Maestro2"]); all when None.
        input_size: volume size after crop/pad, (B-scans, rows, columns).
        spacing: target voxel spacing in mm, (B-scan, row, column).
        patch_size: token patch size (linked from `model.patch_size`).
        masks: mask families; each batch gets one (context, target) pair per family.
        min_context_tokens: every sample keeps at least this many context tokens.
        batch_size: per-device batch size.
        val_batch_size: validation batch size (defaults to `batch_size`).
        num_workers: loader worker processes.
        val_fraction: fraction of participants held out for validation.
        seed: seed of the split, sample order, augmentation and masks.
        cache_dir: where preprocessed volumes are cached (default: `<root>/.fmtrain_cache`).
        augment: random augmentations after the cache.
        max_skip_fraction: fail when more than this fraction of files cannot be read.
    """

    def __init__(
        self,
        *,
        root: str,
        manifest: str = "manifest.tsv",
        devices: list[str] | None = None,
        input_size: tuple[int, int, int] = (64, 384, 384),
        spacing: tuple[float, float, float] = (0.05, 0.02, 0.02),
        patch_size: tuple[int, int, int] = (4, 16, 16),
        masks: list[MultiBlockSpec] | None = None,
        min_context_tokens: int = 10,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        val_fraction: float = 0.1,
        seed: int = 0,
        cache_dir: str | None = None,
        augment: AugmentConfig | None = None,
        max_skip_fraction: float = 0.05,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.manifest = manifest
        self.devices = devices
        self.input_size = tuple(input_size)
        self.spacing = tuple(spacing)
        self.grid = TokenGrid.from_sizes(input_size, patch_size, patch_key="model.patch_size")
        self.mask_specs = masks if masks is not None else default_masks()
        self.sampler = MultiBlockMaskSampler(
            self.grid.shape, self.mask_specs, min_context_tokens=min_context_tokens
        )
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".fmtrain_cache"
        self.augment_config = augment or AugmentConfig()
        self.max_skip_fraction = max_skip_fraction
        self.train_cache: VolumeCache | None = None
        self.val_cache: VolumeCache | None = None

    # --- which files --------------------------------------------------------------------
    def _rows(self) -> list[ManifestRow]:
        path = self.root / self.manifest
        if not path.exists():
            raise FileNotFoundError(
                f"data.root/data.manifest: no manifest at {path}. Generate demo data with "
                "`fmtrain generate-oct --out_dir DIR` or point data.root at your dataset."
            )
        rows = read_manifest(path)
        if self.devices:
            wanted = {d.lower() for d in self.devices}
            rows = [r for r in rows if r.manufacturers_model_name.lower() in wanted]
        if not rows:
            raise ValueError(
                f"no rows left in {path} for data.devices={self.devices}; the manifest lists "
                f"{sorted({r.manufacturers_model_name for r in read_manifest(path)})}"
            )
        return rows

    def split_sources(self) -> dict[str, list[str]]:
        """Absolute file paths per split, participant-disjoint and deterministic."""
        rows = self._rows()
        train, val = split_participants(
            [r.participant_id for r in rows], self.val_fraction, self.seed
        )
        return {
            "train": [str(self.root / r.filepath) for r in rows if r.participant_id in train],
            "val": [str(self.root / r.filepath) for r in rows if r.participant_id in val],
        }

    def _cache_path(self, split: str, sources: list[str]) -> Path:
        params = {"spacing": self.spacing, "size": self.input_size, "version": 1}
        return self.cache_dir / f"{split}-{cache_key(sources, params)}.npy"

    # --- Lightning hooks ------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Build the caches once (rank 0 of each node); later runs reuse them."""
        process = partial(_load_and_prepare, spacing=self.spacing, size=self.input_size)
        for split, sources in self.split_sources().items():
            if sources:
                build_volume_cache(
                    self._cache_path(split, sources),
                    sources,
                    process,
                    size=self.input_size,
                    max_skip_fraction=self.max_skip_fraction,
                    desc=f"preprocessing {split} volumes",
                )

    def setup(self, stage: str | None = None) -> None:
        splits = self.split_sources()
        self.train_cache = VolumeCache(self._cache_path("train", splits["train"]))
        if splits["val"]:
            self.val_cache = VolumeCache(self._cache_path("val", splits["val"]))
        log.info(
            "OCT data: %d train / %d val volumes, grid %s (%d tokens); masks: %s",
            len(self.train_cache),
            len(self.val_cache) if self.val_cache else 0,
            self.grid.shape,
            self.grid.num_tokens,
            self.sampler.describe(),
        )

    def _start_batch(self) -> int:
        """Batches already consumed, from the (possibly restored) optimizer step."""
        trainer = self.trainer
        return trainer.global_step * trainer.accumulate_grad_batches if trainer else 0

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        stream = PretrainStream(
            self.train_cache,
            batch_size=self.batch_size,
            make_batch=MaskCollator(self.sampler),
            transform=partial(augment, cfg=self.augment_config),
            seed=self.seed,
            start_batch=self._start_batch(),
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        return DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_cache is None:
            return []
        return DataLoader(
            _ValidationSet(self.val_cache),
            batch_size=self.val_batch_size,
            shuffle=False,
            num_workers=min(self.num_workers, 1),
            collate_fn=_ValidationCollate(MaskCollator(self.sampler), self.seed),
        )

    def describe(self) -> dict:
        return {"grid": list(self.grid.shape), "masks": [asdict(m) for m in self.mask_specs]}
