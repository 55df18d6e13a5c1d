"""Shared fixtures: a small synthetic OCT dataset written as real DICOM, once per session."""

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "tests" / "recipes" / "oct_vjepa_tiny.yaml"


@pytest.fixture(scope="session")
def oct_dataset(tmp_path_factory) -> Path:
    from fmtrain.data.generate import generate_oct_dataset

    root = tmp_path_factory.mktemp("oct")
    generate_oct_dataset(root, num_participants=12, scale=0.1, seed=0, workers=1)
    return root


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
