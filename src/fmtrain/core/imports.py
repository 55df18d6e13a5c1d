"""Import an object (a class, a function) named by its path, as recipes and registries name
them: ``package.module.Name`` or ``package.module:name``."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["import_object"]


def import_object(path: str, default_module: str | None = None) -> Any:
    """The object at `path`; a bare name (no module) is looked up in `default_module`.

    Raises:
        ImportError: the module cannot be imported (or there is none and no default).
        AttributeError: the module has no such name.
    """
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    module = module or default_module or ""
    if not module:
        raise ImportError(f"{path!r} names no module: write it as 'package.module.Name'")
    return getattr(importlib.import_module(module), name)
