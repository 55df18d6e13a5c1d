"""`PJRTAccelerator` counts the devices of the PJRT backend this process has, where
Lightning's `tpu` accelerator asks a TPU VM's metadata server; and `check` accepts an XLA
recipe on a machine whose torch-xla has a device."""

import pytest

pytest.importorskip(
    "torch_xla", reason="torch-xla is not installed here: `make test-xla` runs these tests"
)

import torch

from fmtrain.check.runner import run_check
from fmtrain.engine.xla import PJRTAccelerator
from tests.conftest import TINY_RECIPE
from tests.xla.test_xla_fit import XLA_RECIPE


def test_the_cpu_backend_counts_its_devices_and_lightning_gets_them(monkeypatch):
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.setenv("CPU_NUM_DEVICES", "4")
    assert PJRTAccelerator.auto_device_count() == 4 and PJRTAccelerator.is_available()
    assert PJRTAccelerator.get_parallel_devices(4) == [torch.device("xla", i) for i in range(4)]
    assert PJRTAccelerator.get_parallel_devices("2,") == [torch.device("xla", 2)]
    assert PJRTAccelerator.parse_devices("1") == 1
    with pytest.raises(ValueError, match=r"trainer.devices=3 on XLA with 4 device\(s\)"):
        PJRTAccelerator.parse_devices(3)  # XLA runs on one device or on all
    with pytest.raises(ValueError, match="0 <= i < 4"):
        PJRTAccelerator.parse_devices([4])


def test_check_accepts_the_xla_recipe_where_torch_xla_has_a_device(oct_dataset, tmp_path):
    args = ["--config", str(XLA_RECIPE), f"--data.init_args.source={oct_dataset}/manifest.tsv"]
    args += [f"--trainer.default_root_dir={tmp_path}"]
    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))
    assert not report.errors, [str(p) for p in report.errors]
    assert report.stages  # the step ran (on the CPU: check builds for this machine)
