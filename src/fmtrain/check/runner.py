"""`fmtrain check RECIPE [overrides]`: the recipe's own objects, on this machine, in seconds.

The recipe is built as `fit` would build it, but on the current device with one process
(a GPU recipe is checked on the CPU when there is no GPU); the recipe's device count,
nodes and accumulation are kept for the batch arithmetic.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from fmtrain.check.batches import check_batch, check_dataset_size, mask_statistics
from fmtrain.check.device import (
    accelerator_name,
    check_accelerator_here,
    check_device,
    check_xla_precision,
)
from fmtrain.check.fixes import fix_for, recipe_key
from fmtrain.check.parse_errors import explain_parse_error
from fmtrain.check.problems import CheckReport
from fmtrain.check.schedules import check_schedules
from fmtrain.check.step import run_step
from fmtrain.check.storage import probe_writable
from fmtrain.check.synthetic import synthetic_overrides
from fmtrain.check.values import check_stored_values, scan_batches
from fmtrain.core.debug import debug_requested
from fmtrain.engine.global_batch import global_batch_mismatch
from fmtrain.engine.xla import is_xla
from fmtrain.eval.mask_pictures import save_mask_pictures
from fmtrain.masks.base import MaskSampler
from fmtrain.methods.base import PretrainMethod
from fmtrain.recipe import FmtrainCLI, build_recipe, data_storage_options

__all__ = ["main", "run_check"]

log = logging.getLogger("fmtrain")
_KEY = re.compile(r"\b((?:data|model|trainer|checkpoint)\.[A-Za-z_][\w.\[\]]*)")


def _key_in(message: str, default: str) -> str:
    found = _KEY.search(message)
    return found.group(1).rstrip(".") if found else default


# for a message that names no recipe key and is of no kind `fixes` knows: no guess at a cause
_UNKNOWN_FIX = "the message says what failed; `fmtrain check RECIPE --debug` shows where"


def _caught(
    report: CheckReport,
    err: BaseException,
    category: str,
    fallback: tuple[str, str],
    what: str = "",
    dm: Any = None,
) -> None:
    """Report an error check caught: the key and fix of its kind (`check.fixes`) when known,
    else `fallback` (key, fix); `what` was being done. Under --debug its traceback is
    printed too."""
    if debug_requested():
        traceback.print_exception(err)
    message = f"{what}{type(err).__name__}: {err}"
    splits = {f"data.init_args.{k}": getattr(dm, k, None) for k in ("train_split", "val_split")}
    known = fix_for(message, splits)
    key, fix = (known.key, known.fix) if known else fallback
    report.add("error", recipe_key(key), message.strip(), fix, category)


def _count_devices(devices: Any, accelerator: str) -> tuple[int, bool]:
    """(number of devices per node, whether it was known from the recipe)."""
    if isinstance(devices, int) and devices > 0:
        return devices, True
    if isinstance(devices, (list, tuple)):
        return len(devices), True
    if isinstance(devices, str) and devices.isdigit():
        return int(devices), True
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.device_count(), True
    return 1, False


class _CheckCLI(FmtrainCLI):
    """Builds the recipe for this machine: one process, the current device, no loggers.
    Output locations are probed before anything is built, and an unwritable one is
    replaced by a scratch folder so that the rest of the recipe can still be checked."""

    report: CheckReport

    def before_instantiate_classes(self) -> None:
        trainer = self.config.trainer
        self.recipe_trainer = {
            k: trainer.get(k)
            for k in ("accelerator", "devices", "num_nodes", "strategy", "precision")
        }
        self.recipe_trainer["accumulate_grad_batches"] = trainer.get("accumulate_grad_batches") or 1
        # before the recipe's defaults are filled in, so that they are this machine's (the
        # checkpoint IO of a TPU recipe needs torch-xla)
        trainer.accelerator = "gpu" if torch.cuda.is_available() else "cpu"
        trainer.devices, trainer.num_nodes, trainer.strategy = 1, 1, "auto"
        super().before_instantiate_classes()
        _check_storage(self.report, self.config)
        self.recipe_loggers = trainer.get("logger")
        trainer.logger = False
        trainer.enable_progress_bar = False
        trainer.enable_model_summary = False


def _build(report: CheckReport, args: list[str]):
    _CheckCLI.report = report
    _CheckCLI.known_keys = ()
    try:
        return build_recipe(
            args, run=False, cli_class=_CheckCLI, parser_kwargs={"exit_on_error": False}
        )
    except BaseException as err:  # parse errors, impossible grids, device/precision refusals
        if isinstance(err, KeyboardInterrupt):
            raise
        explained = explain_parse_error(str(err), _CheckCLI.known_keys)
        if explained is not None:
            if debug_requested():
                traceback.print_exception(err)
            known = fix_for(str(err))  # a kind with a specific fix (an indivisible size)
            report.add(
                "error",
                known.key if known else explained.key,
                explained.reason,
                known.fix if known else explained.fix,
                "config",
                explained.value,
            )
            return None
        message = f"{type(err).__name__}: {err}"
        category = "device" if "precision" in message or "accelerator" in message else "shape"
        key = _key_in(message, "recipe")
        fix = "see the message; `fmtrain fit --help` lists every key"
        _caught(report, err, category, (key, fix))
        return None


def _check_global_batch(report: CheckReport, cli, world: int) -> None:
    mismatch = global_batch_mismatch(
        cli.config.get("global_batch_size"),
        cli.datamodule.batch_size,
        world,
        cli.recipe_trainer["accumulate_grad_batches"],
    )
    if mismatch:
        report.add("error", "trainer.accumulate_grad_batches", *mismatch, "batch")


def _check_storage(report: CheckReport, config) -> None:
    trainer = config.trainer
    root = trainer.get("default_root_dir") or "."
    if not probe_writable(report, "trainer.default_root_dir", root):
        trainer.default_root_dir = tempfile.mkdtemp(prefix="fmtrain-check-")
    ckpt = config.get("checkpoint", {}).get("dirpath")
    options = data_storage_options(config)  # what the default checkpoint IO writes with
    if ckpt and not probe_writable(report, "checkpoint.dirpath", ckpt, options):
        config.checkpoint.dirpath = None
    loggers = trainer.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers] if loggers else []
    for i, logger in enumerate(loggers):
        save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None)
        if save_dir and save_dir != root:
            probe_writable(report, f"trainer.logger[{i}].init_args.save_dir", save_dir)


def _check_workers(report: CheckReport, workers: int) -> None:
    """Loader workers far beyond the cores here: they compete for cores instead of helping."""
    cores = os.cpu_count() or 1
    report.performance["loader workers"] = (
        f"{workers} in the recipe, {cores} cores here (check reads its batches in-process)"
    )
    if workers > 2 * cores:
        report.add(
            "warning",
            "data.init_args.num_workers",
            f"{workers} loader workers on a machine with {cores} cores: each is a process with "
            "its own copy of the dataset state, and they compete for the cores",
            f"use at most {cores} here (about one per core, divided among the GPUs of a node)",
            "data",
            value=str(workers),
        )


def _load_data(report: CheckReport, dm) -> bool:
    _check_workers(report, int(dm.num_workers))
    dm.num_workers = 0  # batches in this process: a worker crash would hide the reason
    try:
        dm.prepare_data()
        dm.setup("fit")
    except Exception as err:
        named = _key_in(f"{err}", "")
        # a message that names its setting says the fix too; no guess at a cause otherwise
        fallback = f"change {named} as the message says" if named else _UNKNOWN_FIX
        _caught(report, err, "data", (named or "data.init_args", fallback), dm=dm)
        return False
    return True


def run_check(
    recipe: str,
    overrides: list[str],
    out_dir: str | None = None,
    synthetic: bool = False,
    elsewhere: bool = False,
) -> CheckReport:
    """Check `recipe` (plus command-line `overrides`); write the report beside the run.

    With `synthetic`, the recipe reads a few generated samples of its modality and geometry
    (written in a temporary folder by its datamodule) instead of its data; the dataset's
    size is then not judged. An accelerator the recipe asks for that this machine lacks is
    an error, unless `elsewhere` says the recipe will train on another machine: then it is
    a warning and the step runs here.
    """
    if synthetic:
        with tempfile.TemporaryDirectory(prefix="fmtrain-synthetic-") as folder:
            started = time.perf_counter()
            extra = synthetic_overrides(recipe, overrides, Path(folder))
            written = time.perf_counter() - started
            report = _run_check(recipe, [*overrides, *extra], out_dir, True, elsewhere)
            report.performance["synthetic data written (s)"] = round(written, 1)
            return report
    return _run_check(recipe, overrides, out_dir, False, elsewhere)


def _run_check(
    recipe: str, overrides: list[str], out_dir: str | None, synthetic: bool, elsewhere: bool
) -> CheckReport:
    start = time.perf_counter()
    report = CheckReport(recipe=recipe + (" (synthetic data)" if synthetic else ""))
    cuda = torch.cuda.is_available()
    report.device = torch.cuda.get_device_name() if cuda else "cpu"
    cli = _build(report, ["--config", recipe, *overrides])
    if cli is None:
        return _finish(report, out_dir or "check_output", start)
    rt = cli.recipe_trainer
    devices, known = _count_devices(rt["devices"], accelerator_name(rt["accelerator"]))
    world = devices * int(rt["num_nodes"] or 1)
    if not known:
        fix = "give trainer.devices as a number for the batch arithmetic"
        report.add("warning", "trainer.devices", f"{rt['devices']!r} counted as 1", fix, "batch")
    check_accelerator_here(report, rt["accelerator"], elsewhere)
    precision = str(rt["precision"] or "32-true")
    if is_xla(rt["accelerator"], rt["strategy"]):
        check_xla_precision(report, precision)
    else:
        check_device(report, precision, accelerator_name(rt["accelerator"]))
    _check_global_batch(report, cli, world)
    check_schedules(report, cli.model, cli.trainer.max_steps)
    out = Path(out_dir or Path(cli.config.trainer.get("default_root_dir") or "runs") / "check")
    dm, module = cli.datamodule, cli.model
    recipe_workers = int(dm.num_workers)  # check itself reads in-process
    if _load_data(report, dm):
        if not synthetic:  # a handful of generated samples is not a dataset to judge
            check_dataset_size(report, dm, dm.batch_size, world)
        check_stored_values(report, dm)
        if dm.sampler is not None:
            mask_statistics(report, dm.sampler, dm.grid.shape, dm.batch_size)
        batch = _first_batch(report, dm, scan=not synthetic)
        if batch is not None and check_batch(report, batch, module, dm):
            if getattr(batch, "contexts", None):
                report.pictures += save_mask_pictures(batch, module.grid, out)
            module.to("cuda" if cuda else "cpu")
            precision = precision if cuda else "32-true"
            _step(report, module, batch, dm.batch_size, precision, dm.sampler)
            _with_data(report, dm.batch_size, recipe_workers)
    return _finish(report, out, start)


def _step(
    report: CheckReport,
    module: PretrainMethod,
    batch: Any,
    per_device: int,
    precision: str,
    sampler: MaskSampler | None,
) -> None:
    try:
        run_step(report, module, batch, per_device, precision, sampler)
    except Exception as err:
        compiled = module.compile_backend and (
            type(err).__module__.startswith("torch._") or "compile" in str(err)
        )
        report.add(
            "error",
            "model.init_args.compile" if compiled else _key_in(str(err), "model.init_args"),
            f"forward/backward failed: {type(err).__name__}: {str(err).splitlines()[0]}",
            "set model.init_args.compile=false (or compile_backend=aot_eager to tell graph "
            "capture from code generation)"
            if compiled
            else "see the message; the stage table above shows how far the shapes got",
            "device" if compiled else "shape",
        )


def _with_data(report: CheckReport, per_device: int, workers: int) -> None:
    """The step with its data: loading adds to the step without workers, and overlaps it
    with them (a step cannot be faster than the workers deliver)."""
    perf = report.performance
    step = perf.get(f"step time at data.batch_size={per_device} (s)")
    loader = perf.get("loader, in-process (s per batch)")
    if not isinstance(step, (int, float)) or loader is None:
        return
    with_data = step + loader if workers == 0 else max(step, loader / workers)
    how = "step + loading (no workers)" if workers == 0 else f"slower of step and {workers} workers"
    perf["step time with data (s)"] = f"{with_data:.4f} ({how})"


def _first_batch(report: CheckReport, dm, scan: bool = True):
    try:
        loader = iter(dm.train_dataloader())
        first = next(loader)
        if scan:  # the batches after it: NaN/Inf anywhere in them (generated data: no need)
            started = time.perf_counter()
            searched = scan_batches(report, loader, dm)
            if searched:
                report.performance["loader, in-process (s per batch)"] = round(
                    (time.perf_counter() - started) / searched, 4
                )
    except Exception as err:
        named = _key_in(f"{err}", "")
        fallback = f"change {named} as the message says" if named else _UNKNOWN_FIX
        what = "building a batch failed: "
        _caught(report, err, "data", (named or "data.init_args", fallback), what, dm)
        return None
    return first


def _finish(report: CheckReport, out: str | Path, start: float) -> CheckReport:
    report.seconds = time.perf_counter() - start
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "check.json").write_text(report.to_json())
        (out / "check.txt").write_text(report.render() + "\n")
    except OSError as err:  # an unwritable output is already one of the findings
        log.warning("could not write the check report to %s: %s", out, err)
    return report


def main(argv: list[str]) -> int:
    """Entry point of `fmtrain check`; returns the exit code (1 when any error)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: fmtrain check RECIPE [--out DIR] [--synthetic] [--elsewhere] [recipe "
            "overrides, e.g. "
            "--data.init_args.batch_size=4]\n\nBuilds the recipe on this machine, pulls real "
            "batches, runs forward and backward, and reports shapes, masks (with pictures), "
            "parameters, time, memory and every problem with the key to change. Exits 1 on "
            "any error.\n\n--synthetic: check the recipe before its data exists, on a few "
            "samples of its modality and geometry generated in a temporary folder.\n\n"
            "--elsewhere: the recipe trains on another machine (GPUs, a TPU that this one "
            "lacks): check it here on the CPU, with the missing accelerator a warning, not "
            "an error."
        )
        return 0
    recipe, rest = argv[0], list(argv[1:])
    synthetic, elsewhere = "--synthetic" in rest, "--elsewhere" in rest
    rest = [a for a in rest if a not in ("--synthetic", "--elsewhere")]
    out = None
    if "--out" in rest:
        i = rest.index("--out")
        out = rest[i + 1]
        del rest[i : i + 2]
    report = run_check(recipe, rest, out, synthetic=synthetic, elsewhere=elsewhere)
    print(report.render())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
