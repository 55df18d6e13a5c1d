"""Volumes (raw or prepared, local or in a bucket) as masked pretraining batches."""

from __future__ import annotations

import logging
from functools import partial
from typing import Literal

from fmtrain.core.grid import TokenGrid
from fmtrain.core.storage import is_remote
from fmtrain.data.splits import DEFAULT_FRACTIONS
from fmtrain.data.volumes.augment import AugmentConfig, augment
from fmtrain.data.volumes.errors import PrepareFailed
from fmtrain.data.volumes.prepare import prepare_dataset, prepare_params_match
from fmtrain.data.volumes.prepared import PreparedDataset
from fmtrain.datamodules.base import PreparedDataModule
from fmtrain.datamodules.settings import KEY, require_positive, require_preparation
from fmtrain.datamodules.synthetic import synthetic_volumes
from fmtrain.masks import MaskSampler, MultiBlockSpec

log = logging.getLogger("fmtrain.data")


class VolumeDataModule(PreparedDataModule):
    """Raw volumes (manifest, file list or folder) -> prepared zarr -> masked batches.

    Training always reads a prepared dataset (`fmtrain prepare`, layout in
    `fmtrain.data.volumes.prepared`). Give `prepared` to train from one made beforehand (a folder
    or a bucket URL); give `source` and the datamodule prepares it once, before training,
    into `prepared` (default: a folder beside a local source, keyed by the settings).

    Args:
        source: raw data: AI-READI manifest.tsv, CSV/TSV file list, or folder; path or URL.
        root: the dataset root that the list's relative paths start from, and a manifest's
            paths that begin with "/" (AI-READI's ``/retinal_oct/...``); default: the
            folder of `source`.
        prepared: prepared dataset location (path or URL).
        storage_options: fsspec options for URLs (credentials, S3 endpoint, ...).
        devices: keep only these device models (case-insensitive, e.g. ["Spectralis"]).
        anatomic_regions: keep only these regions (manifest column).
        lateralities: keep only these eyes/sides, e.g. ["R"].
        input_size: volume size after crop/pad, (z, y, x) — for OCT (B-scans, rows, columns).
        spacing: target voxel spacing in mm, (z, y, x).
        patch_size: token patch size (linked from `model.patch_size`).
        masks: mask sampler by `class_path` (`fmtrain.masks.MultiBlock` for V-JEPA,
            `fmtrain.masks.RandomPatch` for MAE, or your own `MaskSampler`); a plain list
            of multiblock families is short for `MultiBlock(families=...)`. Default:
            V-JEPA's multiblock mix. `none` for methods that use no masks.
        batch_size: per-device batch size.
        val_batch_size: validation batch size (defaults to `batch_size`).
        num_workers: loader worker processes.
        split_fractions: participant fractions per split, used when preparing.
        train_split: split to train on.
        val_split: split to validate on (no validation when the dataset lacks it).
        seed: seed of the split, sample order, augmentation and masks.
        prepare_workers: processes that prepare raw volumes.
        augment: random augmentations after the prepared volumes.
        max_skip_fraction: fail when more than this fraction of files cannot be read.
        allow_missing_spacing: read files without spacing as 1 mm (warned and counted).
    """

    # a few generated samples in the recipe's geometry (`fmtrain check --synthetic`)
    write_synthetic = classmethod(synthetic_volumes)

    def __init__(
        self,
        *,
        source: str | None = None,
        root: str | None = None,
        prepared: str | None = None,
        storage_options: dict | None = None,
        devices: list[str] | None = None,
        anatomic_regions: list[str] | None = None,
        lateralities: list[str] | None = None,
        input_size: tuple[int, int, int] = (64, 384, 384),
        spacing: tuple[float, float, float] = (0.05, 0.02, 0.02),
        patch_size: tuple[int, int, int] = (4, 16, 16),
        masks: MaskSampler | list[MultiBlockSpec] | Literal["none"] | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        split_fractions: dict[str, float] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        seed: int = 0,
        prepare_workers: int = 2,
        augment: AugmentConfig | None = None,
        max_skip_fraction: float = 0.05,
        allow_missing_spacing: bool = False,
    ) -> None:
        super().__init__(
            grid=TokenGrid.from_sizes(input_size, patch_size, patch_key="model.patch_size"),
            masks=masks,
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            train_split=train_split,
            val_split=val_split,
            seed=seed,
        )
        if source is None and prepared is None:
            raise ValueError(
                "data.source or data.prepared must be set: a manifest/file list/folder to "
                "prepare, or a dataset made by `fmtrain prepare`"
            )
        self.source = source
        self.root = root
        self.storage_options = storage_options
        self.filters = {
            "devices": devices,
            "anatomic_regions": anatomic_regions,
            "lateralities": lateralities,
        }
        require_positive("spacing", spacing)
        require_preparation(prepare_workers, max_skip_fraction)
        self.spacing = tuple(spacing)
        self.split_fractions = dict(split_fractions or DEFAULT_FRACTIONS)
        self.prepare_workers = prepare_workers
        self.max_skip_fraction = max_skip_fraction
        self.allow_missing_spacing = allow_missing_spacing
        self.prepared = prepared or self.default_prepared_location(self._prepare_kwargs())
        # a bucket is shared by all nodes: prepare it once (global rank 0), not once per node
        self.prepare_data_per_node = not is_remote(self.prepared)
        self.augment_config = augment or AugmentConfig()

    def _prepare_kwargs(self) -> dict:
        return {
            "spacing": self.spacing,
            "size": self.input_size,
            "split_fractions": self.split_fractions,
            "seed": self.seed,
            **self.filters,
            "allow_missing_spacing": self.allow_missing_spacing,
            # only when given, so the default prepared location of earlier recipes holds
            **({"root": self.root} if self.root is not None else {}),
        }

    def prepare_from_source(self) -> None:
        assert self.source is not None
        try:
            prepare_dataset(
                self.source,
                self.prepared,
                workers=self.prepare_workers,
                max_skip_fraction=self.max_skip_fraction,
                storage_options=self.storage_options,
                **self._prepare_kwargs(),
            )
        except PrepareFailed as err:  # named as the recipe spells it, for check and fit
            raise err.naming(f"{KEY}.max_skip_fraction") from None

    def open_prepared(self) -> PreparedDataset:
        dataset = PreparedDataset(self.prepared, self.storage_options)
        prepare_params_match(dataset, self.spacing, self.input_size)
        return dataset

    def augmenter(self):  # type: ignore[no-untyped-def]
        return partial(augment, cfg=self.augment_config)
