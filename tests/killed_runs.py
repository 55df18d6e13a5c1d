"""Runs killed as a lost machine kills them, for the resume tests (GCS, XLA): `fmtrain fit` in
its own process group, the checkpoints that count, and a SIGKILL once one exists."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fmtrain.core.storage import filesystem, is_remote

STEP_FILE = re.compile(r"step(\d{7})\.ckpt")


def launch_fit(args: list[str], log_path: Path) -> subprocess.Popen:
    """`fmtrain fit` with `args` (configs included), its output in `log_path`."""
    cmd = [sys.executable, "-m", "fmtrain", "fit", *args]
    with log_path.open("w") as out:
        # its own session: SIGKILL to the group takes the run down at once, as a lost VM does
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def committed_steps(folder: str, options: dict | None = None) -> list[int]:
    """Steps of the `stepNNNNNNN.ckpt` checkpoints in `folder` that count: on local disk every
    file under its final name (saves are renamed into place), in a bucket those with a
    commit marker."""
    fs, path = filesystem(folder, options)
    fs.invalidate_cache()
    names = {p.rstrip("/").rsplit("/", 1)[1] for p in fs.ls(path)} if fs.exists(path) else set()
    marked = {n for n in names if not is_remote(folder) or f"{n}.complete" in names}
    return sorted(int(m.group(1)) for n in marked if (m := STEP_FILE.fullmatch(n)))


def kill_once_committed(
    proc: subprocess.Popen,
    log_path: Path,
    committed: Callable[[], list[int]],
    timeout_s: float,
    settle_s: float,
) -> None:
    """Wait (at most `timeout_s`) until `committed()` lists a checkpoint, let the run go on for
    `settle_s` (a save possibly half done), then SIGKILL its process group."""
    deadline = time.monotonic() + timeout_s
    while not committed():
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.05)
    time.sleep(settle_s)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
