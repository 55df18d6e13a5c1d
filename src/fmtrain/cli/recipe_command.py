"""`fmtrain fit` and `fmtrain validate`: a recipe built and run from the command line.

The parser raises its errors here instead of printing them after the whole usage page, so
that the command's boundary (`fmtrain.cli.errors`) can say them in a line with the key and
the fix; the keys the parser accepts are kept for its suggestions. `--help` ends with the
classes a recipe can name (`fmtrain.cli.recipe_help`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["known_keys", "run_recipe"]


def known_keys() -> list[str]:
    """Every key the last recipe parser accepted (``trainer.max_steps``, ...)."""
    # no recipe was parsed unless the module is loaded, and loading it would load Lightning
    recipe = sys.modules.get("fmtrain.recipe")
    return list(recipe.FmtrainCLI.known_keys) if recipe is not None else []


def run_recipe(argv: Sequence[str], *, description: str, from_shell: bool) -> None:
    """Build and run the recipe that `argv` (``fit --config R ...``) names.

    Args:
        argv: the subcommand and its arguments.
        description: the top-level help text.
        from_shell: the arguments are the process's own (`sys.argv`); Lightning then reads
            them itself and does not warn about arguments given from Python.
    """
    from fmtrain.recipe import FmtrainCLI, build_recipe

    raising = {"exit_on_error": False}
    kwargs = {"description": description, **raising, "fit": raising, "validate": raising}
    help_asked = any(arg in ("-h", "--help") for arg in argv)
    try:
        build_recipe(None if from_shell else list(argv), cli_class=FmtrainCLI, parser_kwargs=kwargs)
    except SystemExit as stop:
        if help_asked and stop.code in (0, None):
            from fmtrain.cli.recipe_help import classes_section

            print(classes_section(list(argv[1:])))
        raise
