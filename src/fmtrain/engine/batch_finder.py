"""Opt-in micro-batch finder (`--find_micro_batch=true`): the largest per-device batch that fits.

The global batch is part of the recipe (it sets the optimization); the micro-batch is a property
of the machine. So the finder tries micro-batches, each with one real forward + backward +
optimizer step, keeps the largest that fits *and divides the per-device share of the global
batch*, and sets ``trainer.accumulate_grad_batches`` so that micro-batch x devices x
accumulation equals ``--global_batch_size`` exactly.

Trials run on one device, before `fit`; the model's weights and the RNG states are put back
afterwards, so the run starts as it would have without the finder. Under DDP each device also
holds gradient buckets (about one more copy of the gradients) that a one-device trial does not
see; on a run that is tight on memory, pass a smaller `--global_batch_size` share or turn on
activation checkpointing.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import os
import warnings
from collections.abc import Callable

import lightning.pytorch as pl
import torch

from fmtrain.engine.announce import announce
from fmtrain.engine.oom import MemorySettings, oom_message

log = logging.getLogger("fmtrain")

# The launching process hands its answer to the processes Lightning's launcher starts, so
# every rank trains with the same micro-batch: "<micro_batch>:<global_batch_size>".
ENV_FOUND = "FMTRAIN_FOUND_MICRO_BATCH"


def divisors(n: int) -> list[int]:
    """Positive divisors of `n`, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def plan_micro_batch(
    fits: Callable[[int], bool], *, global_batch_size: int, world_size: int = 1
) -> tuple[int, int]:
    """The largest micro-batch that fits, and the accumulation that keeps the global batch.

    Doubles from 1 until a size fails (or passes the per-device share), then tries the
    divisors of the share between the last success and the first failure, largest first.
    Memory is taken to grow with the batch, so a divisor below a size that fit is not tried.

    Args:
        fits: runs one training step with the given micro-batch; False when out of memory.
        global_batch_size: micro-batch x world_size x accumulation must equal it.
        world_size: devices x nodes.

    Returns:
        (micro_batch, accumulate_grad_batches).

    Raises:
        ValueError: the global batch does not split evenly over the devices.
        torch.OutOfMemoryError: not even a micro-batch of 1 fits.
    """
    if global_batch_size < 1 or global_batch_size % world_size:
        raise ValueError(
            f"--global_batch_size={global_batch_size} must be a positive multiple of the "
            f"number of devices x nodes ({world_size})"
        )
    per_device = global_batch_size // world_size
    fitted, failed, size = 0, per_device + 1, 1
    while size <= per_device:
        if not fits(size):
            failed = size
            break
        fitted, size = size, size * 2
    if fitted == 0:
        raise torch.OutOfMemoryError("a micro-batch of 1 does not fit")
    for d in reversed(divisors(per_device)):
        if d >= failed:
            continue
        if d <= fitted or fits(d):
            return d, per_device // d
    raise AssertionError("unreachable: 1 divides every share and fitted >= 1")


def make_trial(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule
) -> Callable[[int], bool]:
    """A `fits(micro_batch)` predicate that runs one real step in a throwaway one-device Trainer.

    The throwaway Trainer has no logger, callbacks or checkpoints; `model` and the RNG states
    are restored after every trial.
    """
    device = trainer.strategy.root_device
    devices = [device.index or 0] if device.type == "cuda" else 1
    weights = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})

    def fits(micro_batch: int) -> bool:
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        datamodule.batch_size = micro_batch
        probe = pl.Trainer(
            accelerator=device.type,
            devices=devices,
            precision=trainer.precision,
            max_steps=trainer.max_steps,
            max_epochs=1,
            limit_train_batches=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            callbacks=[],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                probe.fit(model, datamodule=datamodule)
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            model.load_state_dict(weights)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    return fits


def find_micro_batch(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    global_batch_size: int | None,
    settings: MemorySettings,
) -> None:
    """Set ``datamodule.batch_size`` and ``trainer.accumulate_grad_batches`` from trials.

    Skipped (with a log line) unless the run is on a CUDA device. `settings` feed the message
    when not even a micro-batch of 1 fits.
    """
    if global_batch_size is None:
        raise SystemExit(
            "--find_micro_batch=true needs --global_batch_size: the finder picks the micro-batch "
            "and sets trainer.accumulate_grad_batches so that data.batch_size x devices x nodes x "
            "accumulation equals it."
        )
    world = trainer.world_size
    if trainer.strategy.root_device.type != "cuda":
        log.warning("--find_micro_batch: skipped, the run is not on a CUDA device")
        return
    handed = os.environ.get(ENV_FOUND, "")
    micro, _, wanted = handed.partition(":")
    if micro and wanted == str(global_batch_size):
        micro_batch, accumulate = int(micro), global_batch_size // (int(micro) * world)
    elif world > 1 and trainer.strategy.cluster_environment.creates_processes_externally:
        raise SystemExit(
            "--find_micro_batch: this process was started by an external launcher (torchrun, "
            "SLURM), where each rank would search on its own. Run the finder once with "
            "--trainer.devices=1 and pass the data.batch_size and "
            "trainer.accumulate_grad_batches it reports."
        )
    else:
        try:
            micro_batch, accumulate = plan_micro_batch(
                make_trial(trainer, model, datamodule),
                global_batch_size=global_batch_size,
                world_size=world,
            )
        except ValueError as err:
            raise SystemExit(f"--find_micro_batch: {err}") from err
        except torch.OutOfMemoryError as err:
            one = dataclasses.replace(settings, batch_size=1)
            raise SystemExit(oom_message(one, err)) from err
        os.environ[ENV_FOUND] = f"{micro_batch}:{global_batch_size}"
    datamodule.batch_size = micro_batch
    trainer.accumulate_grad_batches = accumulate
    announce(
        f"--find_micro_batch: data.batch_size={micro_batch}, trainer.accumulate_grad_batches="
        f"{accumulate} (x {world} devices = global batch {global_batch_size})"
    )
