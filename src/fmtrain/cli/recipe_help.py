"""The end of `fmtrain fit --help`: which methods, datamodules and encoders there are, by the
short names a recipe may use, and the command that lists each one's keys.

Lightning's page documents the trainer and the `--model CLASS` / `--data CLASS` choice, but
not the keys of a class, since those depend on the class chosen. With `--config RECIPE`
before `--help`, the recipe's own model, data and encoder are named with their keys.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterable, Sequence

__all__ = ["classes_section"]

_WIDTH = 100


def _subclasses(base: type) -> list[type]:
    """Every imported subclass of `base` a recipe can name: fmtrain's own (bases, which live
    in `base` modules, and private ones left out) and any a recipe imported."""
    found, todo = {}, list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.__name__.startswith("_") or cls.__module__.endswith(".base"):
            continue
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return sorted(found.values(), key=lambda c: c.__name__)


def _wrapped(label: str, text: str) -> list[str]:
    indent = " " * 11
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent=f"  {label:<9}",
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def _named(value: object, candidates: Iterable[type]) -> type | None:
    """The class a recipe value names: a dotted path or a short name among `candidates`."""
    if not isinstance(value, str) or not value:
        return None
    for cls in candidates:
        if value in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}"):
            return cls
    from fmtrain.recipe import model_class

    return model_class(value) if "." in value else None


def _recipe_classes(args: Sequence[str], families: dict[str, list[type]]) -> dict[str, type | None]:
    """The model, data and encoder classes that `args` (their --config files and overrides)
    select; the encoder defaults to the one the model's signature gives."""
    from fmtrain.recipe import recipe_options

    chosen: dict[str, object] = {}
    for key, value in recipe_options(args):
        for part in ("model", "data", "model.init_args.encoder", "model.encoder"):
            if key in (part, f"{part}.class_path") and isinstance(value, str):
                chosen[part.replace("model.encoder", "model.init_args.encoder")] = value
    model = _named(chosen.get("model"), families["model"])
    encoder = _named(chosen.get("model.init_args.encoder"), families["encoder"])
    if encoder is None and model is not None:
        param = inspect.signature(model.__init__).parameters.get("encoder")
        default = param.default if param is not None else None
        encoder = type(default) if isinstance(default, tuple(families["encoder"])) else None
    return {
        "model": model,
        "data": _named(chosen.get("data"), families["data"]),
        "encoder": encoder,
    }


def classes_section(args: Sequence[str]) -> str:
    """The text printed after `fmtrain fit --help`.

    Args:
        args: the command's arguments (their --config files say which classes the recipe
            uses, named with their keys).
    """
    from lightning.pytorch import LightningDataModule, LightningModule

    from fmtrain.check.parse_errors import class_keys
    from fmtrain.nn import EncoderSpec
    from fmtrain.recipe import register_builtin_classes

    register_builtin_classes()
    families = {
        "model": _subclasses(LightningModule),
        "data": _subclasses(LightningDataModule),
        "encoder": _subclasses(EncoderSpec),
    }
    lines = [
        "",
        "Methods, datamodules and encoders (a short name works wherever a class_path goes):",
    ]
    for label, option in (("model", "--model"), ("data", "--data"), ("encoder", "encoder")):
        lines += _wrapped(option, ", ".join(c.__name__ for c in families[label]))
    model = next((c.__name__ for c in families["model"] if c.__name__ == "VJEPAModule"), "M")
    lines += [
        "Keys of a class, with their types, defaults and help:",
        f"  fmtrain fit --model.help {model}",
        "  fmtrain fit --data.help VolumeDataModule",
        f"  fmtrain fit --model {model} --model.encoder.help ViTEncoder",
    ]
    if "--config" in args or any(a.startswith("--config=") for a in args):
        chosen = _recipe_classes(args, families)
        # keys the model's links fill when the recipe is read are not the recipe's to set
        model = chosen["model"]
        linked = {link.target for link in getattr(model, "recipe_links", list)()}
        lines += ["", "This recipe's classes and their keys (set as --model.init_args.KEY, ...):"]
        for label, cls in chosen.items():
            if cls is None:
                continue
            prefix = (
                "model.init_args.encoder.init_args" if label == "encoder" else f"{label}.init_args"
            )
            keys = [k for k in class_keys(cls) if f"{prefix}.{k}" not in linked]
            filled = [k for k in class_keys(cls) if f"{prefix}.{k}" in linked]
            text = f"{cls.__name__}: {', '.join(keys)}"
            lines += _wrapped(
                label, text + (f" (filled in: {', '.join(filled)})" if filled else "")
            )
    return "\n".join(lines)
