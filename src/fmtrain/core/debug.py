"""Whether the person running fmtrain asked for full tracebacks (`--debug`, FMTRAIN_DEBUG=1).

The `fmtrain` command sets the variable for `--debug`, so the parts that catch errors to
report them in a line (the command's boundary, `check`) and the processes a run starts all
read the same switch.
"""

from __future__ import annotations

import os

__all__ = ["DEBUG_ENV", "debug_requested"]

DEBUG_ENV = "FMTRAIN_DEBUG"


def debug_requested() -> bool:
    """Whether FMTRAIN_DEBUG is set to anything but "", "0", "false" or "no"."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
