"""`SignalDataModule` on real WFDB and .vital recordings: both token layouts, their masks,
fixed validation batches, sample keys that labels join on, and recipe keys in its errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from fmtrain.datamodules.batch import MaskedBatch
from fmtrain.datamodules.signals import SignalDataModule
from fmtrain.losses.regression import patchify
from fmtrain.masks import MaskSampler, RandomPatch, SpanMask

WINDOW, PATCH = 512, 64  # 4.096 s at 125 Hz; 8 patches of 0.512 s per channel
P = WINDOW // PATCH
FRACTIONS = {"train": 0.5, "val": 0.25, "test": 0.25}


@pytest.fixture(scope="module")
def prepared(signal_dataset, tmp_path_factory) -> str:
    """One prepared dataset for the module: the layouts differ only after the windows."""
    out = str(tmp_path_factory.mktemp("signals_dm") / "prepared")
    _datamodule(signal_dataset, out).prepare_data()
    return out


def _datamodule(
    signal_dataset: Path,
    prepared: str,
    *,
    tokens: str = "per_channel",
    patch_size: tuple[int, ...] = (1, PATCH),
    masks: MaskSampler | None = None,
    **kwargs,
) -> SignalDataModule:
    options = dict(window=WINDOW, hop=WINDOW // 2, batch_size=4, split_fractions=FRACTIONS)
    return SignalDataModule(
        source=str(signal_dataset / "manifest.tsv"),
        prepared=prepared,
        tokens=tokens,
        patch_size=patch_size,
        masks=masks or RandomPatch(ratio=0.4, per_channel=tokens == "per_channel"),
        num_workers=0,
        prepare_workers=1,
        **(options | kwargs),
    )


def _ready(dm: SignalDataModule) -> SignalDataModule:
    dm.prepare_data()  # finds the complete dataset: nothing to do
    dm.setup("fit")
    return dm


def _train_batches(dm: SignalDataModule, count: int) -> list[MaskedBatch]:
    loader = iter(dm.train_dataloader())  # endless: take `count`
    return [next(loader) for _ in range(count)]


def _rows(batch: torch.Tensor) -> list[tuple[int, ...]]:
    """Per sample, how many of its indices fall in each channel row of the (2, P) grid."""
    return [tuple(np.bincount(row.numpy() // P, minlength=2)) for row in batch]


def _assert_partition(batch: MaskedBatch, tokens: int) -> None:
    """Context and target of every sample: disjoint, sorted, together every token once."""
    for context, target in zip(batch.contexts[0], batch.targets[0], strict=True):
        both = torch.cat([context, target])
        assert torch.equal(both.sort().values, torch.arange(tokens))
        assert torch.equal(target, target.sort().values)


def test_per_channel_batches_are_one_row_per_channel(signal_dataset, prepared):
    dm = _ready(_datamodule(signal_dataset, prepared))
    assert dm.channels == 1 and dm.input_size == (2, WINDOW) and dm.grid.shape == (2, P)
    batch = _train_batches(dm, 1)[0]
    assert batch.inputs.shape == (4, 1, 2, WINDOW) and batch.inputs.dtype == torch.float32
    # the stored windows, untouched: no augmentation for signals
    for k, i in enumerate(batch.sample_ids.tolist()):
        assert torch.equal(batch.inputs[k], dm.train_set.split.load(i)[None])
    # token c * P + p is channel c's p-th patch (row-major, as PatchEmbed and patchify cut)
    patches = patchify(batch.inputs, dm.grid.patch_size)
    assert patches.shape == (4, 2 * P, PATCH)
    c, p = divmod(11, P)
    assert torch.equal(patches[:, 11], batch.inputs[:, 0, c, p * PATCH : (p + 1) * PATCH])


def test_across_channels_batches_hold_all_channels_per_patch(signal_dataset, prepared):
    dm = _ready(
        _datamodule(signal_dataset, prepared, tokens="across_channels", patch_size=(PATCH,))
    )
    assert dm.channels == 2 and dm.input_size == (WINDOW,) and dm.grid.shape == (P,)
    batch = _train_batches(dm, 1)[0]
    assert batch.inputs.shape == (4, 2, WINDOW)
    # the same seed draws the same windows as the per-channel layout, reshaped only
    per_channel = _train_batches(_ready(_datamodule(signal_dataset, prepared)), 1)[0]
    assert torch.equal(batch.sample_ids, per_channel.sample_ids)
    assert torch.equal(batch.inputs, per_channel.inputs[:, 0])
    _assert_partition(batch, P)
    assert batch.targets[0].shape == (4, round(0.4 * P))


@pytest.mark.parametrize(
    "tokens, patch_size",
    [("per_channel", (PATCH,)), ("per_channel", (2, PATCH)), ("across_channels", (1, PATCH))],
)
def test_a_patch_size_of_the_other_layout_names_both_keys(
    signal_dataset, tmp_path, tokens, patch_size
):
    with pytest.raises(ValueError) as info:
        _datamodule(signal_dataset, str(tmp_path), tokens=tokens, patch_size=patch_size)
    message = str(info.value)
    assert "model.init_args.patch_size" in message and f"data.init_args.tokens={tokens}" in message
    assert str(list(patch_size)) in message  # what was given


def test_random_patch_per_channel_hides_the_same_count_in_each_channel(signal_dataset, prepared):
    dm = _ready(_datamodule(signal_dataset, prepared))
    hidden = round(0.4 * P)  # 3 of 8 per channel
    for batch in _train_batches(dm, 3):
        assert batch.targets[0].shape == (4, 2 * hidden)
        assert batch.contexts[0].shape == (4, 2 * (P - hidden))
        _assert_partition(batch, 2 * P)
        assert set(_rows(batch.targets[0])) == {(hidden, hidden)}
        assert set(_rows(batch.contexts[0])) == {(P - hidden, P - hidden)}
    # channels draw independently: somewhere in a few batches their hidden patches differ
    targets = torch.cat([b.targets[0] for b in _train_batches(dm, 3)])
    assert (targets[:, :hidden] != targets[:, hidden:] - P).any()


@pytest.mark.parametrize("per_channel", [False, True])
def test_span_masks_hide_runs_of_each_time_row(signal_dataset, prepared, per_channel):
    masks = SpanMask(ratio=0.5, span=2, per_channel=per_channel)
    dm = _ready(_datamodule(signal_dataset, prepared, masks=masks))
    batches = _train_batches(dm, 3)
    hidden = P // 2
    shared = []
    for batch in batches:
        _assert_partition(batch, 2 * P)
        assert set(_rows(batch.targets[0])) == {(hidden, hidden)}
        for target in batch.targets[0]:
            ecg, ppg = target[:hidden], target[hidden:] - P
            shared.append(torch.equal(ecg, ppg))
            for row in (ecg, ppg):  # runs: 2 of them (hidden / span), never touching
                runs = 1 + int((row.diff() > 1).sum())
                assert runs == hidden // 2, row
    # without per_channel no channel may show an instant the other hides
    assert all(shared) if not per_channel else not all(shared)


def test_validation_batches_are_the_same_every_time(signal_dataset, prepared):
    dm = _ready(_datamodule(signal_dataset, prepared, val_batch_size=3))
    first, second = list(dm.val_dataloader()), list(dm.val_dataloader())
    assert len(first) == len(second) == -(-len(dm.val_set) // 3) > 1
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.sample_ids, b.sample_ids)
        assert torch.equal(a.targets[0], b.targets[0])
        assert torch.equal(a.contexts[0], b.contexts[0])
    # in order, and every batch with its own masks (not one mask for all)
    assert torch.cat([b.sample_ids for b in first]).tolist() == list(range(len(dm.val_set)))
    assert not torch.equal(first[0].targets[0][:1], first[1].targets[0][:1])


def test_evaluation_samples_carry_the_manifest_filepath_labels_join_on(signal_dataset, prepared):
    dm = _ready(_datamodule(signal_dataset, prepared))
    with (signal_dataset / "manifest.tsv").open(newline="") as handle:
        manifest = {r["filepath"]: r for r in csv.DictReader(handle, delimiter="\t")}
    with (signal_dataset / "labels.tsv").open(newline="") as handle:
        labels = {r["filepath"] for r in csv.DictReader(handle, delimiter="\t")}
    assert dm.default_labels() == str(signal_dataset / "labels.tsv")
    test = dm.evaluation_split("test")
    assert len(test) > 0
    recordings = {}
    for i, sample in enumerate(test.samples):
        row = manifest[sample["key"]]
        assert sample["participant_id"] == row["participant_id"]
        assert sample["device"] == row["device"]
        assert sample["key"] in labels
        recordings.setdefault(sample["key"], []).append(sample["window"])
        if i < 3:
            assert test.load(i).shape == (1, 2, WINDOW)  # model inputs, not stored windows
    # every window of a recording, in order: bootstrap groups and per-recording pooling
    assert all(w == list(range(len(w))) for w in recordings.values())


@pytest.mark.parametrize("change", [{"window": 256}, {"rate": 100.0}])
def test_a_prepared_dataset_made_otherwise_is_refused_naming_the_recipe_keys(
    signal_dataset, prepared, change
):
    dm = _datamodule(signal_dataset, prepared, **change)
    dm.prepare_data()  # a complete dataset is there: nothing to prepare
    with pytest.raises(ValueError) as info:
        dm.setup("fit")
    message = str(info.value)
    ((key, value),) = change.items()
    assert prepared in message and f"data.init_args.{key}: recipe {value!r}" in message
