"""Shared fixtures: small synthetic OCT (real DICOM) and ECG + PPG (real WFDB and .vital)
datasets, and a real S3-compatible server (moto in server mode) on loopback, once per
session."""

import logging
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "tests" / "recipes" / "oct_vjepa_tiny.yaml"
TINY_MAE_RECIPE = REPO / "tests" / "recipes" / "oct_mae_tiny.yaml"
TINY_SIGNALS_RECIPE = REPO / "tests" / "recipes" / "signals_msm_tiny.yaml"


@pytest.fixture(scope="session")
def oct_dataset(tmp_path_factory) -> Path:
    from fmtrain.data.synthetic.generate import generate_oct_dataset

    root = tmp_path_factory.mktemp("oct")
    generate_oct_dataset(root, num_participants=12, scale=0.1, seed=0, workers=1)
    return root


@pytest.fixture(scope="session")
def signal_dataset(tmp_path_factory) -> Path:
    """12 participants x 20 s of synthetic ECG + PPG: manifest.tsv, labels.tsv, recordings."""
    from fmtrain.data.synthetic.signals import generate_signal_dataset

    root = tmp_path_factory.mktemp("signals")
    generate_signal_dataset(root, num_participants=12, duration_s=20, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP server on 127.0.0.1 (moto's server mode): the bytes go over a socket
    through s3fs/aiobotocore, exactly as they would to a cloud bucket. Yields the fsspec
    storage options that reach it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1"},
    }
    yield options
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh, empty bucket per test; returns (bucket URL, storage options)."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server)
    name = "fmtrain-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    fs.call_s3("create_bucket", Bucket=name)
    return f"s3://{name}", s3_server


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
