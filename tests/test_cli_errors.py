"""A person's mistake ends a command in a line or two naming the key or file and the fix
(exit 2, no traceback); a bug, or any error under --debug / FMTRAIN_DEBUG=1, keeps its
traceback. The four cases a new user reported (issue 16) are reproduced through `main`."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest
from torch._utils import ExceptionWrapper

from fmtrain.cli import main
from fmtrain.cli.errors import explain_failure
from fmtrain.core.grid import TokenGrid
from fmtrain.methods import VJEPAModule
from tests.conftest import TINY_RECIPE
from tests.tiny_store import prepare_tiny_store

QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


def _fails(capsys, argv: list[str]) -> list[str]:
    """Run `fmtrain ARGV`; return the error's lines (from 'fmtrain CMD: ' on) after checking
    that it exited 2 without a traceback."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err[-2000:]
    assert "Traceback" not in err
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("fmtrain "))
    return lines[first:]


def _fit(tmp_path, *extra: str) -> list[str]:
    root = [f"--trainer.default_root_dir={tmp_path}", f"--checkpoint.dirpath={tmp_path}/ckpt"]
    return ["fit", "--config", str(TINY_RECIPE), *QUIET, *root, "--trainer.max_steps=1", *extra]


@pytest.fixture(scope="module")
def prepared(oct_dataset) -> str:
    return prepare_tiny_store(oct_dataset)


def test_indivisible_input_size_is_one_line_and_the_sizes_that_fit(capsys, tmp_path):
    lines = _fails(capsys, _fit(tmp_path, "--data.init_args.input_size=[8,30,32]"))
    assert len(lines) == 2, lines
    assert lines[0].startswith("fmtrain fit: error: data.input_size=[8, 30, 32] is not divisible")
    assert lines[1] == (
        "  fix: set data.init_args.input_size=[8,24,32] or [8,32,32] (whole patches of "
        "[2,8,8]), or change model.init_args.patch_size"
    )


def test_a_wrong_prepared_path_names_the_key_and_the_path(capsys, tmp_path):
    missing = tmp_path / "no_such_store"
    args = ["--data.init_args.source=null", f"--data.init_args.prepared={missing}"]
    lines = _fails(capsys, _fit(tmp_path, *args))  # raised in Lightning's fit (prepare_data)
    assert len(lines) == 2, lines
    assert f"data.init_args.prepared={missing}: no complete prepared dataset" in lines[0]
    assert "fix: point data.init_args.prepared at a folder written by `fmtrain prepare`" in lines[1]


def test_a_store_prepared_at_another_size_says_which_key_and_how_to_prepare(
    capsys, tmp_path, prepared
):
    args = ["--data.init_args.source=null", f"--data.init_args.prepared={prepared}"]
    lines = _fails(capsys, _fit(tmp_path, *args, "--data.init_args.input_size=[8,16,32]"))
    assert len(lines) == 2, lines
    assert f"the prepared dataset at {prepared} has size [8, 32, 32]" in lines[0]
    assert "data.input_size=[8, 16, 32]" in lines[0]
    assert (
        f"to train on {prepared} as prepared, set data.init_args.input_size=[8,32,32]" in lines[1]
    )
    assert (
        "`fmtrain prepare SOURCE NEW_DIR --size [8,16,32] --spacing [0.75,0.06,0.19]`" in lines[1]
    )


def test_a_missing_labels_file_for_probe_names_the_file(capsys, tmp_path, prepared):
    labels = tmp_path / "labels_that_are_not_here.tsv"
    overrides = ["--data.init_args.source=null", f"--data.init_args.prepared={prepared}"]
    argv = ["probe", str(TINY_RECIPE), "--labels", str(labels), "--test_split", "val"]
    lines = _fails(capsys, argv + [f"--overrides+={o}" for o in overrides])
    assert len(lines) <= 2, lines
    assert lines[0].startswith("fmtrain probe: ") and str(labels) in lines[0]


def test_debug_anywhere_or_in_the_environment_shows_the_traceback(monkeypatch, tmp_path):
    bad = _fit(tmp_path, "--data.init_args.input_size=[8,30,32]")
    for argv in (["--debug", *bad], [*bad, "--debug"]):
        with pytest.raises(ValueError, match="not divisible"):
            main(argv)
        assert "FMTRAIN_DEBUG" not in os.environ  # set for the command only
    monkeypatch.setenv("FMTRAIN_DEBUG", "1")
    with pytest.raises(ValueError, match="not divisible"):
        main(bad)


class Broken(VJEPAModule):
    """A method whose constructor has a bug (not a person's mistake)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = {}["no such setting"]


def test_a_bug_keeps_its_traceback(tmp_path):
    # the parser wraps the constructor's error; what escapes main still carries the bug
    with pytest.raises(ValueError) as raised:
        main(_fit(tmp_path, f"--model.class_path={__name__}.Broken"))
    assert isinstance(raised.value.__cause__, KeyError)


def _bad_grid() -> None:
    TokenGrid.from_sizes((8, 30), (8, 8))


def test_an_error_raised_in_a_loader_worker_is_said_as_raised():
    try:
        _bad_grid()
    except ValueError:  # torch's own wrapper, as a DataLoader worker sends it back
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ValueError) as raised:
        wrapped.reraise()
    message = explain_failure(raised.value, "fit", [])
    assert message is not None and "Traceback" not in message
    assert message.startswith("fmtrain fit: error: data.input_size=[8, 30] is not divisible")


def test_an_error_raised_in_a_process_pool_is_said_as_raised():
    with ProcessPoolExecutor(1) as pool, pytest.raises(ValueError) as raised:
        pool.submit(_bad_grid).result()
    message = explain_failure(raised.value, "prepare", [])
    assert message is not None
    assert message.splitlines()[0].startswith("fmtrain prepare: error: data.input_size=[8, 30]")
    assert len(message.splitlines()) == 1  # a data tool gets no recipe-key fix


def test_a_missing_file_is_named_with_the_option_that_gave_it(tmp_path):
    path = tmp_path / "absent.tsv"
    with pytest.raises(FileNotFoundError) as raised:
        path.open()
    argv = ["recipe.yaml", "--labels", str(path)]
    assert explain_failure(raised.value, "probe", argv) == (
        f"fmtrain probe: error: --labels {path}: no such file or directory"
    )
    argv = ["recipe.yaml", f"--labels={path}"]
    assert explain_failure(raised.value, "probe", argv) == (
        f"fmtrain probe: error: --labels {path}: no such file or directory"
    )


def test_an_error_in_torch_itself_is_a_bug():
    import torch

    with pytest.raises(RuntimeError) as raised:
        torch.zeros(2, 3) @ torch.zeros(2, 3)
    assert explain_failure(raised.value, "fit", []) is None
