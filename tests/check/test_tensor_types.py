"""Batches are plain tensors whatever the augmentations: MONAI's MetaTensor (a torch.Tensor
subclass) once leaked from the affine into every activation and broke XLA runs. `check`
names a tensor subclass in a batch as an error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fmtrain.check.batches import check_tensor_types
from fmtrain.check.problems import CheckReport
from fmtrain.check.runner import run_check
from fmtrain.data.volumes.augment import AugmentConfig, augment
from fmtrain.datamodules.batch import MaskedBatch
from tests.conftest import TINY_RECIPE
from tests.tiny_store import prepare_tiny_store


def test_the_affine_returns_a_plain_tensor_with_monais_values():
    volume = torch.rand(1, 8, 32, 32)
    cfg = AugmentConfig(affine_prob=1.0, noise_std=0.0, intensity_scale=0.0)
    cfg.intensity_shift = cfg.flip_last_axis = 0.0
    out = augment(volume, np.random.default_rng(0), cfg)
    assert type(out) is torch.Tensor
    assert not torch.equal(out, volume)  # the affine did move the voxels


def test_a_metatensor_in_a_batch_is_an_error_naming_the_field():
    inputs = MetaTensor(torch.zeros(2, 1, 8, 32, 32))
    batch = MaskedBatch(inputs=inputs, contexts=[torch.zeros(2, 3, dtype=torch.long)], targets=[])
    report = CheckReport(recipe="tiny.yaml")
    check_tensor_types(report, batch)
    assert len(report.errors) == 1
    error = report.errors[0]
    assert "MetaTensor" in error.message and "batch.inputs" in error.message
    assert "as_subclass(torch.Tensor)" in error.fix


@pytest.fixture(scope="module")
def prepared(oct_dataset) -> str:
    return prepare_tiny_store(oct_dataset)


def test_check_passes_a_recipe_with_the_affine_always_on(tmp_path, prepared):
    args = [
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.source=null",
        f"--data.init_args.prepared={prepared}",
        "--data.init_args.augment.affine_prob=1.0",
    ]
    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))
    assert report.errors == [], [str(p) for p in report.errors]
