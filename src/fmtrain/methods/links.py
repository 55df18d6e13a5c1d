"""Links between a recipe's `data` and `model` sections, declared by each method.

A link copies one value when the recipe is read, so the two sides cannot disagree: the
input size is given once (by the data), the patch size once (by the model), and the
channels and mask families are read off the built datamodule. The CLI applies the links
that the recipe's own model class declares; a method without masks declares none for them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RecipeLink"]


@dataclass(frozen=True)
class RecipeLink:
    """Copy `source` into `target` when the recipe is read.

    Attributes:
        source: a recipe key (e.g. "data.init_args.input_size"), or "data" for the built
            datamodule.
        target: the recipe key that receives the value (it disappears from the options).
        attribute: with source "data", the datamodule attribute to read (e.g. "channels").
    """

    source: str
    target: str
    attribute: str | None = None
