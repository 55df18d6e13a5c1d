import subprocess
import sys

import fmtrain.data.video as video


def test_every_public_name_resolves():
    for name in video.__all__:
        assert getattr(video, name).__name__ == name


def test_package_import_does_not_load_pyav():
    # a fresh interpreter: removing PyAV's extension modules from this one is not safe
    code = "import sys, fmtrain.data.video; print('av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
