"""The argument parser's error, reduced to the recipe key, the value, the reason and the fix.

jsonargparse reports a bad value deep in a recipe as nested "Does not validate against any
of the Union subtypes" blocks (one per `X | None` on the way down), the alternatives it also
tried ("Expected a <class 'NoneType'>") and a dump of the whole section; the reason is one
line somewhere inside. This walks the nesting by indentation, rebuilding the recipe key from
the "Parser key" and "class_path" lines it passes, and keeps the innermost reason. Unknown
keys get the closest valid ones as suggestions.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass

from fmtrain.core.imports import import_object

__all__ = ["ParseError", "class_keys", "explain_parse_error"]

_PARSER_KEY = re.compile(r'Parser key "([\w.\[\]]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([\w.]+)'")
_EXPECTED = re.compile(r"Expected a <class '([\w.]+)'>\. Got value: (.*)$")
_NOT_ACCEPTED = re.compile(r"Option '([\w.]+)' is not accepted")
_GROUP = re.compile(r"Group '([\w.]+)' does not accept option '([\w.]+)'")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: --([\w.]+)(?:=(\S*))?")
# fmtrain's own validators start their messages with the full key, often with its value
_KEYED = re.compile(
    r"^((?:model|data|trainer|checkpoint)\.[\w.\[\]]+?)(?:=(\[[^\]]*\]|\(.*?\)|\S+?))?"
    r"(?::\s*|\s+(?=is\b|must\b|has\b|does\b))(.*)$"
)
_NOISE = ("Expected a <class 'NoneType'>", "Given value", "Subtypes:", "Errors:")


@dataclass(frozen=True)
class ParseError:
    """One reason a recipe was not accepted.

    Attributes:
        key: the full recipe key, e.g. ``model.init_args.optimizer.lr``.
        value: the value found, as written (None when the key itself is the problem).
        reason: what is wrong, one line.
        fix: what to change.
        suggestions: for an unknown key, the closest valid keys.
    """

    key: str
    value: str | None
    reason: str
    fix: str
    suggestions: tuple[str, ...] = ()


def _import(path: str) -> type | None:
    try:
        return import_object(path)
    except (ImportError, AttributeError, ValueError):
        return None


def _is_dataclass(path: str) -> bool:
    cls = _import(path)
    return cls is not None and dataclasses.is_dataclass(cls)


def _dataclass_in(annotation: object) -> type | None:
    """The dataclass an annotation names, directly or inside `X | None`."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return annotation
    for arg in typing.get_args(annotation):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def class_keys(cls: type) -> list[str]:
    """The keys a class accepts in a recipe: its __init__ parameters, and the fields of
    parameters typed as dataclasses (``optimizer.lr``)."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: parameter names are still worth having
        hints = {}
    keys = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        keys.append(name)
        nested = _dataclass_in(hints.get(name))
        if nested is not None:
            keys += [f"{name}.{f.name}" for f in dataclasses.fields(nested)]
    return keys


def _suggest(wrong: str, candidates: Iterable[str]) -> tuple[str, ...]:
    candidates = list(dict.fromkeys(candidates))
    close = difflib.get_close_matches(wrong, candidates, n=3, cutoff=0.6)
    if not close:  # a misspelled leaf under a right parent: compare last components
        leaves = {c.rsplit(".", 1)[-1]: c for c in candidates}
        leaf = wrong.rsplit(".", 1)[-1]
        close = [leaves[m] for m in difflib.get_close_matches(leaf, leaves, n=3, cutoff=0.6)]
    return tuple(close)


def _unknown(
    prefix: list[str], name: str, value: str | None, cls: str | None, known: Iterable[str]
) -> ParseError:
    key = ".".join([*prefix, name])
    if cls is not None and (found := _import(cls)) is not None:
        base = ".".join(prefix)
        candidates = [f"{base}.{k}" for k in class_keys(found)]
    else:
        candidates = list(known)
    suggestions = _suggest(key, candidates)
    where = f" ({cls.rsplit('.', 1)[-1]} does not take it)" if cls else ""
    if suggestions:
        reason = f"unknown key{where}; did you mean {' or '.join(suggestions)}?"
        fix = f"rename it to {suggestions[0]}"
    else:
        reason = f"unknown key{where}"
        fix = "remove it, or look the key up with `fmtrain fit --help`"
    return ParseError(key, value, reason, fix, suggestions)


def _path(stack: list[tuple[int, str, str | None]]) -> tuple[list[str], str | None]:
    parts = [part for _, part, _ in stack if part]
    classes = [cls for _, _, cls in stack if cls]
    return parts, classes[-1] if classes else None


def explain_parse_error(text: str, known_keys: Iterable[str] = ()) -> ParseError | None:
    """The innermost reason in a parser error, with its full recipe key; None if none found.

    Args:
        text: the error message (``str(err)``), all its lines.
        known_keys: every key the top-level parser accepts (``trainer.max_steps``, ...), to
            suggest from for unknown keys outside a class.
    """
    stack: list[tuple[int, str, str | None]] = []  # (indent, key part, class path)
    found: list[tuple[int, ParseError]] = []
    for raw in text.splitlines():
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip()) + (2 if line.startswith("- ") else 0)
        line = line.removeprefix("- ")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not line or line.startswith(_NOISE) or "any of the Union subtypes" in line:
            if (m := _PARSER_KEY.search(line)) is not None:
                stack.append((indent, m.group(1), None))
            continue
        parts, cls = _path(stack)
        depth = len(parts)
        if m := _KEYED.match(line):
            found.append((100, ParseError(m.group(1), m.group(2), m.group(3).strip(), "")))
        elif m := _PARSER_KEY.search(line):
            stack.append((indent, m.group(1), None))
        elif m := _CLASS_PATH.search(line):
            sub = "" if _is_dataclass(m.group(1)) else "init_args"
            stack.append((indent, sub, m.group(1)))
        elif m := _EXPECTED.search(line):
            key = ".".join(parts)
            reason = f"expected a value of type {m.group(1)}"
            fix = f"give {key} a value of type {m.group(1)}"
            found.append((depth, ParseError(key, m.group(2).strip(), reason, fix)))
        elif m := _GROUP.search(line):
            err = _unknown([m.group(1)], m.group(2), None, None, known_keys)
            found.append((depth + 1, err))
        elif m := _NOT_ACCEPTED.search(line):
            found.append((depth + 1, _unknown(parts, m.group(1), None, cls, known_keys)))
        elif m := _UNRECOGNIZED.search(line):
            err = _unknown(parts, m.group(1), m.group(2), cls, known_keys)
            found.append((depth + 1, err))
    if not found:
        return None
    best = max(found, key=lambda item: item[0])[1]
    if not best.fix:
        best = dataclasses.replace(best, fix=f"change {best.key} as the message says")
    return best
