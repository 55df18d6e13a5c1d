"""A recipe, read: Lightning's CLI with fmtrain's keys, defaults and data-model links.

`fit`, `check`, `probe`, `embed` and the demo all build a recipe through `build_recipe`,
so they see the same objects. The links between `data` and `model` are not written here:
the recipe's model class declares them (`recipe_links()`), so a method without masks,
or with channels read off its datamodule, needs no edit to this file.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import XLAStrategy

from fmtrain.core.imports import import_object
from fmtrain.engine import batch_finder, checkpoint_io, oom, resume, run_folder
from fmtrain.engine.announce import announce
from fmtrain.engine.global_batch import GlobalBatchCheck, global_batch_error
from fmtrain.engine.interrupt import StopOnSignal
from fmtrain.engine.secrets import RedactingSaveConfigCallback
from fmtrain.engine.warning_summary import collect_warnings, format_warning_summary
from fmtrain.eval.monitors import CollapseMonitor
from fmtrain.eval.run_pictures import RunPictures

__all__ = ["FmtrainCLI", "build_recipe", "model_class", "register_builtin_classes"]


# Recipe keys and class paths that moved, with what to write instead: a recipe written for
# an earlier fmtrain gets the new spelling, not "unrecognized arguments".
RENAMED = {
    "model.init_args.monitor_every_n_steps": "monitors.every_n_steps (a top-level key)",
    "model.init_args.encoder.in_chans": "nothing: the channels come from the datamodule",
    "model.init_args.encoder.init_args.in_chans": "nothing: the channels come from the data",
    "data.init_args.min_context_tokens": "data.init_args.masks.init_args.min_context_tokens",
    "fmtrain.data.VolumeDataModule": "fmtrain.datamodules.VolumeDataModule",
}


def _read_config(path: str) -> dict:
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return {}  # the parser reports unreadable files with its own message
    return config if isinstance(config, dict) else {}


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, leaf value) pairs of a nested recipe mapping."""
    if isinstance(value, dict):
        return [pair for key, v in value.items() for pair in _flat(v, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), value)]


def recipe_options(args: Sequence[str]) -> list[tuple[str, Any]]:
    """(key, value) pairs that command-line style `args` set, in the parser's order: each
    `--config` file's keys flattened where it stands, and every `--key value` override.
    Read once before parsing, to find the model's declared links and renamed keys."""
    pairs: list[tuple[str, Any]] = []
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        if not eq and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
        if name == "--config":
            pairs += _flat(_read_config(value))
        else:
            pairs.append((name[2:], value))
    return pairs


def refuse_renamed_keys(options: Sequence[tuple[str, Any]]) -> None:
    """Stop with the new spelling when a recipe or override uses a key that moved."""
    found = [k for pair in options for k in pair if isinstance(k, str) and k in RENAMED]
    if found:
        moved = [f"{old} -> {RENAMED[old]}" for old in dict.fromkeys(found)]
        raise SystemExit("these recipe keys moved; write instead: " + "; ".join(moved))


def _model_class_path(options: Sequence[tuple[str, Any]]) -> str | None:
    """The model class the options select: the last one set wins, as in the parser."""
    found = None
    for key, value in options:
        if key == "model.class_path" or (
            key == "model" and isinstance(value, str) and not value.endswith((".yaml", ".yml"))
        ):
            found = value
    return found


def model_class(class_path: str | None) -> type | None:
    """Import a model class by dotted path or by the bare name of an fmtrain method."""
    if not class_path:
        return None
    try:
        return import_object(class_path, default_module="fmtrain.methods")
    except (ImportError, AttributeError):
        return None  # the parser names the bad class_path itself


def register_builtin_classes() -> None:
    """Import every fmtrain method, datamodule, encoder and mask sampler.

    The parser resolves a short name (`--model.help VJEPAModule`, `data: VolumeDataModule`)
    only among the subclasses imported so far; fmtrain's methods load lazily, so without
    this the short names of all but the recipe's own class are "not a dot import path"."""
    import fmtrain.datamodules
    import fmtrain.masks
    import fmtrain.methods
    import fmtrain.nn
    import fmtrain.nn.timeseries  # the PatchTST, PatchTSMixer and TTM encoders

    for package in (fmtrain.methods, fmtrain.datamodules, fmtrain.masks, fmtrain.nn):
        for name in getattr(package, "__all__", ()):
            getattr(package, name)  # a lazy package imports the name's module here


def data_storage_options(config: Namespace) -> dict | None:
    """The recipe's `data.init_args.storage_options` (credentials, endpoint), or None."""
    data = config.get("data")
    init_args = data.get("init_args") if isinstance(data, Namespace) else None
    options = init_args.get("storage_options") if isinstance(init_args, Namespace) else None
    return dict(options) if options else None


def _parser_keys(parser) -> list[str]:  # type: ignore[no-untyped-def]
    """Every key the parser accepts, dotted (``trainer.max_steps``), without help options."""
    keys = [a.dest for a in parser._actions if a.dest and not a.dest.endswith(("help", "config"))]
    return [k for k in keys if k != "==SUPPRESS=="]


def _plain(value: Any) -> Any:
    """Sequences as lists, so a recipe's [16, 64, 64] equals a datamodule's (16, 64, 64)."""
    return list(value) if isinstance(value, (list, tuple)) else value


class _LinkedValue:
    """Reads a key that the built datamodule fills (a link's `compute_fn`), and notes a value
    set by hand that disagrees: the CLI refuses those after instantiation, with a message of
    its own. A class, not a closure: the parser keeps it, and spawn-type launchers (XLA on a
    TPU, ddp_spawn) pickle the parser with the trainer's config callback."""

    def __init__(self, target: str, attribute: str | None, given: dict, disagreements: list):
        self.target, self.attribute = target, attribute
        self.given, self.disagreements = given, disagreements

    def __call__(self, datamodule: Any) -> Any:
        value = getattr(datamodule, self.attribute) if self.attribute else datamodule
        given = self.given.get(self.target, value)
        if _plain(given) != _plain(value):
            self.disagreements.append(
                f"{self.target}={given!r}, but the datamodule's {self.attribute!r} is "
                f"{value!r}: this key is filled from the data when the recipe is read; "
                "remove it from the recipe and the command line."
            )
        return value


class FmtrainCLI(LightningCLI):
    """LightningCLI with the links that keep data and model consistent by construction."""

    # the model class the arguments select, found before parsing for its declared links
    _recipe_model: ClassVar[type | None] = None
    #: every key the last parser accepted (``trainer.max_steps``), for suggestions when a
    #: key is unknown
    known_keys: ClassVar[tuple[str, ...]] = ()

    def parse_arguments(self, parser, args) -> None:  # type: ignore[no-untyped-def]
        parsers = getattr(self, "_subcommand_parsers", None) or {"": parser}
        keys = (k for p in parsers.values() for k in _parser_keys(p))
        type(self).known_keys = tuple(dict.fromkeys(keys))
        super().parse_arguments(parser, args)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit and validate only: fmtrain's methods define no test or predict step, so those
        subcommands are not offered (they would crash after building everything)."""
        subcommands = LightningCLI.subcommands()
        return {name: subcommands[name] for name in ("fit", "validate")}

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        cls = self._recipe_model
        self._instantiate_links = []
        self._given: dict[str, Any] = {}
        self._disagreements: list[str] = []
        for link in getattr(cls, "recipe_links", list)():
            if link.source == "data":
                self._instantiate_links.append((cls, link))
                parser.link_arguments(
                    "data", link.target, compute_fn=self._reader(link), apply_on="instantiate"
                )
            else:
                parser.link_arguments(link.source, link.target)
        parser.add_argument(
            "--global_batch_size",
            type=int | None,
            default=None,
            help="If set, the run refuses to start unless data.batch_size x devices x nodes x "
            "trainer.accumulate_grad_batches equals it.",
        )
        parser.add_argument(
            "--resume",
            type=bool,
            default=False,
            help="fit: resume from the newest loadable checkpoint in checkpoint.dirpath when "
            "ckpt_path is not given; start fresh when there is none.",
        )
        parser.add_argument(
            "--find_micro_batch",
            type=bool,
            default=False,
            help="fit on CUDA: try micro-batches (one real step each), use the largest that fits "
            "and set trainer.accumulate_grad_batches to keep --global_batch_size (required).",
        )
        parser.add_lightning_class_args(checkpoint_io.BucketAwareModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 500,
                "checkpoint.save_top_k": -1,
                "checkpoint.filename": "step{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(CollapseMonitor, "monitors")
        parser.add_lightning_class_args(RunPictures, "pictures")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._refuse_values_for_linked_keys(config)
        # One folder per run, the same across resumes (`fmtrain.engine.run_folder`).
        root = config.trainer.get("default_root_dir") or run_folder.DEFAULT_ROOT
        if config.trainer.get("logger") in (None, True):
            config.trainer.logger = run_folder.default_loggers(root)
        if "checkpoint" in config and config.checkpoint.get("dirpath") is None:
            config.checkpoint.dirpath = run_folder.default_checkpoint_dir(root)
        # Default checkpoint IO: atomic saves, so a kill never leaves a half-written checkpoint;
        # checkpoints in a bucket use the data's storage options (credentials, endpoint).
        if config.trainer.get("plugins") is None:
            plugin = checkpoint_io.default_checkpoint_io(
                config.trainer.get("accelerator"), config.trainer.get("strategy")
            )
            options = data_storage_options(config)
            config.trainer.plugins = Namespace(class_path=plugin)
            if options:
                config.trainer.plugins.init_args = Namespace(storage_options=options)

    def _refuse_values_for_linked_keys(self, config: Namespace) -> None:
        """Remember values set by hand for keys that the built datamodule fills: `_reader`
        refuses any that disagree, instead of replacing them without a word (parse-time
        links remove their keys; these cannot). Values restored from a checkpoint's
        hyper-parameters agree with the data and pass."""
        for cls, link in self._instantiate_links:
            name = link.target.rsplit(".", 1)[-1]
            given = config.get(link.target)
            param = inspect.signature(cls.__init__).parameters.get(name)
            default = param.default if param is not None else inspect.Parameter.empty
            required = default is inspect.Parameter.empty
            if (required and given is not None) or (not required and given != default):
                self._given[link.target] = given

    def _reader(self, link: Any) -> _LinkedValue:
        return _LinkedValue(link.target, link.attribute, self._given, self._disagreements)

    def instantiate_classes(self) -> None:
        self._disagreements.clear()
        super().instantiate_classes()
        if self._disagreements:
            raise ValueError(" ".join(self._disagreements))

    def before_fit(self) -> None:
        config = self.config[self.subcommand]
        if config.get("find_micro_batch"):
            settings = oom.memory_settings(self.trainer, self.model, self.datamodule)
            batch_finder.find_micro_batch(
                self.trainer, self.model, self.datamodule, config.get("global_batch_size"), settings
            )
        self._check_global_batch()

    def fit(self, model, **kwargs) -> None:  # type: ignore[no-untyped-def]
        """LightningCLI runs `self.fit` when defined: resume on request, advise on GPU OOM.

        The checkpoint folder is resolved from the built trainer (`resume.checkpoint_dirs`),
        so a `checkpoint.dirpath` left unset finds the folder Lightning's callback will use.
        """
        if self.config[self.subcommand].get("resume") and kwargs.get("ckpt_path") is None:
            kwargs["ckpt_path"] = resume.resume_checkpoint(self.trainer)
        dirpath = run_folder.announce_start(self.trainer, kwargs.get("ckpt_path"))
        stopper = StopOnSignal(dirpath) if dirpath else None
        if stopper:
            self.trainer.callbacks.append(stopper)
        with collect_warnings() as seen:
            finished = False
            try:
                with oom.exit_on_oom(oom.memory_settings(self.trainer, model, self.datamodule)):
                    self.trainer.fit(model, **kwargs)
                finished = True
            finally:  # also when the run stops early: what went wrong on the way matters most
                if finished or seen:  # a failed run without warnings: its error says it all
                    announce(format_warning_summary(seen))
        run_folder.announce_end(self.trainer, stopper)

    def _check_global_batch(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        wanted = config.get("global_batch_size")
        if wanted is not None and isinstance(self.trainer.strategy, XLAStrategy):
            self.trainer.callbacks.append(GlobalBatchCheck(wanted))  # the world is known later
            return
        message = global_batch_error(
            wanted,
            self.datamodule.batch_size,
            self.trainer.world_size,
            self.trainer.accumulate_grad_batches,
        )
        if message:
            raise SystemExit(message)


def build_recipe(
    args: Sequence[str] | None = None,
    *,
    run: bool = True,
    cli_class: type[FmtrainCLI] = FmtrainCLI,
    **kwargs: Any,
) -> FmtrainCLI:
    """Build (and by default run) a recipe from command-line style `args`.

    Args:
        args: e.g. ["fit", "--config", "recipes/oct_vjepa_demo.yaml", "--trainer.max_steps=5"]
            (without a subcommand when `run` is False); None reads `sys.argv`.
        run: run the subcommand (fit/validate) after building.
        cli_class: FmtrainCLI or a subclass (`check` builds for the current machine).
        kwargs: more LightningCLI arguments.
    """
    options = recipe_options(list(args) if args is not None else sys.argv[1:])
    refuse_renamed_keys(options)
    register_builtin_classes()
    cli_class._recipe_model = model_class(_model_class_path(options))
    options: dict[str, Any] = {
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "args": list(args) if args is not None else None,
        "run": run,
        "save_config_callback": RedactingSaveConfigCallback,
        "save_config_kwargs": {"overwrite": True},
    }
    with warnings.catch_warnings():
        if args is not None:
            # args given here are the command; Lightning's reminder that it then ignores
            # sys.argv (a calling script's own: a benchmark's, pytest's) says nothing here
            warnings.filterwarnings("ignore", "LightningCLI's args parameter", UserWarning)
        return cli_class(**(options | kwargs))
