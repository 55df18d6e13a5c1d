"""Fixtures of the volume reader tests."""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file


@pytest.fixture(scope="module")
def emri_reference() -> np.ndarray:
    return pydicom.dcmread(get_testdata_file("emri_small.dcm")).pixel_array


@pytest.fixture
def memory_root():
    fs = fsspec.filesystem("memory")
    root = f"/fmtrain-test-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)
