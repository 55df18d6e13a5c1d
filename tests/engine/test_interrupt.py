"""Ctrl-C during `fit`: a checkpoint between steps, the resume command printed, and the
resumed run continues in the same folder. Real processes and a real SIGINT."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_RECIPE

INTERRUPTED = re.compile(
    r"stopped by SIGINT at step (\d+); checkpoint (\S+)\. Resume with:\n\s+(.+)"
)


def _fit(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "fmtrain", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_prints_the_resume_command_and_resume_continues(
    oct_dataset, tmp_path
):
    args = ["fit", "--config", str(TINY_RECIPE)]
    args += [
        f"--data.init_args.source={oct_dataset}/manifest.tsv",
        "--data.init_args.num_workers=1",
    ]
    args += ["--trainer.default_root_dir=run", "--trainer.logger=true"]  # fmtrain's loggers
    args += ["--trainer.max_steps=100000", "--checkpoint.every_n_train_steps=2"]
    proc = _fit(tmp_path, args)
    folder = tmp_path / "run" / "checkpoints"  # the README's place when dirpath is unset
    deadline = time.monotonic() + 120
    while not list(folder.glob("step*.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as the terminal does on Ctrl-C (workers get theirs too)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    match = INTERRUPTED.search(out)
    assert match, out[-3000:]
    step, saved, command = int(match.group(1)), Path(tmp_path / match.group(2)), match.group(3)
    assert saved.parent == folder and step >= 2
    assert torch.load(saved, map_location="cpu", weights_only=False)["global_step"] == step
    assert f"checkpoints go to {folder}" in out or "checkpoints go to run/checkpoints" in out

    # The printed command resumes (a few steps more, so the test ends), in the same folders.
    resumed = [*shlex.split(command)[1:], f"--trainer.max_steps={step + 3}"]
    assert resumed[-3:-1] == ["--resume", "true"]
    proc = _fit(tmp_path, resumed)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert f"resuming from {saved.relative_to(tmp_path)} (global_step {step})" in out or (
        f"(global_step {step})" in out
    ), out[-3000:]
    assert f"finished at step {step + 3}; checkpoints in " in out, out[-3000:]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints",
        "csv",
        "tensorboard",
    ]
    with (tmp_path / "run" / "csv" / "metrics.csv").open() as f:
        header, *rows = [line.split(",") for line in f.read().splitlines()]
    steps = sorted({int(r[header.index("step")]) for r in rows if r[header.index("train/loss")]})
    assert steps == list(range(step + 3)), steps  # one log, both runs, no gap or repeat

    # A fresh run into that folder would mix two runs' checkpoints: refused, with the way out.
    proc = _fit(tmp_path, [*args[:-2], "--trainer.max_steps=1"])
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "holds the checkpoints of an earlier run" in out, out[-3000:]
    assert "--resume true" in out and "Traceback" not in out
