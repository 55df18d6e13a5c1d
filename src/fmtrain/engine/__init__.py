"""Run-time machinery around Lightning's loop: atomic checkpoints, resume, out-of-memory advice,
and the opt-in micro-batch finder. Nothing here knows a model or a data format."""

from fmtrain.engine import fsdp as _fsdp

# `trainer.strategy: fsdp` in a recipe means fmtrain's FSDP (units that keep an EMA target's
# shards beside its encoder's); Lightning's own wraps the model as one unit and breaks the EMA
_fsdp.register()
