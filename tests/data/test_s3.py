"""Object storage end to end, against a real S3 server on loopback (moto's server mode):
raw DICOMs in a bucket -> `prepare` (spawned worker processes) -> zarr in the bucket ->
a few training steps read straight from the bucket."""

import json

import numpy as np
import pytest
import s3fs

from fmtrain.cli import run_cli
from fmtrain.data.volumes.prepare import prepare_dataset
from fmtrain.data.volumes.prepared import PreparedDataset
from tests.conftest import TINY_RECIPE
from tests.data.buckets import assert_bucket_read_equals_local_read, upload


def test_read_volume_from_a_bucket_equals_the_local_read(oct_dataset, s3_bucket, tmp_path):
    url, options = s3_bucket
    assert_bucket_read_equals_local_read(oct_dataset, url, options, tmp_path)


@pytest.mark.slow
def test_prepare_into_a_bucket_and_train_from_it(oct_dataset, s3_bucket, tmp_path):
    url, options = s3_bucket
    upload(oct_dataset, f"{url}/raw", options)
    prepared = f"{url}/prepared"
    dataset = prepare_dataset(
        f"{url}/raw/manifest.tsv",
        prepared,
        spacing=(0.75, 0.06, 0.19),
        size=(8, 32, 32),
        split_fractions={"train": 0.75, "val": 0.25},
        workers=2,
        storage_options=options,
        cache_dir=str(tmp_path / "raw-cache"),
        progress=False,
    )
    fs = s3fs.S3FileSystem(**options)
    listing = fs.ls(prepared.removeprefix("s3://"))
    assert {p.rsplit("/", 1)[1] for p in listing} >= {
        "prepare.json",
        "splits.json",
        "samples.json",
        "summary.json",
        "volumes.zarr",
        "progress",
    }
    assert dataset.summary["counts"]["written"] == 12
    reopened = PreparedDataset(prepared, options)
    assert len(reopened.split("train")) + len(reopened.split("val")) == 12

    cli = run_cli(
        [
            "fit",
            "--config",
            str(TINY_RECIPE),
            "--data.init_args.source=null",
            f"--data.init_args.prepared={prepared}",
            f"--data.init_args.storage_options={json.dumps(options)}",
            "--data.init_args.num_workers=0",
            "--trainer.max_steps=3",
            f"--trainer.default_root_dir={tmp_path}",
            f"--checkpoint.dirpath={tmp_path}/ckpt",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    assert cli.trainer.global_step == 3
    assert np.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
