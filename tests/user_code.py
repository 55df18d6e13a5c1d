"""What the tests of user code written outside fmtrain share: the user's module in a folder
on `sys.path` (and on PYTHONPATH, for subprocesses), and proof that fmtrain was not touched."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO


@contextlib.contextmanager
def user_module(folder: Path, name: str, source: str) -> Iterator[Path]:
    """`name`.py holding `source` in `folder`, importable while the block runs."""
    (folder / f"{name}.py").write_text(source)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        mp.setenv("PYTHONPATH", str(folder), prepend=os.pathsep)
        yield folder
        sys.modules.pop(name, None)


@contextlib.contextmanager
def fmtrain_untouched() -> Iterator[None]:
    """Fails after the block if any file under src/ changed (plugging in user code must not
    need, or make, a change to fmtrain)."""

    def status() -> str:
        cmd = ["git", "status", "--porcelain", "--", "src"]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True).stdout

    before = status()
    yield
    assert status() == before
