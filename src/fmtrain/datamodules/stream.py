"""A stateless, resumable training stream: batch k is a pure function of (seed, k, rank).

Lightning restores the step counter from a checkpoint but not a plain DataLoader's
position; a stream that can start at any batch index resumes exactly, with no state to save.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fmtrain.datamodules.batch import MaskedBatch


class IndexedVolumes(Protocol):
    def __len__(self) -> int: ...
    def load(self, index: int) -> torch.Tensor: ...


class PretrainStream(IterableDataset):
    """Endless batches; with `W` loader workers, worker `w` builds batches w, w+W, ...

    The DataLoader interleaves workers in order, so batches still arrive as 0, 1, 2, ...
    Each rank of a data-parallel run reads a disjoint slice of every global batch; every
    sample is seen once per epoch over the whole job.

    Args:
        volumes: indexable preprocessed volumes.
        batch_size: per-device batch size.
        make_batch: (samples, ids, rng) -> MaskedBatch; samples masks.
        transform: (volume, rng) -> volume; random augmentation.
        seed: base seed of order, augmentation and masks.
        start_batch: index of the first batch to yield (the resume point).
        rank: this process's data-parallel rank.
        world_size: number of data-parallel ranks.
    """

    def __init__(
        self,
        volumes: IndexedVolumes,
        *,
        batch_size: int,
        make_batch: Callable[..., MaskedBatch],
        transform: Callable[[torch.Tensor, np.random.Generator], torch.Tensor],
        seed: int = 0,
        start_batch: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(volumes) == 0:
            raise ValueError("training stream has no volumes")
        self.volumes = volumes
        self.batch_size = batch_size
        self.make_batch = make_batch
        self.transform = transform
        self.seed = seed
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size

    def sample_indices(self, batch: int) -> list[int]:
        """Dataset indices of this rank's samples in global batch number `batch`."""
        n = len(self.volumes)
        first = (batch * self.world_size + self.rank) * self.batch_size
        out, epoch, order = [], None, None
        for g in range(first, first + self.batch_size):
            if g // n != epoch:
                epoch = g // n
                order = np.random.default_rng((self.seed, epoch)).permutation(n)
            out.append(int(order[g % n]))
        return out

    def build(self, batch: int) -> MaskedBatch:
        ids = self.sample_indices(batch)
        samples = [
            self.transform(
                self.volumes.load(i),
                np.random.default_rng((self.seed, batch, self.rank, slot, 1)),
            )
            for slot, i in enumerate(ids)
        ]
        return self.make_batch(
            samples, ids, np.random.default_rng((self.seed, batch, self.rank, 2))
        )

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        batch = self.start_batch + worker
        while True:
            yield self.build(batch)
            batch += workers


def ignore_interrupts(worker_id: int = 0) -> None:
    """Loader workers share the terminal's process group, so Ctrl-C reaches them too; they
    leave it to the main process, which stops `fit` between steps with a checkpoint (a worker
    that died of it would fail the very batch that checkpoint waits for)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stream_loader(
    samples: IndexedVolumes,
    *,
    trainer: Any,  # a Lightning Trainer or None: the resume point, rank and world size
    batch_size: int,
    make_batch: Callable[..., object],
    transform: Callable,
    seed: int,
    num_workers: int,
) -> DataLoader:
    """The training loader every datamodule uses: the resumable stream, started at the batch
    the (possibly restored) optimizer step has reached, on this rank's slice."""
    start = trainer.global_step * trainer.accumulate_grad_batches if trainer else 0
    stream = PretrainStream(
        samples,
        batch_size=batch_size,
        make_batch=make_batch,
        transform=transform,
        seed=seed,
        start_batch=start,
        rank=trainer.global_rank if trainer else 0,
        world_size=trainer.world_size if trainer else 1,
    )
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=ignore_interrupts,
    )


def validation_loader(
    dataset: Any, *, batch_size: int, num_workers: int, collate_fn: Callable
) -> DataLoader:
    """Validation batches in a fixed order. At most one worker: validation is short and
    runs between training steps, and more processes would compete with the training ones."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=min(num_workers, 1),
        collate_fn=collate_fn,
        worker_init_fn=ignore_interrupts,
    )
