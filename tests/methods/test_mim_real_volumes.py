"""MiM at 64^3 on real CT/MR files: nilearn's MNI152 templates (MR-derived NIfTI) and
pydicom-data's enhanced CT (DICOM), through `prepare`, `check` and a short `fit`."""

from __future__ import annotations

import shutil
from pathlib import Path

import nilearn
import pytest
from pydicom.data import get_testdata_file

from fmtrain.check.runner import run_check
from fmtrain.cli import run_cli
from fmtrain.data.volumes.prepared import PreparedDataset
from tests.conftest import REPO

RECIPE = REPO / "recipes" / "ct_mim_spark_demo.yaml"
TEMPLATES = Path(nilearn.__file__).parent / "datasets" / "data"


@pytest.fixture(scope="module")
def real_volumes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ct_mr")
    for name in ("t1", "gm", "wm"):
        src = TEMPLATES / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
        shutil.copy(src, folder / src.name)
    shutil.copy(get_testdata_file("eCT_Supplemental.dcm"), folder / "eCT_Supplemental.dcm")
    return folder


@pytest.mark.slow
def test_real_ct_and_mr_through_prepare_check_and_fit(real_volumes, tmp_path):
    source = [f"--data.init_args.source={real_volumes}"]
    source += [f"--data.init_args.prepared={tmp_path / 'prepared'}"]
    source += ["--data.init_args.split_fractions={train: 0.6, val: 0.2, test: 0.2}"]
    report = run_check(
        str(RECIPE), [*source, f"--trainer.default_root_dir={tmp_path}"], str(tmp_path / "check")
    )
    assert not report.errors, [str(p) for p in report.errors]
    dataset = PreparedDataset(str(tmp_path / "prepared"))
    assert dataset.size == (64, 64, 64)
    splits = sum(len(dataset.split(s)) for s in ("train", "val", "test"))
    assert splits == 4  # three templates and the CT: nothing skipped
    args = ["fit", "--config", str(RECIPE), *source, "--trainer.max_steps=2"]
    args += ["--trainer.val_check_interval=2", "--trainer.logger=false"]
    args += [f"--trainer.default_root_dir={tmp_path}", f"--checkpoint.dirpath={tmp_path}/ckpt"]
    cli = run_cli(args)
    assert cli.trainer.global_step == 2
    assert (tmp_path / "ckpt" / "last.ckpt").exists()
