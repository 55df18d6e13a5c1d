"""The fix for an error fmtrain raised about a recipe, specific to what went wrong.

`check` prints it under each error, and `fmtrain fit` (and the other recipe commands) under
the one-line message of a failed run. Each kind is recognised by the message its raiser
writes: the raisers name their recipe keys and values (`fmtrain.core.grid`, a prepared
store's parameter check, `PreparedDataModule.prepare_data`, the readers' ``missing_file``),
and tests raise each through the real code, so a reworded message shows up there. A message
of a kind not listed here gets None, and the caller says what it can from the message itself.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Fix", "fix_for", "recipe_key"]

_LIST = r"\[[^\]]*\]"


@dataclass(frozen=True)
class Fix:
    """What to change for one error.

    Attributes:
        key: the full recipe key to change first, e.g. ``data.init_args.input_size``.
        fix: what to change it to, with the values, or the command to run.
    """

    key: str
    fix: str


def recipe_key(key: str) -> str:
    """A key as the parser takes it: ``data.input_size`` -> ``data.init_args.input_size``.

    Messages name a class's argument by its short form; recipes and overrides of a subclass
    (every model and datamodule) spell it under ``init_args``."""
    head, _, rest = key.partition(".")
    if head in ("model", "data") and rest and not rest.startswith(("init_args", "class_path")):
        return f"{head}.init_args.{rest}"
    return key


def _ints(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"-?\d+", text)]


def _compact(values: Sequence[object]) -> str:
    """A list as it is typed on a command line: [16,56,64]."""
    return "[" + ",".join(str(v) for v in values) + "]"


def _indivisible(m: re.Match[str]) -> Fix:
    size, patch = _ints(m["size"]), _ints(m["patch"])
    down = [max(p, s // p * p) for s, p in zip(size, patch, strict=False)]
    up = [-(-s // p) * p for s, p in zip(size, patch, strict=False)]
    key, patch_key = recipe_key(m["size_key"]), recipe_key(m["patch_key"])
    sizes = _compact(down) if down == up else f"{_compact(down)} or {_compact(up)}"
    return Fix(
        key, f"set {key}={sizes} (whole patches of {_compact(patch)}), or change {patch_key}"
    )


def _volume_store(m: re.Match[str]) -> Fix:
    made = {"input_size": _ints(m["size"]), "spacing": ast.literal_eval(m["spacing"])}
    wanted = {"input_size": _ints(m["want_size"]), "spacing": ast.literal_eval(m["want_spacing"])}
    differ = [k for k in made if [float(v) for v in made[k]] != [float(v) for v in wanted[k]]]
    differ = differ or ["input_size"]
    use = " and ".join(f"data.init_args.{k}={_compact(made[k])}" for k in differ)
    flags = f"--size {_compact(wanted['input_size'])} --spacing {_compact(wanted['spacing'])}"
    return Fix(
        f"data.init_args.{differ[0]}",
        f"to train on {m['url']} as prepared, set {use}; to keep the recipe, prepare again "
        f"(`fmtrain prepare SOURCE NEW_DIR {flags}`) and set data.init_args.prepared=NEW_DIR, "
        "or leave data.init_args.prepared unset and fit prepares data.init_args.source at the "
        "recipe's size and spacing",
    )


_SIGNAL_SETTING = re.compile(
    r"(data\.init_args\.[\w.]+): recipe (.*?), prepared (.*?)(?=; data\.|$)"
)


def _signal_store(m: re.Match[str]) -> Fix:
    settings = _SIGNAL_SETTING.findall(m["settings"])
    if not settings:
        return Fix(
            "data.init_args.prepared", "leave data.init_args.prepared unset to prepare again"
        )
    use = ", ".join(f"{key}={made}" for key, _, made in settings)
    return Fix(
        settings[0][0],
        f"to train on {m['url']} as prepared, set {use}; to keep the recipe, set "
        "data.init_args.prepared to a new folder (or leave it unset) and fit prepares "
        "data.init_args.source again with the recipe's settings",
    )


def _relative(path: str) -> str:
    """Where a relative path was looked for: recipes are read from the current directory,
    not from the recipe's folder, which surprises people who keep data beside a recipe."""
    if not path or "://" in path or os.path.isabs(path):
        return ""
    return f"; relative paths are read from the current directory, {os.getcwd()}"


def _no_store(m: re.Match[str]) -> Fix:
    url = m["url"] or m["at"]
    return Fix(
        "data.init_args.prepared",
        f"point data.init_args.prepared at a folder written by `fmtrain prepare` or "
        f"`fmtrain prepare-signals` (nothing complete at {url}{_relative(url)}), or set "
        "data.init_args.source to the raw data, which is then prepared there",
    )


def _missing_source(m: re.Match[str]) -> Fix:
    return Fix(
        "data.init_args.source",
        f"point data.init_args.source at an existing manifest, file list or folder ({m['path']} "
        f"does not exist{_relative(m['path'])}); `fmtrain generate-oct DIR` or "
        "`generate-signals DIR` writes one to try",
    )


def _empty_split(m: re.Match[str], values: Mapping[str, object]) -> Fix:
    counts = ast.literal_eval(m["splits"])
    counts = counts if isinstance(counts, dict) else {}
    present = ", ".join(name for name, n in counts.items() if n) or "none"
    # the key that holds the split's name, when the caller knows the recipe's values
    named = [key for key, value in values.items() if value == m["split"]]
    key = named[0] if named else "data.init_args.train_split / val_split (or the split option)"
    fix = f"set {key} to a split that has samples ({present})"
    if m["split"] in counts:  # it exists but is empty: the fractions gave it nothing
        fix += (
            f", or prepare again with data.init_args.split_fractions giving {m['split']!r} a share"
        )
    return Fix(named[0] if named else "data.init_args.train_split", fix)


# (message pattern, fix builder), most specific first
_KINDS: list[tuple[re.Pattern[str], Callable[..., Fix]]] = [
    (
        re.compile(
            rf"(?P<size_key>[\w.]+)=(?P<size>{_LIST}) is not divisible by "
            rf"(?P<patch_key>[\w.]+)=(?P<patch>{_LIST})"
        ),
        _indivisible,
    ),
    (
        re.compile(
            rf"prepared dataset at (?P<url>\S+) has size (?P<size>{_LIST}) and spacing "
            rf"(?P<spacing>{_LIST}), the recipe wants data\.input_size=(?P<want_size>{_LIST}) "
            rf"and data\.spacing=(?P<want_spacing>{_LIST})"
        ),
        _volume_store,
    ),
    (
        re.compile(
            r"prepared signals at (?P<url>\S+) were made with other settings "
            r"\((?P<settings>.*)\); prepare again"
        ),
        _signal_store,
    ),
    (
        re.compile(
            r"data\.init_args\.prepared=(?P<url>\S+): no complete prepared dataset"
            r"|no prepared (?:signal )?dataset at (?P<at>\S+) "
        ),
        _no_store,
    ),
    (
        re.compile(r"(?P<path>\S+): missing_file: no manifest, file list or folder here"),
        _missing_source,
    ),
    (
        re.compile(
            r"split '(?P<split>[^']+)' of the prepared \w+ at \S+ is (?:empty|missing); "
            r"(?:it has splits|windows per split:) (?P<splits>\{[^}]*\})"
        ),
        _empty_split,
    ),
]


def fix_for(message: str, values: Mapping[str, object] | None = None) -> Fix | None:
    """The key and the fix for an error `message` of a kind fmtrain knows; None otherwise.

    Args:
        message: the error's text (``str(err)``; a parser error's text works too).
        values: recipe keys and their values where the caller knows them, e.g.
            ``{"data.init_args.train_split": "training"}``: a message that quotes a value
            (a split's name) is then blamed on the key that holds it.
    """
    for pattern, build in _KINDS:
        if (m := pattern.search(message)) is not None:
            return build(m, values or {}) if build is _empty_split else build(m)
    return None
