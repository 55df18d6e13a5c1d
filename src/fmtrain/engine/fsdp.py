"""FSDP for fmtrain's methods: FSDP units whose shards line up between an encoder and its
EMA twin, and a CPU path (gloo) so the sharded run can be exercised without a GPU.

Lightning's plain `FSDPStrategy` wraps the whole LightningModule as one FSDP unit: every
parameter lives in one flat tensor, cut into one shard per rank. A V-JEPA target encoder
(a deep copy of the context encoder) then sits in a different part of that flat tensor than
the encoder it follows, so on each rank the EMA pairs a parameter's shard with a shard of
another size (rank 0 of 2 holds the encoder and none of the target) and stops with "The size
of tensor a (0) must match the size of tensor b (8192)". Wrapping every part with the
encoder interface (`set_grad_checkpointing`: encoders, predictors) and every transformer
block (`blocks`) as its own unit gives twins identical units, so each rank holds the same
slice of a parameter and of its twin and the EMA stays elementwise. Per-block units are
also what makes FSDP save memory (one block gathered at a time), as torchtitan shards them.

Lightning refuses `strategy="fsdp"` with `accelerator="cpu"` ("requires a GPU accelerator"),
and torch's FSDP needs a `device_id` on the CPU ("FSDP needs a non-CPU accelerator device");
this strategy passes `device_id=cpu`, so it runs over gloo, slowly, for tests and laptops.
There, full state dicts are gathered without `offload_to_cpu`: Lightning asks for it, and on
a CPU torch then frees the memory the checkpoint's tensors are copied from (a segfault).

Importing this module (`fmtrain.engine` does) makes `trainer.strategy: fsdp` this strategy;
on a CPU give it by class path (`strategy: {class_path: fmtrain.engine.fsdp.FSDPStrategy}`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy as LightningFSDPStrategy
from lightning.pytorch.strategies import StrategyRegistry
from torch import nn

__all__ = ["FSDPStrategy", "twin_safe_units"]


def twin_safe_units(root: nn.Module) -> set[int]:
    """ids of the modules that become FSDP units: each with the encoder interface
    (`set_grad_checkpointing`) and each transformer block in a `blocks` list."""
    units = set()
    for module in root.modules():
        if hasattr(module, "set_grad_checkpointing"):
            units.add(id(module))
        for block in getattr(module, "blocks", None) or []:
            if isinstance(block, nn.Module):
                units.add(id(block))
    return units


def _wrap_listed(module: nn.Module, recurse: bool, nonwrapped_numel: int, ids: set[int]) -> bool:
    # FSDP's auto-wrap policy protocol: always recurse; wrap the listed modules
    return True if recurse else id(module) in ids


class FSDPStrategy(LightningFSDPStrategy):
    """Lightning's FSDP with fmtrain's default units (see the module docstring); every
    argument of Lightning's `FSDPStrategy` is accepted, and an explicit `auto_wrap_policy`
    replaces the default one."""

    def _setup_model(self, model: nn.Module) -> nn.Module:
        if "auto_wrap_policy" not in self.kwargs:
            units = twin_safe_units(model)
            self.kwargs["auto_wrap_policy"] = functools.partial(_wrap_listed, ids=units)
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        from torch.distributed.fsdp import FullyShardedDataParallel

        # Lightning passes device_id=root_device.index, None on a CPU, which FSDP refuses
        return FullyShardedDataParallel(
            module=model,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )

    def lightning_module_state_dict(self) -> dict[str, Any]:
        with _no_offload_on_cpu(self):
            return super().lightning_module_state_dict()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        with _no_offload_on_cpu(self):
            return super().optimizer_state(optimizer)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict:
        with _no_offload_on_cpu(self):
            return super().load_checkpoint(checkpoint_path, weights_only)


@contextlib.contextmanager
def _no_offload_on_cpu(strategy: LightningFSDPStrategy) -> Iterator[None]:
    """Lightning's full-state-dict context, without offload_to_cpu when on a CPU."""
    if strategy.root_device.type != "cpu":
        yield
        return
    from lightning.fabric.strategies import model_parallel
    from lightning.pytorch.strategies import fsdp
    from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType
    from torch.distributed.fsdp.api import FullOptimStateDictConfig

    def context(module: nn.Module, world_size: int, rank0_only: bool = True) -> Any:
        return FullyShardedDataParallel.state_dict_type(
            module=module,
            state_dict_type=StateDictType.FULL_STATE_DICT,
            state_dict_config=FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
            optim_state_dict_config=FullOptimStateDictConfig(
                offload_to_cpu=False, rank0_only=rank0_only
            ),
        )

    # the two modules whose code builds that context (saving; loading a full checkpoint)
    modules = (fsdp, model_parallel)
    saved = [m._get_full_state_dict_context for m in modules]
    for m in modules:
        m._get_full_state_dict_context = context
    try:
        yield
    finally:
        for m, original in zip(modules, saved, strict=True):
            m._get_full_state_dict_context = original


def register(registry: Any = StrategyRegistry) -> None:
    """Make the name `fsdp` build this strategy (Lightning's own is one unit: see above)."""
    registry.register(
        "fsdp",
        FSDPStrategy,
        description="Fully Sharded Data Parallel, one unit per encoder, predictor and "
        "transformer block (fmtrain.engine.fsdp)",
        override=True,
    )
