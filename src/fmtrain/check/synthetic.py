"""`fmtrain check RECIPE --synthetic`: point the recipe at a few generated samples of its own
modality and geometry, written by its datamodule (`write_synthetic`), so that a recipe can be
checked before its data exists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from fmtrain.core.imports import import_object

__all__ = ["recipe_data_settings", "synthetic_overrides"]

_PREFIX = "--data.init_args."


def recipe_data_settings(recipe: str, overrides: list[str]) -> tuple[str, dict[str, Any]]:
    """The recipe's data class path and init args, command-line overrides applied."""
    config = yaml.safe_load(Path(recipe).read_text()) or {}
    data = config.get("data") or {}
    class_path = data.get("class_path")
    settings = dict(data.get("init_args") or {})
    for option in overrides:
        if option.startswith("--data.class_path="):
            class_path = option.split("=", 1)[1]
        elif option.startswith(_PREFIX) and "=" in option:
            key, value = option[len(_PREFIX) :].split("=", 1)
            settings[key] = yaml.safe_load(value)
    if not class_path:
        raise ValueError(f"{recipe}: data.class_path is not set; --synthetic needs a datamodule")
    return class_path, settings


def _as_option(key: str, value: Any) -> str:
    text = "null" if value is None else value if isinstance(value, str) else json.dumps(value)
    return f"{_PREFIX}{key}={text}"


def synthetic_overrides(recipe: str, overrides: list[str], folder: Path) -> list[str]:
    """Write the samples under `folder`; the overrides that make the recipe read them."""
    class_path, settings = recipe_data_settings(recipe, overrides)
    cls = import_object(class_path)
    writer = getattr(cls, "write_synthetic", None)
    if writer is None:
        raise ValueError(
            f"data.class_path={class_path} cannot generate samples (it has no write_synthetic); "
            "check it against real data instead"
        )
    values = writer(folder, settings)
    return [_as_option(k, v) for k, v in values.items()]
