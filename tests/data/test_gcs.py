"""Google Cloud Storage end to end, against a real GCS server on loopback (fake-gcs-server,
the Go binary bundled in its wheel, over HTTP through gcsfs): the set S3 has — read DICOMs,
prepare into a bucket, train from it, checkpoints with their commit markers, kill and resume,
`check`'s writability probe — and an AI-READI release as published, in a bucket, through
prepare, check and fit with every file read. Credentials and the endpoint reach gcsfs through
`data.init_args.storage_options` only."""

import json
import re
from io import BytesIO
from pathlib import Path

import gcsfs
import pytest
import torch

from fmtrain.check.runner import run_check
from fmtrain.cli import run_cli
from fmtrain.data.volumes.prepared import PreparedDataset
from fmtrain.engine.checkpoint_io import AtomicCheckpointIO
from tests.conftest import TINY_RECIPE
from tests.data.buckets import assert_bucket_read_equals_local_read, upload
from tests.data.test_ai_readi_manifest import prepare_tiny, write_release
from tests.killed_runs import committed_steps, kill_once_committed, launch_fit


def _bucket_args(url: str, options: dict, tmp_path: Path) -> list[str]:
    """Overrides that put everything a run writes, but its local logs, in the bucket."""
    return [
        f"--data.init_args.storage_options={json.dumps(options)}",
        f"--data.init_args.prepared={url}/prepared",
        f"--checkpoint.dirpath={url}/checkpoints",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]


def test_read_dicom_from_a_gcs_bucket_equals_the_local_read(oct_dataset, gcs_bucket, tmp_path):
    url, options = gcs_bucket
    assert_bucket_read_equals_local_read(oct_dataset, url, options, tmp_path)


@pytest.mark.slow
def test_an_ai_readi_release_in_gcs_prepares_checks_and_fits_with_every_file(
    oct_dataset, gcs_bucket, tmp_path
):
    url, options = gcs_bucket
    write_release(oct_dataset, tmp_path / "release")
    devices = {p.name for p in (tmp_path / "release/retinal_oct/structural_oct").iterdir()}
    assert len(devices) == 4, devices  # the release's four device folders
    upload(tmp_path / "release", f"{url}/OCTdata", options)
    source = f"--data.init_args.source={url}/OCTdata/manifest.tsv"
    args = [source, *_bucket_args(url, options, tmp_path), "--data.init_args.num_workers=0"]

    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))
    assert not report.errors, "\n".join(str(p) for p in report.problems)

    cli = run_cli(["fit", "--config", str(TINY_RECIPE), *args, "--trainer.max_steps=3"])
    assert cli.trainer.global_step == 3
    fs = gcsfs.GCSFileSystem(**options)
    summary = json.loads(fs.cat_file(f"{url.removeprefix('gs://')}/prepared/summary.json"))
    assert summary["counts"]["written"] == 12 and summary["counts"]["skipped"] == 0
    assert summary["unread_manifest_hints"] == {"width": 1}
    checkpoint = f"{url}/checkpoints/step0000003.ckpt"
    marker = json.loads(fs.cat_file(checkpoint.removeprefix("gs://") + ".complete"))
    assert marker == {"size": fs.size(checkpoint.removeprefix("gs://")), "global_step": 3}
    loaded = AtomicCheckpointIO(options).load_checkpoint(checkpoint, weights_only=False)
    assert loaded["global_step"] == 3


def test_check_probes_writing_to_gcs_with_the_data_storage_options(
    oct_dataset, gcs_bucket, tmp_path
):
    url, options = gcs_bucket
    base = [f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    base += [f"--trainer.default_root_dir={tmp_path}"]
    base += [f"--data.init_args.storage_options={json.dumps(options)}"]
    report = run_check(
        str(TINY_RECIPE), [*base, f"--checkpoint.dirpath={url}/ckpt"], str(tmp_path / "a")
    )
    assert not [p for p in report.errors if p.category == "storage"], report.problems
    assert gcsfs.GCSFileSystem(**options).ls(url.removeprefix("gs://")) == []  # probe removed
    report = run_check(
        str(TINY_RECIPE),
        [*base, "--checkpoint.dirpath=gs://no-such-bucket-fmtrain/ckpt"],
        str(tmp_path / "b"),
    )
    hits = [p for p in report.errors if p.key == "checkpoint.dirpath"]
    assert hits and "no-such-bucket-fmtrain" in hits[0].message, report.problems


@pytest.mark.slow
def test_kill_mid_run_and_resume_from_checkpoints_in_gcs(oct_dataset, gcs_bucket, tmp_path):
    url, options = gcs_bucket
    dataset = prepare_tiny(
        f"{oct_dataset}/manifest.tsv",
        f"{url}/prepared",
        split_fractions={"train": 0.75, "val": 0.25},
        storage_options=options,
    )
    assert dataset.summary["counts"]["written"] == 12
    reopened = PreparedDataset(f"{url}/prepared", options)
    assert len(reopened.split("train")) + len(reopened.split("val")) == 12
    args = [*_bucket_args(url, options, tmp_path), "--data.init_args.num_workers=0"]
    args += ["--checkpoint.every_n_train_steps=1", "--trainer.limit_val_batches=0"]
    args += ["--resume=true"]
    fs = gcsfs.GCSFileSystem(**options)
    folder = f"{url.removeprefix('gs://')}/checkpoints"
    args = ["--config", str(TINY_RECIPE), *args]

    proc = launch_fit([*args, "--trainer.max_steps=100000"], tmp_path / "run0.log")
    steps = lambda: committed_steps(f"{url}/checkpoints", options)  # noqa: E731
    kill_once_committed(proc, tmp_path / "run0.log", steps, timeout_s=120, settle_s=0.5)
    newest = max(steps())
    if fs.exists(f"{folder}/last.ckpt.complete"):  # last.ckpt may be as new, or one step newer
        newest = max(newest, json.loads(fs.cat_file(f"{folder}/last.ckpt.complete"))["global_step"])
    # A save killed between the checkpoint's PUT and its marker's: never resumed from.
    fs.pipe_file(f"{folder}/step{newest + 50:07d}.ckpt", b"half a checkpoint")

    proc = launch_fit([*args, f"--trainer.max_steps={newest + 2}"], tmp_path / "run1.log")
    assert proc.wait(timeout=180) == 0, (tmp_path / "run1.log").read_text()[-3000:]
    text = (tmp_path / "run1.log").read_text()
    resumed = re.search(
        rf"--resume: resuming from {url}/checkpoints/(\S+) \(global_step (\d+)\)", text
    )
    assert resumed and int(resumed.group(2)) == newest, text[-3000:]
    assert resumed.group(1) in (f"step{newest:07d}.ckpt", "last.ckpt")
    assert f"step{newest + 50:07d}.ckpt" in text and "commit marker" in text  # named, skipped
    last = AtomicCheckpointIO(options).load_checkpoint(
        f"{url}/checkpoints/last.ckpt", weights_only=False
    )
    assert last["global_step"] == newest + 2
    weights = [v for v in last["state_dict"].values() if v.is_floating_point()]
    assert weights and all(torch.isfinite(v).all() for v in weights)


def test_a_commit_marker_is_judged_against_the_object_as_it_is_now(gcs_bucket):
    """fsspec shares one filesystem per bucket in a process and caches its listings: after a
    listing, a checkpoint replaced by another process (the run being resumed) must not be
    judged by the size listed before."""
    url, options = gcs_bucket
    io = AtomicCheckpointIO(options)
    io.save_checkpoint({"global_step": 1, "w": torch.zeros(4)}, f"{url}/ckpt/last.ckpt")
    path = f"{url.removeprefix('gs://')}/ckpt/last.ckpt"
    assert gcsfs.GCSFileSystem(**options).ls(path.rsplit("/", 1)[0])  # the listing is cached
    # another process replaces it, by the commit protocol, through its own filesystem
    other_process = gcsfs.GCSFileSystem(**options, skip_instance_cache=True)
    buffer = BytesIO()
    torch.save({"global_step": 2, "w": torch.zeros(4096)}, buffer)
    other_process.rm(f"{path}.complete")
    other_process.pipe_file(path, buffer.getvalue())
    record = {"size": len(buffer.getvalue()), "global_step": 2}
    other_process.pipe_file(f"{path}.complete", json.dumps(record).encode())
    assert io.load_checkpoint(f"{url}/ckpt/last.ckpt", weights_only=False)["global_step"] == 2
