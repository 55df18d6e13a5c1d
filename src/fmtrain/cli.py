"""`fmtrain` command line: Lightning's fit/validate driven by YAML recipes, plus data tools.

fmtrain fit --config recipes/oct_vjepa_demo.yaml [--trainer.max_steps 100 ...]
fmtrain generate-oct --out_dir data/oct --num_participants 64 --scale 0.25
fmtrain prepare data/oct/manifest.tsv s3://bucket/oct-prepared --size [64,384,384]
fmtrain check recipes/oct_vjepa_demo.yaml
fmtrain probe recipes/oct_vjepa_demo.yaml --ckpt demo_output/run/checkpoints/last.ckpt
fmtrain demo
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from .data.volume_datamodule import default_masks
from .engine import batch_finder, checkpoint_io, oom, resume
from .engine.global_batch import global_batch_mismatch

_DATA_TOOLS = {
    "generate-oct": "write synthetic retinal OCT volumes as DICOM plus manifest.tsv",
    "check": "build a recipe, pull real batches, run a step; report shapes, masks, problems",
    "probe": "score a checkpoint's frozen encoder with linear/k-NN/attentive probes vs random init",
    "embed": "write a checkpoint's per-sample embeddings with their ids (.npz)",
    "prepare": "raw volumes (manifest, file list or folder; path or URL) -> prepared zarr",
    "demo": "generate data, pretrain V-JEPA on the CPU, report loss and feature rank",
}


def _num_mask_families(masks: list | None) -> int:
    return len(masks) if masks is not None else len(default_masks())


class FmtrainCLI(LightningCLI):
    """LightningCLI with the links that keep data and model consistent by construction."""

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        # The token grid is defined once: input size by the data, patch size by the model.
        parser.link_arguments("data.init_args.input_size", "model.init_args.input_size")
        parser.link_arguments("model.init_args.patch_size", "data.init_args.patch_size")
        parser.link_arguments(
            "data.init_args.masks",
            "model.init_args.num_mask_families",
            compute_fn=_num_mask_families,
        )
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
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 500,
                "checkpoint.save_top_k": -1,
                "checkpoint.filename": "step{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )

    def before_instantiate_classes(self) -> None:
        # Default loggers: TensorBoard for people, CSV for scripts, both under the run's root.
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.get("logger") in (None, True):
            root = config.trainer.get("default_root_dir") or "runs"
            config.trainer.logger = [
                Namespace(
                    class_path=f"lightning.pytorch.loggers.{kind}",
                    init_args=Namespace(save_dir=root, name=name),
                )
                for kind, name in (("TensorBoardLogger", "tensorboard"), ("CSVLogger", "csv"))
            ]
        # Default checkpoint IO: atomic saves, so a kill never leaves a half-written checkpoint.
        if config.trainer.get("plugins") is None:
            plugin = checkpoint_io.default_checkpoint_io(
                config.trainer.get("accelerator"), config.trainer.get("strategy")
            )
            config.trainer.plugins = Namespace(class_path=plugin) if plugin else None

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
        with oom.exit_on_oom(oom.memory_settings(self.trainer, model, self.datamodule)):
            self.trainer.fit(model, **kwargs)

    def _check_global_batch(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        mismatch = global_batch_mismatch(
            config.get("global_batch_size"),
            self.datamodule.batch_size,
            self.trainer.world_size,
            self.trainer.accumulate_grad_batches,
        )
        if mismatch:
            problem, fix = mismatch
            raise SystemExit(f"{problem}. {fix[0].upper()}{fix[1:]} so the product matches.")


def run_cli(args: Sequence[str] | None = None, *, run: bool = True) -> FmtrainCLI:
    """Build (and by default run) the training CLI on `args`."""
    return FmtrainCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args) if args is not None else None,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": __doc__},
    )


def _prepare(args: list[str]) -> None:
    import json

    from jsonargparse import CLI

    from .data.prepare import prepare_dataset
    from .data.sources import join

    dataset = CLI(prepare_dataset, args=args, description=_DATA_TOOLS["prepare"])
    counts = dataset.summary["counts"]
    print(
        f"prepared {counts['written']} volumes into {dataset.url} "
        f"({json.dumps(counts['by_split'])}); skipped {counts['skipped']}: "
        f"{json.dumps(counts['skipped_by_reason'])}; details in "
        f"{join(dataset.url, 'summary.json')}"
    )


def _probe_or_embed(command: str, args: list[str]) -> None:
    from jsonargparse import CLI

    from .eval.probe_command import run_embed, run_probe

    if command == "embed":
        path = CLI(run_embed, args=args, description=_DATA_TOOLS["embed"])
        print(f"embeddings written to {path}")
        return
    result = CLI(run_probe, args=args, description=_DATA_TOOLS["probe"])
    print(result.get("table", "no checkpoint given: random-init baselines only (probe.json)"))
    print(f"probe results: {result['seconds']} s; details in probe.json")


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record, not at creation, so that
    in-process callers that swap stderr (notebooks, pytest) never get a stale stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _show_progress_messages() -> None:
    """Print fmtrain's INFO records ("preparing X into Y", "probing random-1", ...) on stderr.

    Without a handler Python shows only warnings, and a long `prepare` or `probe` would say
    nothing about what it is doing. A handler the user configured is left alone."""
    log = logging.getLogger("fmtrain")
    if log.handlers:
        return
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("[fmtrain] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `fmtrain` command."""
    _show_progress_messages()
    from_shell = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "generate-oct":
        from jsonargparse import CLI

        from .data.generate import generate_oct_dataset

        CLI(generate_oct_dataset, args=argv[1:], description=_DATA_TOOLS["generate-oct"])
        return
    if argv and argv[0] == "check":
        from .check.runner import main as check_main

        sys.exit(check_main(argv[1:]))
    if argv and argv[0] in ("probe", "embed"):
        _probe_or_embed(argv[0], argv[1:])
        return
    if argv and argv[0] == "prepare":
        _prepare(argv[1:])
        return
    if argv and argv[0] == "demo":
        from jsonargparse import CLI

        from .demo import run_demo

        CLI(run_demo, args=argv[1:], description=_DATA_TOOLS["demo"])
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        for name, text in _DATA_TOOLS.items():
            print(f"  {name:14s} {text}")
        print("  fit/validate   train or evaluate a recipe (see `fmtrain fit --help`)\n")
        if not argv:
            return
    run_cli(None if from_shell else argv)
