"""Faults: kills at random instants, uncommitted and truncated checkpoints, resume, GPU OOM advice,
and the micro-batch finder's arithmetic."""

import io
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from fmtrain.cli import run_cli
from fmtrain.engine.batch_finder import divisors, make_trial, plan_micro_batch
from fmtrain.engine.checkpoint_io import AtomicCheckpointIO, IncompleteCheckpointError
from fmtrain.engine.oom import MemorySettings, oom_message
from fmtrain.engine.resume import checkpoint_dirs, find_last_good_checkpoint
from fmtrain.methods import VJEPAModule

from ..conftest import TINY_RECIPE


def _state(step: int) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.arange(1000.0) * step}}


# --- atomic saves ------------------------------------------------------------------------------
def test_atomic_save_round_trips_locally_and_on_object_storage(tmp_path):
    ckpt_io = AtomicCheckpointIO()
    local = tmp_path / "ckpt" / "step0000003.ckpt"
    remote = f"memory://fmtrain-{uuid.uuid4().hex}/ckpt/step0000003.ckpt"
    for path in (str(local), remote):
        ckpt_io.save_checkpoint(_state(3), path)
        back = ckpt_io.load_checkpoint(path, weights_only=False)
        assert back["global_step"] == 3 and torch.equal(
            back["state_dict"]["w"], _state(3)["state_dict"]["w"]
        )
    assert sorted(p.name for p in local.parent.iterdir()) == ["step0000003.ckpt"]  # no temp left
    assert oct(local.stat().st_mode & 0o777) != oct(0o600)  # umask-based, as a plain open() gives
    fs, inner = fsspec.core.url_to_fs(remote)
    assert fs.exists(inner + ".complete")
    ckpt_io.remove_checkpoint(remote)
    assert not fs.exists(inner) and not fs.exists(inner + ".complete")


def test_remote_checkpoint_without_marker_is_refused_by_load_and_by_resume(caplog):
    ckpt_io = AtomicCheckpointIO()
    folder = f"memory://fmtrain-{uuid.uuid4().hex}/ckpt"
    ckpt_io.save_checkpoint(_state(5), f"{folder}/step0000005.ckpt")
    # A run killed between the PUT of a newer checkpoint and the PUT of its marker:
    fs, inner = fsspec.core.url_to_fs(folder)
    buffer = io.BytesIO()
    torch.save(_state(9), buffer)
    fs.pipe_file(f"{inner}/step0000009.ckpt", buffer.getvalue())
    with pytest.raises(IncompleteCheckpointError, match=r"no commit marker .*step0000009"):
        ckpt_io.load_checkpoint(f"{folder}/step0000009.ckpt")
    with caplog.at_level(logging.WARNING, logger="fmtrain"):
        assert find_last_good_checkpoint(folder) == f"{folder}/step0000005.ckpt"
    assert any(
        "step0000009.ckpt" in r.message and "commit marker" in r.message for r in caplog.records
    )
    # A last.ckpt whose marker is stale (object replaced, sizes differ) is refused too.
    ckpt_io.save_checkpoint(_state(6), f"{folder}/last.ckpt")
    fs.pipe_file(f"{inner}/last.ckpt", buffer.getvalue()[:-10])
    with pytest.raises(IncompleteCheckpointError, match="records"):
        ckpt_io.load_checkpoint(f"{folder}/last.ckpt")
    assert find_last_good_checkpoint(folder) == f"{folder}/step0000005.ckpt"


def test_truncated_local_checkpoint_is_skipped_with_its_reason(tmp_path, caplog):
    ckpt_io = AtomicCheckpointIO()
    ckpt_io.save_checkpoint(_state(2), str(tmp_path / "step0000002.ckpt"))
    ckpt_io.save_checkpoint(_state(4), str(tmp_path / "last.ckpt"))  # newest by step, not by name
    assert find_last_good_checkpoint(str(tmp_path)) == str(tmp_path / "last.ckpt")
    data = (tmp_path / "last.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / ".step0000007.ckpt.x1y2.tmp").write_bytes(data)  # a killed save's leftover
    with caplog.at_level(logging.WARNING, logger="fmtrain"):
        assert find_last_good_checkpoint(str(tmp_path)) == str(tmp_path / "step0000002.ckpt")
    skipped = [r.message for r in caplog.records if "last.ckpt" in r.message]
    assert skipped and "skipping checkpoint" in skipped[0] and "Error" in skipped[0], skipped
    assert not any(".tmp" in r.message for r in caplog.records)  # never even a candidate
    assert find_last_good_checkpoint(str(tmp_path / "missing")) is None


def test_checkpoint_dirs_match_lightning_when_dirpath_is_unset(tmp_path):
    earlier = tmp_path / "csv" / "version_0" / "checkpoints"
    AtomicCheckpointIO().save_checkpoint(_state(7), str(earlier / "last.ckpt"))
    callback = ModelCheckpoint()
    trainer = Trainer(
        default_root_dir=tmp_path, logger=CSVLogger(tmp_path, name="csv"), callbacks=[callback]
    )
    dirs = checkpoint_dirs(trainer)
    # The folder this run will write to, as Lightning resolves it inside fit ...
    assert dirs[0] == callback._ModelCheckpoint__resolve_ckpt_dir(trainer)
    assert dirs[0].endswith(os.path.join("version_1", "checkpoints"))
    # ... and the earlier auto-numbered run's folder, where the checkpoint to resume lives.
    assert find_last_good_checkpoint(dirs) == str(earlier / "last.ckpt")
    bare = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[ModelCheckpoint()])
    assert checkpoint_dirs(bare) == [os.path.join(str(tmp_path), "checkpoints")]


# --- out of memory -----------------------------------------------------------------------------
class OOMAboveOne(VJEPAModule):
    """Raises the CUDA allocator's error for micro-batches above one. CI has no GPU, so the
    error is simulated on the CPU; everything around it (Lightning, the CLI) is real."""

    max_batch = 1

    def training_step(self, batch, batch_idx):
        if batch.inputs.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().training_step(batch, batch_idx)


def _fit_args(oct_dataset, out, *extra):
    args = [
        "fit",
        "--config",
        str(TINY_RECIPE),
        f"--data.init_args.source={oct_dataset}/manifest.tsv",
    ]
    args += [f"--trainer.default_root_dir={out}", f"--checkpoint.dirpath={out}/ckpt"]
    return [*args, "--trainer.logger=false", "--trainer.limit_val_batches=0", *extra]


def test_gpu_out_of_memory_in_fit_stops_with_the_options(oct_dataset, tmp_path):
    with pytest.raises(SystemExit) as err:
        run_cli(_fit_args(oct_dataset, tmp_path, f"--model.class_path={__name__}.OOMAboveOne"))
    msg = str(err.value)
    assert isinstance(err.value.__cause__, torch.OutOfMemoryError)
    assert "out of GPU memory with data.batch_size=2" in msg and "Tried to allocate 2.00 GiB" in msg
    assert "--data.init_args.batch_size=1 --trainer.accumulate_grad_batches=2" in msg
    assert "--model.init_args.encoder.activation_checkpointing=true" in msg
    assert "--trainer.precision=bf16-mixed (now 32-true)" in msg
    assert "--find_micro_batch=true --global_batch_size=2" in msg


def test_oom_advice_keeps_the_global_batch_and_skips_what_is_already_on():
    msg = oom_message(
        MemorySettings(
            batch_size=9,
            accumulate_grad_batches=4,
            world_size=2,
            precision="bf16-mixed",
            activation_checkpointing=True,
        )
    )
    assert "--data.init_args.batch_size=3 --trainer.accumulate_grad_batches=12" in msg  # 9x4 = 3x12
    assert "bf16-mixed (now" not in msg and "activation_checkpointing" not in msg
    assert "--global_batch_size=72" in msg
    one = oom_message(MemorySettings(batch_size=1, accumulate_grad_batches=8))
    assert "already 1" in one and "--data.init_args.batch_size=" not in one


# --- micro-batch finder ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("limit", "global_batch", "world"),
    [(1, 64, 1), (5, 64, 1), (16, 64, 2), (100, 64, 4), (7, 48, 2), (13, 96, 1), (24, 24, 1)],
)
def test_micro_batch_plan_is_the_largest_divisor_that_fits_and_keeps_the_global_batch(
    limit, global_batch, world
):
    tried: list[int] = []

    def fits(b: int) -> bool:  # a fake device: batches up to `limit` fit
        tried.append(b)
        return b <= limit

    micro, accumulate = plan_micro_batch(fits, global_batch_size=global_batch, world_size=world)
    share = global_batch // world
    assert micro * world * accumulate == global_batch
    assert micro == max(d for d in divisors(share) if d <= limit)
    assert max(tried) <= share and len(tried) <= 2 * share.bit_length()


def test_micro_batch_plan_refuses_what_cannot_work():
    with pytest.raises(torch.OutOfMemoryError):
        plan_micro_batch(lambda b: False, global_batch_size=8)
    with pytest.raises(ValueError, match=r"--global_batch_size=10 .* \(4\)"):
        plan_micro_batch(lambda b: True, global_batch_size=10, world_size=4)


def test_finder_trials_run_real_steps_and_leave_the_model_as_it_was(oct_dataset, tmp_path):
    # The CUDA path on the CPU: the same throwaway-trainer trial, with OOM simulated above 1.
    cli = run_cli(
        _fit_args(oct_dataset, tmp_path, f"--model.class_path={__name__}.OOMAboveOne")[1:],
        run=False,
    )
    before = {k: v.clone() for k, v in cli.model.state_dict().items()}
    rng = torch.get_rng_state()
    fits = make_trial(cli.trainer, cli.model, cli.datamodule)
    assert fits(1) and not fits(2)
    assert plan_micro_batch(fits, global_batch_size=4) == (1, 4)
    after = cli.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng, torch.get_rng_state())


def test_finder_needs_the_global_batch_and_is_skipped_off_cuda(oct_dataset, tmp_path, caplog):
    with pytest.raises(SystemExit, match="--find_micro_batch=true needs --global_batch_size"):
        run_cli(_fit_args(oct_dataset, tmp_path, "--find_micro_batch=true"))
    with caplog.at_level(logging.WARNING, logger="fmtrain"):
        cli = run_cli(
            _fit_args(
                oct_dataset,
                tmp_path,
                "--find_micro_batch=true",
                "--global_batch_size=2",
                "--trainer.max_steps=1",
            )
        )
    assert any("skipped, the run is not on a CUDA device" in r.message for r in caplog.records)
    assert cli.trainer.global_step == 1 and cli.datamodule.batch_size == 2


# --- SIGKILL at random instants, then resume ----------------------------------------------------
STEP_FILE = re.compile(r"step(\d{7})\.ckpt")
RESUMED = re.compile(r"--resume: resuming from (\S+) \(global_step (\d+)\)")


def _launch(oct_dataset, tmp_path, run: int, max_steps: int) -> tuple[subprocess.Popen, Path]:
    cmd = [sys.executable, "-m", "fmtrain", "fit", "--config", str(TINY_RECIPE)]
    cmd += [f"--data.init_args.source={oct_dataset}/manifest.tsv", "--data.init_args.num_workers=0"]
    cmd += [f"--trainer.default_root_dir={tmp_path}", f"--checkpoint.dirpath={tmp_path}/ckpt"]
    cmd += ["--checkpoint.every_n_train_steps=1", f"--trainer.max_steps={max_steps}"]
    cmd += [
        f"--trainer.logger.init_args.save_dir={tmp_path}/run{run}",
        "--trainer.limit_val_batches=0",
    ]
    cmd += ["--resume=true"]
    log_path = tmp_path / f"run{run}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as out:
        # Own session: SIGKILL to the group takes the whole run down at once, as a lost node does.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True
        )
    return proc, log_path


def _newest_step_file(folder: Path) -> int:
    steps = [int(m.group(1)) for p in folder.glob("*.ckpt") if (m := STEP_FILE.fullmatch(p.name))]
    return max(steps, default=-1)


def _check_folder(folder: Path) -> dict[str, int]:
    """Every *.ckpt loads and has a real checkpoint name; returns each file's global_step."""
    steps = {}
    for path in folder.glob("*.ckpt"):
        assert path.name == "last.ckpt" or STEP_FILE.fullmatch(path.name), path.name
        steps[path.name] = torch.load(path, map_location="cpu", weights_only=False)["global_step"]
    return steps


@pytest.mark.slow
def test_sigkill_at_random_instants_leaves_loadable_checkpoints_and_resume_continues(
    oct_dataset, tmp_path
):
    seed = int(time.time())
    rng = random.Random(seed)
    # The killed launches aim at a step they cannot reach in their ~1 s, so each kill lands
    # mid-run however fast the machine is (a fixed small target was reached before the last
    # kill on a fast CI machine, leaving the final launch nothing to do); the final launch
    # then finishes a few steps past the newest checkpoint.
    folder, unreachable, kills = tmp_path / "ckpt", 100_000, 4
    resumed_from = [-1]  # global_step each launch resumed from (-1: started fresh)
    steps: dict[str, int] = {}  # file name -> global_step, as checked after the last kill
    observed = []
    for run in range(kills):
        proc, log_path = _launch(oct_dataset, tmp_path, run, unreachable)
        deadline = time.monotonic() + 60
        # Wait for a checkpoint written by *this* launch, then kill after a random delay.
        while _newest_step_file(folder) <= resumed_from[-1]:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.02)
        delay = rng.uniform(0.0, 1.0)
        time.sleep(delay)
        assert proc.poll() is None, f"run {run} finished before its kill (seed {seed})"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        text = log_path.read_text()
        if run == 0:
            assert "--resume: no loadable checkpoint in" in text and "starting fresh" in text, text[
                -3000:
            ]
        else:
            match = RESUMED.search(text)
            assert match and int(match.group(2)) == resumed_from[-1], (seed, text[-3000:])
            assert steps[Path(match.group(1)).name] == resumed_from[-1]  # the file held that step
        steps = _check_folder(folder)
        newest = max(steps.values())
        leftovers = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
        observed.append((run, round(delay, 2), newest, leftovers))
        assert newest > resumed_from[-1], (seed, observed)
        found = find_last_good_checkpoint(str(folder))  # the pick the next launch must make
        assert found is not None and steps[Path(found).name] == newest, (found, steps)
        resumed_from.append(newest)

    max_steps = resumed_from[-1] + 6
    proc, log_path = _launch(oct_dataset, tmp_path, kills, max_steps)
    assert proc.wait(timeout=120) == 0, log_path.read_text()[-3000:]
    text = log_path.read_text()
    match = RESUMED.search(text)
    assert match and int(match.group(2)) == resumed_from[-1], (seed, observed, text[-3000:])
    assert steps[Path(match.group(1)).name] == resumed_from[-1]
    final = torch.load(folder / "last.ckpt", weights_only=False)
    assert final["global_step"] == max_steps
    with (tmp_path / f"run{kills}" / "csv" / "metrics.csv").open() as f:
        header, *rows = [line.split(",") for line in f.read().splitlines()]
    steps = sorted({int(r[header.index("step")]) for r in rows if r[header.index("train/loss")]})
    assert steps == list(range(resumed_from[-1], max_steps)), (seed, observed, steps)
    print(
        f"seed {seed}; kills (run, delay s, newest step, leftovers): {observed}; "
        f"resumed from {resumed_from[1:]}"
    )
