"""What every pretraining datamodule shares: a prepared dataset, a token grid, a mask sampler,
the resumable training stream and fixed-mask validation batches.

A data wing subclasses `PreparedDataModule` and says how to prepare and open its data
(`prepare_data`, `open_prepared`), how a stored sample becomes a model input
(`input_transform`) and how to augment it (`augmenter`). Probes, `embed`, `check` and the
demo use the public seams: `evaluation_split(name)`, `default_labels()`, `input_size`, `channels`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fmtrain.core.grid import TokenGrid
from fmtrain.core.storage import is_remote
from fmtrain.data.preparation import is_complete
from fmtrain.datamodules.batch import MaskCollator, MaskedBatch
from fmtrain.datamodules.settings import require_loader_settings
from fmtrain.datamodules.stream import stream_loader, validation_loader
from fmtrain.masks import MaskSampler, MultiBlock

log = logging.getLogger("fmtrain.data")

__all__ = ["PreparedDataModule", "SampleSplit"]


class SampleSplit(Protocol):
    """A split of prepared samples: `load(i)` a model input, `samples[i]` its description
    (at least ``key``, ``participant_id`` and ``device``)."""

    samples: list[dict]

    def __len__(self) -> int: ...
    def load(self, index: int) -> torch.Tensor: ...


class _Inputs:
    """A stored split seen as model inputs (`to_input` applied on load)."""

    def __init__(self, split: Any, to_input: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.split, self.to_input = split, to_input
        self.samples = split.samples

    def __len__(self) -> int:
        return len(self.split)

    def value_records(self) -> list[dict]:
        """The stored split's per-sample value records (what `check` reads)."""
        return self.split.value_records()

    def load(self, index: int) -> torch.Tensor:
        stored = self.split.load(index)
        return stored if self.to_input is None else self.to_input(stored)


class _ValidationSet(Dataset):
    def __init__(self, samples: SampleSplit) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.samples.load(index), index


class _ValidationCollate:
    """Masks for validation batches drawn from a fixed seed per batch: the same every time."""

    def __init__(self, collator: MaskCollator, seed: int) -> None:
        self.collator, self.seed = collator, seed

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> MaskedBatch:
        ids = [i for _, i in items]
        rng = np.random.default_rng((self.seed, 7, ids[0]))
        return self.collator([v for v, _ in items], ids, rng)


def _fraction(dataset: Any, split: str) -> float:
    """The fraction of participants a prepared dataset meant for `split` (0 if unknown)."""
    params = getattr(dataset, "params", None) or {}
    return float((params.get("split_fractions") or {}).get(split, 0.0))


def no_augmentation(sample: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The identity, for data without augmentations."""
    return sample


def sampler_from_recipe(masks: MaskSampler | list | str | None) -> MaskSampler | None:
    """The recipe's `masks` value as a sampler: "none" -> None, a list -> multiblock
    families, unset -> V-JEPA's multiblock mix."""
    if masks == "none":
        return None
    if masks is None:
        return MultiBlock()
    if isinstance(masks, list):
        return MultiBlock(families=masks)
    return masks


class PreparedDataModule(pl.LightningDataModule):
    """Base of the datamodules that train from a prepared dataset (see the module docstring).

    Args:
        grid: the token grid of the model inputs.
        masks: the mask sampler (see `sampler_from_recipe`).
        batch_size: per-device batch size.
        val_batch_size: validation batch size (defaults to `batch_size`).
        num_workers: loader worker processes.
        train_split: split to train on.
        val_split: split to validate on (no validation when the dataset lacks it).
        seed: seed of sample order, augmentation and masks.
    """

    # how `check` speaks of the training set: what a sample is, where samples come from, and
    # how to get more of them
    sample_noun = "volumes"
    source_key = "data.init_args.source"
    more_data_fix = "add data or check data.devices / data.split_fractions"

    def __init__(
        self,
        *,
        grid: TokenGrid,
        masks: MaskSampler | list | Literal["none"] | None,
        batch_size: int,
        val_batch_size: int | None,
        num_workers: int,
        train_split: str,
        val_split: str,
        seed: int,
    ) -> None:
        super().__init__()
        require_loader_settings(batch_size, val_batch_size, num_workers)
        self.grid = grid
        self.sampler = sampler_from_recipe(masks)
        if self.sampler is not None:
            self.sampler.validate(self.grid.shape)  # impossible masks fail as the recipe is read
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.train_split, self.val_split = train_split, val_split
        self.seed = seed
        self.train_set: SampleSplit | None = None
        self.val_set: SampleSplit | None = None

    # --- what a data wing provides ---------------------------------------------------------
    source: str | None = None
    prepared: str = ""
    storage_options: dict | None = None

    def prepare_from_source(self) -> None:
        """Prepare `source` into `prepared` (called when no complete preparation is there)."""
        raise NotImplementedError

    def open_prepared(self) -> Any:
        """The prepared dataset (`samples` dict of split -> records, `split(name)`)."""
        raise NotImplementedError

    # Both return picklable callables (module-level functions or partials), not bound
    # methods: they travel into loader workers, and a datamodule holds its trainer.
    def input_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """stored sample -> model input [C, *input_size]; None when they are the same."""
        return None

    def augmenter(self) -> Callable[[torch.Tensor, np.random.Generator], torch.Tensor]:
        """(input, rng) -> randomly augmented input, for training batches."""
        return no_augmentation

    @property
    def input_size(self) -> tuple[int, ...]:
        """The model input's shape without its channel axis (linked into the model)."""
        return tuple(self.grid.input_size)

    @property
    def channels(self) -> int:
        """Input channels of every batch (linked into the model)."""
        return 1

    # --- seams for probes, embed, check and the demo ---------------------------------------
    def evaluation_split(self, name: str) -> SampleSplit:
        """Split `name` as model inputs, in a fixed order, with sample descriptions."""
        return _Inputs(self.open_prepared().split(name), self.input_transform())

    def default_labels(self) -> str | None:
        """labels.tsv beside a local source, when there is one (probes use it)."""
        if self.source and "://" not in self.source:
            candidate = Path(self.source).parent / "labels.tsv"
            return str(candidate) if candidate.exists() else None
        return None

    @property
    def num_mask_families(self) -> int:
        """(context, target) pairs per batch."""
        return self.sampler.num_families() if self.sampler else 0

    def describe(self) -> dict:
        return {"grid": list(self.grid.shape), "masks": repr(self.sampler)}

    def default_prepared_location(self, settings: dict, kind: str = "") -> str:
        """Where a preparation of `source` with `settings` goes when the recipe names none:
        beside a local source, in the user's cache for a URL; keyed by the settings, so a
        change of them prepares anew instead of reusing a dataset made otherwise."""
        assert self.source is not None
        key = json.dumps({"source": self.source, **settings}, sort_keys=True)
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        if is_remote(self.source):
            home = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
            cache = f"prepared-{kind}" if kind else "prepared"
            return os.path.join(home, "fmtrain", cache, digest)
        folder = os.path.dirname(os.path.abspath(self.source)) or "."
        return os.path.join(folder, ".fmtrain_prepared", f"{kind}-{digest}" if kind else digest)

    # --- Lightning hooks -------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Prepare the source once; later runs (and resumes) reuse the result."""
        if is_complete(self.prepared, self.storage_options):
            return  # an incomplete one (interrupted, or too many skips) is prepared again
        if self.source is None:
            raise FileNotFoundError(
                f"data.init_args.prepared={self.prepared}: no complete prepared dataset there, "
                "and no data.init_args.source to prepare one from"
            )
        log.info("preparing %s into %s", self.source, self.prepared)
        self.prepare_from_source()

    def setup(self, stage: str | None = None) -> None:
        dataset = self.open_prepared()
        self.train_set = _Inputs(dataset.split(self.train_split), self.input_transform())
        if dataset.samples.get(self.val_split):
            self.val_set = _Inputs(dataset.split(self.val_split), self.input_transform())
        elif self.val_split in dataset.samples and _fraction(dataset, self.val_split) > 0:
            # asked for and cut, but no participant landed in it: refuse, do not train blind
            raise ValueError(
                f"data.init_args.val_split={self.val_split!r}: that split of {dataset.url} is "
                f"empty (splits: { {k: len(v) for k, v in dataset.samples.items()} }); give it "
                "participants with data.init_args.split_fractions, or add data"
            )
        else:
            log.warning("no %r split in %s: validation is off", self.val_split, dataset.url)
        log.info(
            "data: %d train / %d val samples from %s, grid %s (%d tokens); masks:\n  %s",
            len(self.train_set),
            len(self.val_set) if self.val_set else 0,
            dataset.url,
            self.grid.shape,
            self.grid.num_tokens,
            # one line per family or level, indented under the data line
            self.sampler.describe(self.grid.shape).replace("\n", "\n  ")
            if self.sampler
            else "none",
        )

    def train_dataloader(self) -> DataLoader:
        return stream_loader(
            self.train_set,
            trainer=self.trainer,
            batch_size=self.batch_size,
            make_batch=MaskCollator(self.sampler, self.grid.shape),
            transform=self.augmenter(),
            seed=self.seed,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return validation_loader(
            _ValidationSet(self.val_set),
            batch_size=self.val_batch_size,
            num_workers=self.num_workers,
            collate_fn=_ValidationCollate(MaskCollator(self.sampler, self.grid.shape), self.seed),
        )
