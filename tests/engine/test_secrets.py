"""Credentials in `data.init_args.storage_options` reach the storage client and nothing else:
not the saved config, not the logs, not what `check` and `fit` print. Against a real S3
server on loopback (moto), which takes any key pair, so a recognisable secret can be used."""

import json

import pytest
import s3fs
from jsonargparse import Namespace

from fmtrain.check.runner import run_check
from fmtrain.cli import run_cli
from fmtrain.engine.secrets import REDACTED, is_secret_key, redact_secrets
from tests.conftest import TINY_RECIPE

SECRET = "fmtrain-secret-9b7e21"


@pytest.mark.parametrize(
    "name", ["key", "secret", "token", "password", "aws_secret_access_key", "session_token",
             "account_key", "sas_token", "credentials", "client_secret"],
)  # fmt: skip
def test_credential_names_are_secret(name):
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name", ["endpoint_url", "region_name", "project", "anon", "client_kwargs", "keys_file_count",
             "key_prefix", "token_uri", "monkey"],
)  # fmt: skip
def test_other_names_are_not(name):
    assert not is_secret_key(name)


def test_redaction_reaches_every_depth_and_keeps_public_token_modes():
    config = Namespace(
        data=Namespace(
            init_args=Namespace(
                storage_options={
                    "key": "AKIA123",
                    "secret": SECRET,
                    "client_kwargs": {"endpoint_url": "http://x", "aws_session_token": SECRET},
                    "token": "anon",
                },
                batch_size=2,
            )
        ),
        loggers=[{"token": SECRET}],
    )
    out = redact_secrets(config)
    options = out.data.init_args.storage_options
    assert options == {
        "key": REDACTED,
        "secret": REDACTED,
        "client_kwargs": {"endpoint_url": "http://x", "aws_session_token": REDACTED},
        "token": "anon",
    }
    assert out.data.init_args.batch_size == 2 and out.loggers == [{"token": REDACTED}]
    assert config.data.init_args.storage_options["secret"] == SECRET  # the original is kept


@pytest.mark.slow
def test_check_and_fit_never_print_or_write_the_credentials(
    oct_dataset, s3_bucket, tmp_path, capfd
):
    url, options = s3_bucket
    s3fs.S3FileSystem(**options).put(
        f"{oct_dataset}/", f"{url.removeprefix('s3://')}/raw/", recursive=True
    )
    secret_options = {**options, "key": "AKIAFMTRAINTEST", "secret": SECRET}
    args = [
        f"--data.init_args.source={url}/raw/manifest.tsv",
        f"--data.init_args.prepared={url}/prepared",
        f"--data.init_args.storage_options={json.dumps(secret_options)}",
        "--data.init_args.num_workers=0",
        f"--trainer.default_root_dir={tmp_path}/run",
        f"--trainer.logger.init_args.save_dir={tmp_path}/run",
        f"--checkpoint.dirpath={url}/checkpoints",
    ]
    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))
    assert not report.errors, report.problems
    run_cli(["fit", "--config", str(TINY_RECIPE), *args, "--trainer.max_steps=3"])
    printed = capfd.readouterr()  # the process's stdout and stderr, Python's and C's
    assert "finished at step 3" in printed.out + printed.err
    assert SECRET not in printed.out + printed.err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    configs = [p for p in written if p.name == "config.yaml"]
    assert configs and all(REDACTED in p.read_text() for p in configs)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
    # the checkpoints reached the bucket with the same credentials (the data's options)
    fs = s3fs.S3FileSystem(**options)
    assert fs.exists(f"{url.removeprefix('s3://')}/checkpoints/step0000003.ckpt.complete")
