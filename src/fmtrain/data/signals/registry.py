"""Which function reads which signal format: a registry keyed by file suffix.

A reader is a function `reader(path, **wanted) -> Recording` that takes the local path and
any of the keywords it declares among ``channels``, ``rate`` and ``waveform_group``
(`read_recording` passes only those). A reader refuses a file with a `SignalReadError` that
names it; anything else it raises is reported as ``unexpected_error`` for that file.

Readers are named by ``"module:function"`` (or ``"module.function"``), so that worker
processes can import them, and are found in three places, later ones winning:

1. fmtrain's own (DICOM, WFDB, EDF/BDF, VitalDB, CSV/TSV/TXT, NPZ);
2. installed packages, through the entry-point group ``fmtrain.signal_readers``
   (``name = suffix``, value ``"module:function"``): a package adds a format by being installed;
3. a recipe's `data.init_args.readers` (``{".xyz": "mylab.readers:read_xyz"}``), and the same
   option of `fmtrain prepare-signals`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from fmtrain.core.imports import import_object

__all__ = ["ENTRY_POINT_GROUP", "load_reader", "reader_for", "signal_readers"]

ENTRY_POINT_GROUP = "fmtrain.signal_readers"

_OWN = {
    ".dcm": "fmtrain.data.signals.formats:read_dicom",
    ".hea": "fmtrain.data.signals.formats:read_wfdb",
    ".dat": "fmtrain.data.signals.formats:read_wfdb",
    ".edf": "fmtrain.data.signals.formats:read_edf",
    ".bdf": "fmtrain.data.signals.formats:read_edf",
    ".vital": "fmtrain.data.signals.vital:read_vital",
    ".csv": "fmtrain.data.signals.tables:read_table",
    ".tsv": "fmtrain.data.signals.tables:read_table",
    ".txt": "fmtrain.data.signals.tables:read_table",
    ".npz": "fmtrain.data.signals.tables:read_npz",
}
_KEYWORDS = ("channels", "rate", "waveform_group")


def _suffix(name: str) -> str:
    suffix = name.strip().lower()
    if not suffix.startswith(".") or len(suffix) < 2:
        raise ValueError(
            f"data.init_args.readers: {name!r} is not a file suffix; write it as '.xyz'"
        )
    return suffix


@functools.lru_cache(maxsize=8)
def _installed(search_path: tuple[str, ...]) -> dict[str, str]:
    # Scanning every installed distribution's entry points takes ~6 ms, and `read_recording`
    # runs once per recording: scan once per import path (a package added to sys.path, or
    # taken off it, gives a new one).
    return {_suffix(e.name): e.value for e in entry_points(group=ENTRY_POINT_GROUP)}


def signal_readers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Suffix -> reader of every format: fmtrain's, installed packages', then `extra`'s."""
    readers = {**_OWN, **_installed(tuple(sys.path))}
    for suffix, reader in (extra or {}).items():
        readers[_suffix(suffix)] = reader
    return readers


def reader_for(path: str, readers: Mapping[str, str]) -> str | None:
    """The reader of `path`'s format: the longest registered suffix it ends with."""
    name = path.lower()
    matches = [s for s in readers if name.endswith(s)]
    return readers[max(matches, key=len)] if matches else None


@functools.lru_cache(maxsize=64)
def load_reader(spec: str) -> Callable[..., Any]:
    """The function named `spec` ("module:function" or "module.function"), wrapped to take
    only the keywords it declares."""
    try:
        function = import_object(spec)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"data.init_args.readers: cannot import the signal reader {spec!r} ({err}); "
            "give it as 'package.module:function', importable where the data is prepared"
        ) from err
    parameters = inspect.signature(function).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    wanted = [k for k in _KEYWORDS if takes_all or k in parameters]

    def read(path: str, **available: Any) -> Any:
        return function(path, **{k: available[k] for k in wanted})

    return read
