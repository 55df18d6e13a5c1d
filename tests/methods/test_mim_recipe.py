"""MiM through the real tools: Lightning fit, the exported encoder, and `fmtrain check`."""

from __future__ import annotations

import csv

import pytest
import torch

from fmtrain.check.runner import run_check
from fmtrain.cli import run_cli
from fmtrain.export import load_encoder
from tests.conftest import REPO

TINY_MIM = REPO / "tests" / "recipes" / "oct_mim_tiny.yaml"


def test_fit_logs_every_level_and_the_encoder_reloads(oct_dataset, tmp_path):
    args = ["fit", "--config", str(TINY_MIM), f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}", f"--checkpoint.dirpath={tmp_path}/ckpt"]
    args += [f"--trainer.logger.init_args.save_dir={tmp_path}"]
    cli = run_cli(args)
    assert cli.trainer.global_step == 6
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    for key in ("reconstruction_level0", "reconstruction_level1", "location_loss", "infonce_loss"):
        assert all(r[f"train/{key}"] for r in rows), key
    encoder = load_encoder(tmp_path / "ckpt" / "last.ckpt")
    trained = cli.model.evaluation_encoder()
    x = torch.randn(2, 1, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), trained.eval()(x))
    assert encoder(x).shape == (2, 64, trained.embed_dim)


def test_check_passes_the_recipe_and_reports_every_level(oct_dataset, tmp_path):
    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}"]
    report = run_check(str(TINY_MIM), args, str(tmp_path / "check"))
    assert not report.errors, [str(p) for p in report.errors]
    # fractions are of each level's region: the 2x2x2 box of level 1, not the grid
    assert [m["num_tokens"] for m in report.masks] == [64, 8]
    assert all(0 < m["context_fraction"][0] < 1 for m in report.masks)


@pytest.mark.parametrize(
    "override",
    [
        "--data.init_args.input_size=[4,16,16]",  # grid 2x2x2: level 1 would hold 1 token
        "--data.init_args.masks.init_args.levels=3",  # a third level of 1 token
    ],
)
def test_check_refuses_grids_too_small_for_the_levels(oct_dataset, tmp_path, override):
    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv", override]
    args += [f"--trainer.default_root_dir={tmp_path}"]
    report = run_check(str(TINY_MIM), args, str(tmp_path / "check"))
    keys = " ".join(f"{p.key} {p.message}" for p in report.errors)
    assert "data.init_args.masks.init_args.levels" in keys, keys


def test_check_measures_mim_on_fake_tensors_like_the_real_pass(oct_dataset, tmp_path, monkeypatch):
    """MiM reads each level's box from the mask indices: that stays real under fake tensors,
    so a MiM recipe too big for the machine is still measured (the budget is set to zero to
    take that path here)."""
    from fmtrain.check import step

    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}"]
    real = run_check(str(TINY_MIM), args, str(tmp_path / "real"))
    monkeypatch.setattr(step, "_REAL_PASS_BUDGET_S", 0.0)
    fake = run_check(str(TINY_MIM), args, str(tmp_path / "fake"))
    assert not fake.errors, [str(p) for p in fake.errors]
    assert fake.performance["step time method"].startswith("predicted, not run")
    assert {s["stage"] for s in fake.stages} == {s["stage"] for s in real.stages}
    assert float(fake.performance["forward+backward FLOPs per sample"]) > 0
