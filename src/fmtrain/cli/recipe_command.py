"""`fmtrain fit` and `fmtrain validate`: a recipe built and run from the command line.

The parser raises its errors here instead of printing them after the whole usage page, so
that the command's boundary (`fmtrain.cli.errors`) can say them in a line with the key and
the fix; the keys the parser accepts are kept for its suggestions. `--help` ends with the
classes a recipe can name (`fmtrain.cli.recipe_help`).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["known_keys", "run_recipe"]

_KNOWN: list[str] = []  # the last parser's keys, for suggestions when a key is unknown


def known_keys() -> list[str]:
    """Every key the last recipe parser accepted (``trainer.max_steps``, ...)."""
    return list(_KNOWN)


def _parser_keys(parser) -> list[str]:  # type: ignore[no-untyped-def]
    keys = [a.dest for a in parser._actions if a.dest and not a.dest.endswith(("help", "config"))]
    return [k for k in keys if k != "==SUPPRESS=="]


def run_recipe(argv: Sequence[str], *, description: str, from_shell: bool) -> None:
    """Build and run the recipe that `argv` (``fit --config R ...``) names.

    Args:
        argv: the subcommand and its arguments.
        description: the top-level help text.
        from_shell: the arguments are the process's own (`sys.argv`); Lightning then reads
            them itself and does not warn about arguments given from Python.
    """
    from fmtrain.recipe import FmtrainCLI, build_recipe

    class _CommandCLI(FmtrainCLI):
        def parse_arguments(self, parser, args) -> None:  # type: ignore[no-untyped-def]
            parsers = getattr(self, "_subcommand_parsers", None) or {"": parser}
            _KNOWN[:] = dict.fromkeys(k for p in parsers.values() for k in _parser_keys(p))
            super().parse_arguments(parser, args)

    raising = {"exit_on_error": False}
    kwargs = {"description": description, **raising, "fit": raising, "validate": raising}
    help_asked = any(arg in ("-h", "--help") for arg in argv)
    try:
        build_recipe(
            None if from_shell else list(argv), cli_class=_CommandCLI, parser_kwargs=kwargs
        )
    except SystemExit as stop:
        if help_asked and stop.code in (0, None):
            from fmtrain.cli.recipe_help import classes_section

            print(classes_section(list(argv[1:])))
        raise
