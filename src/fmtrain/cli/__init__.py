"""`fmtrain` command line: Lightning's fit/validate driven by YAML recipes, plus tools.

fmtrain fit --config recipes/oct_vjepa_demo.yaml [--trainer.max_steps 100 ...]
fmtrain check recipes/oct_mae_demo.yaml
fmtrain probe recipes/oct_vjepa_demo.yaml --ckpt demo_output/run/checkpoints/last.ckpt
fmtrain embed recipes/oct_vjepa_demo.yaml --ckpt last.ckpt --out emb.npz
fmtrain export last.ckpt encoder/            # safetensors + config.json, for load_encoder
fmtrain generate-oct data/oct --num_participants 64 --scale 0.25
fmtrain prepare data/oct/manifest.tsv s3://bucket/oct-prepared --size [64,384,384]
fmtrain generate-signals data/signals --num_participants 300
fmtrain fit --config recipes/signals_msm_demo.yaml
fmtrain demo                                 # OCT + V-JEPA; --modality signals | video
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fmtrain.cli.errors import DEBUG_ENV, explain_failure, take_debug_flag
from fmtrain.cli.messages import quiet_third_party_notices, show_progress_messages
from fmtrain.cli.recipe_command import known_keys, run_recipe

if TYPE_CHECKING:
    from fmtrain.recipe import FmtrainCLI

__all__ = ["FmtrainCLI", "main", "run_cli"]

_RECIPE_COMMANDS = ("fit", "validate")
_TOOLS = {
    "check": "build a recipe, pull real batches, run a step; report shapes, masks, problems",
    "probe": "score a checkpoint's frozen encoder with linear/k-NN/attentive probes vs random init",
    "embed": "write a checkpoint's per-sample embeddings with their ids (.npz)",
    "export": "write a checkpoint's evaluation encoder as safetensors + config.json",
    "generate-oct": "write synthetic retinal OCT volumes as DICOM plus manifest.tsv",
    "prepare": "raw volumes (manifest, file list or folder; path or URL) -> prepared zarr",
    "generate-signals": "write synthetic ECG + PPG as WFDB and .vital, manifest and labels",
    "prepare-signals": "recordings -> quality-checked, normalised windows in zarr",
    "demo": "generate data, train on the CPU, score it, write a report (--modality signals|video)",
}


def __getattr__(name: str) -> Any:
    # Lightning is imported when a recipe is built, not when `fmtrain` starts: the processes
    # that `prepare` spawns import the main module again, and need none of it
    if name == "FmtrainCLI":
        from fmtrain.recipe import FmtrainCLI

        return FmtrainCLI
    raise AttributeError(f"module 'fmtrain.cli' has no attribute {name!r}")


def run_cli(args: Sequence[str] | None = None, *, run: bool = True) -> FmtrainCLI:
    """Build (and by default run) the training CLI on `args` (see `build_recipe`)."""
    from fmtrain.recipe import build_recipe

    return build_recipe(args, run=run, parser_kwargs={"description": __doc__})


def _tool(name: str) -> Callable[[list[str]], int | None]:
    # each tool is imported only when used: `fmtrain check` should not load the probes
    if name == "check":
        from fmtrain.check.runner import main as tool
    elif name in ("probe", "embed"):
        from fmtrain.cli.evaluate import embed_main, probe_main

        tool = probe_main if name == "probe" else embed_main
    elif name == "export":
        from fmtrain.cli.export import main as tool
    elif name == "generate-oct":
        from fmtrain.cli.data_tools import generate_main as tool
    elif name == "prepare":
        from fmtrain.cli.data_tools import prepare_main as tool
    elif name == "generate-signals":
        from fmtrain.cli.data_tools import generate_signals_main as tool
    elif name == "prepare-signals":
        from fmtrain.cli.data_tools import prepare_signals_main as tool
    else:
        from fmtrain.cli.demo import main as tool
    return tool


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `fmtrain` command.

    A person's mistake (a bad key or value, a missing file, data that does not fit the
    recipe) ends in one or two lines, ``fmtrain CMD: error: ...`` and the fix, with exit
    code 2; a bug keeps its traceback. `--debug` anywhere on the line, or FMTRAIN_DEBUG=1,
    shows the traceback of every failure (`fmtrain.cli.errors`).
    """
    show_progress_messages()
    quiet_third_party_notices()
    from_shell = argv is None
    argv, debug = take_debug_flag(sys.argv[1:] if argv is None else argv)
    if from_shell:
        sys.argv[1:] = argv  # Lightning reads a shell command's arguments from there
    command = argv[0] if argv and (argv[0] in _TOOLS or argv[0] in _RECIPE_COMMANDS) else ""
    saved = os.environ.get(DEBUG_ENV)
    if debug:  # for what the command starts: check, loader workers, DDP processes
        os.environ[DEBUG_ENV] = "1"
    try:
        code = _dispatch(argv, from_shell)
    except BaseException as err:
        message = None if debug else explain_failure(err, command, argv[1:], known_keys())
        if message is None:
            raise
        print(message, file=sys.stderr)
        sys.exit(2)
    finally:
        if saved is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = saved
    if code:
        sys.exit(code)


def _dispatch(argv: list[str], from_shell: bool) -> int | None:
    if argv and argv[0] in _TOOLS:
        return _tool(argv[0])(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        # once: `fmtrain fit --help` has the recipe keys, this page the commands
        print(__doc__)
        for name, text in _TOOLS.items():
            print(f"  {name:14s} {text}")
        print("  fit/validate   train or evaluate a recipe (see `fmtrain fit --help`)")
        print("  --debug        (anywhere, or FMTRAIN_DEBUG=1) show the traceback of any error\n")
        return None
    run_recipe(argv, description=__doc__ or "", from_shell=from_shell)
    return None
