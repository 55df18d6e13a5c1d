"""The training stream: disjoint ranks, full epochs, exact restart at any batch."""

import numpy as np
import torch
from torch.utils.data import DataLoader

from fmtrain.datamodules.batch import MaskCollator
from fmtrain.datamodules.stream import PretrainStream
from fmtrain.masks import MultiBlock, MultiBlockSpec


class _Volumes:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def load(self, index):
        return torch.full((1, 2, 4, 4), float(index))


def _stream(n=10, batch_size=3, rank=0, world_size=1, start_batch=0):
    sampler = MultiBlock(families=[MultiBlockSpec(num_blocks=2)], min_context_tokens=4)
    return PretrainStream(
        _Volumes(n),
        batch_size=batch_size,
        make_batch=MaskCollator(sampler, (2, 4, 4)),
        transform=lambda v, rng: v + rng.normal(),
        seed=3,
        start_batch=start_batch,
        rank=rank,
        world_size=world_size,
    )


def test_each_epoch_visits_every_sample_once_across_ranks():
    n, b, world = 12, 3, 2
    streams = [_stream(n, b, rank=r, world_size=world) for r in range(world)]
    per_epoch = n // (b * world)
    for epoch in range(2):
        seen = [
            i
            for k in range(epoch * per_epoch, (epoch + 1) * per_epoch)
            for s in streams
            for i in s.sample_indices(k)
        ]
        assert sorted(seen) == list(range(n))
    # two epochs are shuffled differently
    assert streams[0].sample_indices(0) != streams[0].sample_indices(per_epoch)


def test_restart_at_batch_k_reproduces_batches_exactly_with_workers():
    full = iter(DataLoader(_stream(), batch_size=None, num_workers=2))
    batches = [next(full) for _ in range(6)]
    resumed = iter(DataLoader(_stream(start_batch=4), batch_size=None, num_workers=2))
    for expected in batches[4:]:
        got = next(resumed)
        assert torch.equal(got.inputs, expected.inputs)
        assert torch.equal(got.sample_ids, expected.sample_ids)
        for a, b in zip(
            got.contexts + got.targets, expected.contexts + expected.targets, strict=True
        ):
            assert torch.equal(a, b)


def test_batches_differ_between_steps_and_ranks():
    a, b = _stream(rank=0, world_size=2), _stream(rank=1, world_size=2)
    assert not set(a.sample_indices(0)) & set(b.sample_indices(0))
    first, second = a.build(0), a.build(1)
    assert not torch.equal(first.contexts[0], second.contexts[0]) or not torch.equal(
        first.inputs, second.inputs
    )
    assert np.unique(first.sample_ids.numpy()).size == 3
