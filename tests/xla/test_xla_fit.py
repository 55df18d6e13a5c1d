"""The XLA path run for real (torch-xla on XLA's CPU backend here, a TPU in production): the
tiny V-JEPA recipe in bf16 on the XLA device, checkpoints written by fmtrain's atomic
checkpoint IO to a local folder and to a bucket on the loopback GCS server, the run killed
with SIGKILL and resumed. Each run compiles its graphs first (about a minute here)."""

import json
import re
from pathlib import Path

import pytest

pytest.importorskip(
    "torch_xla", reason="torch-xla is not installed here: `make test-xla` runs these tests"
)

import torch

from fmtrain.core.storage import filesystem
from fmtrain.engine.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_RECIPE
from tests.killed_runs import committed_steps, kill_once_committed, launch_fit

XLA_RECIPE = Path(__file__).with_name("recipe_xla.yaml")
RESUMED = re.compile(r"--resume: resuming from (\S+) \(global_step (\d+)\)")


def _assert_bf16_weights(state_dict: dict) -> None:
    """Trained in bf16 on the device: every float weight, copied back as float32, has the
    low 16 bits of a bf16 value zero (a float32 run would leave them set)."""
    weights = [v for v in state_dict.values() if v.is_floating_point()]
    assert weights and all(v.device.type == "cpu" for v in weights)
    assert all(torch.isfinite(v).all() for v in weights)
    low_bits = sum(int((v.float().view(torch.int32) & 0xFFFF).ne(0).sum()) for v in weights)
    assert low_bits == 0, f"{low_bits} weight(s) are not bf16 values: the run was not in bf16"


def _fit_kill_resume(folder: str, options: dict | None, tmp_path: Path, oct_dataset: Path):
    args = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += ["--data.init_args.num_workers=0", f"--trainer.default_root_dir={tmp_path}"]
    args += [f"--trainer.logger.init_args.save_dir={tmp_path}", f"--checkpoint.dirpath={folder}"]
    args += ["--checkpoint.every_n_train_steps=1", "--trainer.limit_val_batches=0"]
    args += ["--resume=true"]
    if options:
        args.append(f"--data.init_args.storage_options={json.dumps(options)}")

    args = ["--config", str(TINY_RECIPE), "--config", str(XLA_RECIPE), *args]
    proc = launch_fit([*args, "--trainer.max_steps=100000"], tmp_path / "run0.log")
    steps = lambda: committed_steps(folder, options)  # noqa: E731
    # compiling the step's graphs comes first
    kill_once_committed(proc, tmp_path / "run0.log", steps, timeout_s=400, settle_s=1.0)
    text = (tmp_path / "run0.log").read_text()
    assert "XLA" in text or "TPU" in text, text[-3000:]  # Lightning's device line
    newest = max(steps())

    proc = launch_fit([*args, f"--trainer.max_steps={newest + 2}"], tmp_path / "run1.log")
    assert proc.wait(timeout=500) == 0, (tmp_path / "run1.log").read_text()[-3000:]
    text = (tmp_path / "run1.log").read_text()
    resumed = RESUMED.search(text)
    assert resumed and int(resumed.group(2)) >= newest, text[-3000:]
    last = AtomicCheckpointIO(options).load_checkpoint(f"{folder}/last.ckpt", weights_only=False)
    assert last["global_step"] == newest + 2 or last["global_step"] == int(resumed.group(2)) + 2
    _assert_bf16_weights(last["state_dict"])
    moments = [t for s in last["optimizer_states"][0]["state"].values() for t in s.values()]
    assert moments and all(t.device.type == "cpu" for t in moments if torch.is_tensor(t))
    fs, path = filesystem(folder, options)
    assert not [p for p in fs.ls(path) if p.endswith(".tmp")]  # no half-written leftovers
    return last


@pytest.mark.slow
def test_bf16_fit_on_xla_checkpoints_locally_and_resumes_after_a_kill(oct_dataset, tmp_path):
    _fit_kill_resume(str(tmp_path / "ckpt"), None, tmp_path, oct_dataset)


@pytest.mark.slow
def test_bf16_fit_on_xla_checkpoints_to_gcs_and_resumes_after_a_kill(
    oct_dataset, gcs_bucket, tmp_path
):
    url, options = gcs_bucket
    folder = f"{url}/checkpoints"
    _fit_kill_resume(folder, options, tmp_path, oct_dataset)
    fs, path = filesystem(folder, options)
    marker = json.loads(fs.cat_file(f"{path}/last.ckpt.complete"))
    assert marker["size"] == fs.size(f"{path}/last.ckpt")  # committed by fmtrain's IO
