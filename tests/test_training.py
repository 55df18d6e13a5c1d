"""Real Lightning runs of the tiny recipe: recipes build, exact resume, DDP, batch checks."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmtrain.cli import run_cli

from .conftest import REPO, TINY_RECIPE

CPU = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.precision=32-true",
    "--trainer.logger=false",
]


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_builds_its_model_and_data(recipe):
    cli = run_cli(["--config", str(recipe), *CPU], run=False)
    grid, dm = cli.model.grid, cli.datamodule
    assert grid.input_size == dm.input_size  # linked, not repeated
    assert getattr(dm, "grid", grid) == grid
    assert cli.model.in_chans == dm.channels
    # a method that needs masks gets as many families as the data's sampler draws; a
    # supervised one (restoration) none
    if cli.model.num_mask_families is None:
        assert dm.num_mask_families == 0
    else:
        assert cli.model.num_mask_families == dm.num_mask_families >= 1


def _fit(root, out, *extra):
    args = ["fit", "--config", str(TINY_RECIPE), f"--data.init_args.source={root}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={out}", f"--checkpoint.dirpath={out}/ckpt"]
    args += [f"--trainer.logger.init_args.save_dir={out}", *extra]
    return run_cli(args)


def _losses(out: Path) -> dict[int, float]:
    with (out / "csv" / "metrics.csv").open() as f:
        return {
            int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r["train/loss"]
        }


@pytest.mark.slow
def test_resume_from_checkpoint_gives_identical_next_step_losses(oct_dataset, tmp_path):
    _fit(oct_dataset, tmp_path / "full")
    full = _losses(tmp_path / "full")
    ckpt = tmp_path / "full" / "ckpt" / "step0000003.ckpt"
    assert ckpt.exists(), sorted(p.name for p in (tmp_path / "full" / "ckpt").iterdir())
    cli = _fit(oct_dataset, tmp_path / "resumed", f"--ckpt_path={ckpt}")
    resumed = _losses(tmp_path / "resumed")
    assert cli.trainer.global_step == 6
    assert sorted(resumed) == [3, 4, 5]
    for step in (3, 4, 5):
        assert resumed[step] == full[step], (step, resumed[step], full[step])
    assert full[5] != full[3]  # the comparison is not between constants
    state = torch.load(tmp_path / "resumed" / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 6 and "rng_state" in state


@pytest.mark.slow
def test_two_process_ddp_on_cpu(oct_dataset, tmp_path):
    cmd = [sys.executable, "-m", "fmtrain", "fit", "--config", str(TINY_RECIPE)]
    cmd += [
        f"--data.init_args.source={oct_dataset}/manifest.tsv",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cmd += [
        f"--checkpoint.dirpath={tmp_path}/ckpt",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    cmd += ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_steps=3"]
    cmd += ["--global_batch_size=4"]  # 2 per device x 2 processes
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout
    assert "All distributed processes registered" in proc.stderr + proc.stdout
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 3


def test_global_batch_mismatch_is_refused_with_the_fix(oct_dataset, tmp_path):
    with pytest.raises(SystemExit) as err:
        _fit(oct_dataset, tmp_path, "--global_batch_size=8")
    msg = str(err.value)
    assert "global_batch_size=8" in msg and "accumulate_grad_batches=4" in msg


def test_indivisible_input_size_is_refused_when_the_recipe_is_read(tmp_path):
    with pytest.raises(ValueError, match=r"data\.input_size=\[8, 30, 32\]"):
        run_cli(
            ["--config", str(TINY_RECIPE), *CPU, "--data.init_args.input_size=[8,30,32]"], run=False
        )
