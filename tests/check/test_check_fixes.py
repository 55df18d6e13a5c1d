"""Each error `check` reports carries the fix for its kind, not a generic one (issue 16: a
size mismatch with a prepared store was told to "point data.source / data.prepared at
existing data"). The errors are raised by the real code paths, through `run_check`."""

from __future__ import annotations

import pytest

from fmtrain.check.runner import run_check
from tests.conftest import TINY_RECIPE
from tests.tiny_store import prepare_tiny_store


@pytest.fixture(scope="module")
def prepared(oct_dataset) -> str:
    return prepare_tiny_store(oct_dataset)


def _only_error(tmp_path, *overrides: str):
    args = [f"--trainer.default_root_dir={tmp_path}", *overrides]
    report = run_check(str(TINY_RECIPE), args, str(tmp_path / "check"))
    assert len(report.errors) == 1, [str(p) for p in report.problems]
    return report.errors[0]


def test_a_store_of_another_size_is_fixed_by_its_key_or_by_preparing_again(tmp_path, prepared):
    store = ["--data.init_args.source=null", f"--data.init_args.prepared={prepared}"]
    error = _only_error(tmp_path, *store, "--data.init_args.input_size=[8,16,32]")
    assert error.key == "data.init_args.input_size"
    assert "set data.init_args.input_size=[8,32,32]" in error.fix  # the store's own size
    assert "fmtrain prepare SOURCE NEW_DIR --size [8,16,32] --spacing [0.75,0.06,0.19]" in error.fix
    assert "point data.source" not in error.fix


def test_an_indivisible_size_gets_the_sizes_that_fit(tmp_path):
    error = _only_error(tmp_path, "--data.init_args.input_size=[8,30,32]")
    assert error.key == "data.init_args.input_size" and error.value == "[8, 30, 32]"
    assert error.fix.startswith("set data.init_args.input_size=[8,24,32] or [8,32,32]")


def test_missing_data_and_a_misspelt_split_name_their_own_keys(tmp_path, oct_dataset, prepared):
    nowhere = tmp_path / "nowhere"
    error = _only_error(
        tmp_path, "--data.init_args.source=null", f"--data.init_args.prepared={nowhere}"
    )
    assert error.key == "data.init_args.prepared" and str(nowhere) in error.fix
    assert "`fmtrain prepare`" in error.fix

    error = _only_error(tmp_path, f"--data.init_args.source={tmp_path}/none.tsv")
    assert error.key == "data.init_args.source"
    assert "existing manifest, file list or folder" in error.fix

    store = ["--data.init_args.source=null", f"--data.init_args.prepared={prepared}"]
    error = _only_error(tmp_path, *store, "--data.init_args.train_split=training")
    assert error.key == "data.init_args.train_split"
    assert error.fix == "set data.init_args.train_split to a split that has samples (train, val)"


def test_a_missing_relative_path_says_it_was_read_from_the_current_directory(tmp_path, monkeypatch):
    from fmtrain.check.fixes import fix_for
    from fmtrain.data.volumes.catalog import read_catalog

    monkeypatch.chdir(tmp_path)
    for path, relative in (("scans/manifest.tsv", True), (str(tmp_path / "scans"), False)):
        with pytest.raises(Exception) as err:  # the real error the catalog raises
            read_catalog(path)
        found = fix_for(str(err.value))
        assert found is not None and found.key == "data.init_args.source"
        note = f"relative paths are read from the current directory, {tmp_path}"
        assert (note in found.fix) is relative, found.fix
