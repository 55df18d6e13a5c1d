"""How a failed `fmtrain` command ends: a person's mistake in a line or two, a bug in full.

A person's mistake is an error fmtrain raised on purpose about its input (a `raise` of a
ValueError, OSError, RuntimeError or one of fmtrain's own error types, in fmtrain's source),
a file that is not there, a recipe the parser refused, or a stop with a message
(`SystemExit("...")`). It is printed as ``fmtrain CMD: error: MESSAGE`` plus, for the kinds
`fmtrain.check.fixes` knows, a ``fix:`` line naming the key and the value, and the command
exits 2, as argparse does for a bad option. Wrappers on the way are looked through: the
parser's "Does not validate against any of the Union subtypes", Lightning's re-raise out of
`trainer.fit`, a DataLoader worker's "Caught ValueError in DataLoader worker process 0", a
process pool's remote traceback. Anything else (a TypeError, an error raised inside torch)
is a bug and keeps its traceback; so does every error under `--debug` or FMTRAIN_DEBUG=1.
"""

from __future__ import annotations

import linecache
import os
import re
from argparse import ArgumentError
from collections.abc import Iterable, Sequence
from pathlib import Path

from fmtrain.core.debug import DEBUG_ENV, debug_requested

__all__ = ["DEBUG_ENV", "debug_requested", "explain_failure", "take_debug_flag"]

DEBUG_FLAG = "--debug"

_PACKAGE = str(Path(__file__).resolve().parents[1])  # .../fmtrain
_DELIBERATE = (ValueError, OSError, RuntimeError)
# fmtrain's own error types (by name, so that nothing is imported to recognise them)
_OWN_TYPES = {
    "fmtrain.data.volumes.errors.VolumeReadError",
    "fmtrain.data.signals.errors.SignalReadError",
}
_WRAPPERS = ("jsonargparse", "lightning", "pytorch_lightning", "concurrent", "multiprocessing")
_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)')
# the commands that read a recipe: their errors may get a recipe key's fix
RECIPE_COMMANDS = ("fit", "validate", "check", "probe", "embed", "demo")


def take_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`argv` without ``--debug`` (accepted anywhere), and whether debugging is on: the flag
    was given or FMTRAIN_DEBUG is set to anything but "", "0" or "false"."""
    rest = [arg for arg in argv if arg != DEBUG_FLAG]
    return rest, len(rest) != len(argv) or debug_requested()


def _raised_here(path: str, line: int) -> bool:
    """Whether `path:line` is a `raise` statement in fmtrain's own source."""
    if not os.path.abspath(path).startswith(_PACKAGE + os.sep):
        return False
    return linecache.getline(path, line).strip().startswith("raise ")


def _innermost_frame(err: BaseException) -> tuple[str, int] | None:
    tb = err.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename, tb.tb_lineno


def _type_names(err: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(err).__mro__}


def _deliberate_type(err: BaseException) -> bool:
    return isinstance(err, _DELIBERATE) or bool(_type_names(err) & _OWN_TYPES)


def _remote_message(text: str) -> str | None:
    """The message of a traceback printed in another process, when fmtrain raised it on
    purpose there; None otherwise."""
    lines = text.strip().strip('"').strip("\n").splitlines()  # a pool's text is in quotes
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    if not frames:
        return None
    last = frames[-1]
    path, line = _FRAME.match(lines[last]).groups()  # type: ignore[union-attr]
    if not _raised_here(path, int(line)):
        return None
    # the exception line is the first one after the frame that is not indented source
    rest = [i for i in range(last + 1, len(lines)) if not lines[i].startswith(" ")]
    if not rest:
        return None
    kind, _, message = "\n".join(lines[rest[0] :]).partition(": ")
    return message if kind.split(".")[-1].endswith(("Error", "Exception")) else None


def _file_message(err: OSError, argv: Sequence[str]) -> str:
    """`--labels x.tsv: no such file or directory`: the option that gave the file, if any."""
    name = str(err.filename)
    what = (err.strerror or type(err).__name__).lower()
    for i, arg in enumerate(argv):
        option, eq, value = arg.partition("=")
        if eq and value == name and option.startswith("-"):
            return f"{option} {name}: {what}"
        if arg == name and i > 0 and argv[i - 1].startswith("-"):
            return f"{argv[i - 1]} {name}: {what}"
    return f"{name}: {what}"


def _parse_message(text: str, known_keys: Iterable[str]) -> str | None:
    """A parser error as `KEY=VALUE: reason` plus its fix (`fmtrain.check.parse_errors`)."""
    from fmtrain.check.parse_errors import explain_parse_error

    found = explain_parse_error(text, known_keys)
    if found is None:
        return None
    where = found.key if found.value is None else f"{found.key}={found.value}"
    return f"{where}: {found.reason}\n  fix: {found.fix}"


def _person_message(err: BaseException, argv: Sequence[str], known_keys: Iterable[str]):  # type: ignore[no-untyped-def]
    """The message of a person's mistake behind `err`, or None for a bug."""
    if isinstance(err, SystemExit):
        return str(err.code) if isinstance(err.code, str) else None
    if isinstance(err, ArgumentError):
        return _parse_message(str(err), known_keys) or str(err).splitlines()[0]
    if isinstance(err, OSError) and err.filename is not None:
        return _file_message(err, argv)
    where = _innermost_frame(err)
    if where is not None and _deliberate_type(err) and _raised_here(*where):
        return str(err)
    if isinstance(err, _DELIBERATE) and _WORKER.match(str(err)):
        return _remote_message(str(err))
    cause = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    if type(cause).__name__ == "_RemoteTraceback":  # a process pool's worker
        return _remote_message(str(cause))
    # look through the wrappers of a library fmtrain called, never through fmtrain's own
    # handlers: an error raised while handling another is that new error, a bug or not
    library = where is not None and any(f"{os.sep}{name}{os.sep}" in where[0] for name in _WRAPPERS)
    if cause is not None and library:
        inner = _person_message(cause, argv, known_keys)
        if inner is not None:
            return inner
    if library and "any of the Union subtypes" in str(err):
        return _parse_message(str(err), known_keys)
    return None


def explain_failure(
    err: BaseException, command: str, argv: Sequence[str], known_keys: Iterable[str] = ()
) -> str | None:
    """What to print for `err` when it is a person's mistake; None when it is a bug.

    Args:
        err: the exception that ended the command.
        command: the subcommand (``fit``, ``prepare``, ...), for the prefix and to decide
            whether a recipe key's fix applies.
        argv: the command's arguments, to name the option that gave a missing file.
        known_keys: the keys the recipe parser accepts, to suggest from for an unknown one.
    """
    message = _person_message(err, list(argv), list(known_keys))
    if message is None:
        return None
    prog = f"fmtrain {command}" if command else "fmtrain"
    lines = [f"{prog}: error: {message.strip()}"]
    if command in RECIPE_COMMANDS and "\n  fix: " not in message:
        from fmtrain.check.fixes import fix_for

        found = fix_for(message)
        if found is not None:
            lines.append(f"  fix: {found.fix}")
    return "\n".join(lines)
