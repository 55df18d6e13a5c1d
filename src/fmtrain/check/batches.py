"""Classes 2, 3 (batch vs dataset), 5 and 9 (inputs): real batches against the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fmtrain.check.problems import CheckReport

__all__ = ["check_batch", "check_dataset_size", "mask_statistics", "report_non_finite"]

# A context below this fraction of the grid leaves the predictor almost nothing to go on.
_TINY_CONTEXT_FRACTION = 0.05


def check_dataset_size(report: CheckReport, dm: Any, per_device: int, world: int) -> None:
    """Class 3/5: a training split smaller than one global batch cannot fill a step.

    The datamodule names its samples (`sample_noun`), their setting (`source_key`) and how
    to get more (`more_data_fix`); volume datamodules' wording is the default.
    """
    num_train = len(dm.train_set)
    noun = getattr(dm, "sample_noun", "volumes")
    source_key = getattr(dm, "source_key", "data.init_args.source")
    more = getattr(dm, "more_data_fix", "add data or check data.devices / data.split_fractions")
    global_batch = per_device * world
    if num_train < global_batch:
        report.add(
            "error",
            "data.init_args.batch_size",
            f"the training split holds {num_train} {noun}, fewer than one global batch "
            f"({per_device} per device x {world} devices = {global_batch})",
            f"lower data.init_args.batch_size to at most {max(num_train // world, 1)}, or "
            f"{more} ({source_key})",
            "batch",
        )
    elif num_train < 4 * global_batch:
        report.add(
            "warning",
            source_key,
            f"only {num_train} training {noun} for a global batch of {global_batch}: every "
            f"one repeats every few steps",
            more,
            "data",
        )


def _tensors(value: Any, name: str) -> list[tuple[str, torch.Tensor]]:
    """Every tensor in a batch (dataclass, mapping, sequence), with its field path."""
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    if hasattr(value, "__dataclass_fields__"):
        value = {f: getattr(value, f) for f in value.__dataclass_fields__}
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _tensors(v, f"{name}.{k}")]
    if isinstance(value, list | tuple):
        return [t for i, v in enumerate(value) for t in _tensors(v, f"{name}[{i}]")]
    return []


def check_tensor_types(report: CheckReport, batch: Any) -> None:
    """A tensor subclass in a batch (MONAI's MetaTensor, from a transform) spreads to every
    activation and loss: XLA's tracing and torch.compile break on it, far from the cause."""
    odd = [(name, type(t)) for name, t in _tensors(batch, "batch") if type(t) is not torch.Tensor]
    if odd:
        name, kind = odd[0]
        report.add(
            "error",
            "data.init_args.augment",
            f"{len(odd)} batch tensor(s) are {kind.__module__}.{kind.__name__}, a torch.Tensor "
            f"subclass, not a plain tensor (first: {name})",
            "return plain tensors from transforms and datasets: `t.as_subclass(torch.Tensor)` "
            "(MONAI: `MetaTensor.as_tensor()`); fmtrain's own augmentations do",
            "numerics",
        )


def check_batch(report: CheckReport, batch, model, dm) -> bool:
    """Class 2 and 9: does the batch have the shapes, index ranges and values the model
    consumes? Returns False when the batch cannot be fed to the model at all."""
    check_tensor_types(report, batch)
    x = batch.inputs
    grid = model.grid
    channels = model.in_chans
    ok = True
    # the layout the method consumes: [B, C, *input_size] unless it says otherwise
    want = tuple(model.expected_input_shape(x.shape[0]))
    axis = model.channel_axis
    if x.ndim != len(want) or x.shape[axis] != channels:
        report.add(
            "error",
            "data.init_args",
            f"batch inputs have {x.shape[axis] if x.ndim > axis else '?'} channel(s) "
            f"(shape {list(x.shape)}), the encoder was built for {channels} (the datamodule's "
            "`channels`, linked into model.init_args.in_chans)",
            "make the datamodule's `channels` say what its batches carry",
            "shape",
        )
        ok = False
    elif tuple(x.shape) != want:
        report.add(
            "error",
            "data.init_args.input_size",
            f"batch inputs are {list(x.shape)}, the model expects {list(want)}",
            "let data.input_size define the grid (it is linked into the model); do not set "
            "model.input_size separately",
            "shape",
        )
        ok = False
    families = model.num_mask_families
    contexts, targets = getattr(batch, "contexts", []), getattr(batch, "targets", [])
    if families is not None and (len(contexts) != families or len(targets) != families):
        report.add(
            "error",
            "data.init_args.masks",
            f"the batch carries {len(contexts)} mask families, {type(model).__name__} was "
            f"built for {families}" + (" and needs masks to train" if not contexts else ""),
            "give data.masks a sampler (e.g. class_path: fmtrain.masks.RandomPatch)"
            if not contexts
            else "keep model.num_mask_families linked to the data (the method's link)",
            "masks",
        )
        ok = False
    n = grid.num_tokens
    for i, (ctx, tgt) in enumerate(zip(contexts, targets, strict=False)):
        ok &= _check_indices(report, i, ctx, tgt, x.shape[0], n, dm)
    if not bool(torch.isfinite(x).all()):
        report_non_finite(report, batch, dm)
        ok = False
    return ok


def report_non_finite(
    report: CheckReport,
    batch: Any,
    dm: Any,
    where: str = "the first batch",
) -> None:
    """Say whether the stored samples or the augmentation made the non-finite values."""
    ids = batch.sample_ids.tolist() if batch.sample_ids is not None else []
    stored = [i for i in ids if not bool(torch.isfinite(torch.as_tensor(_stored(dm, i))).all())]
    count = int((~torch.isfinite(batch.inputs)).sum())
    if stored:
        keys = [dm.train_set.samples[i]["key"] for i in stored]
        prepared = getattr(dm, "prepared", None)
        report.add(
            "error",
            "data.init_args.prepared" if prepared else getattr(dm, "source_key", "data"),
            f"{where} holds {count} non-finite values; stored samples {keys} contain NaN/Inf",
            f"prepare the data again (prepare refuses non-finite samples) into a new "
            f"location; the damaged dataset is {prepared}"
            if prepared
            else "replace those files",
            "numerics",
        )
    else:
        report.add(
            "error",
            "data.init_args.augment",
            f"{where} holds {count} non-finite values, but the stored samples are finite: "
            "the augmentation made them",
            "check the data.augment settings",
            "numerics",
        )


def _stored(dm: Any, index: int) -> Any:
    """Sample `index` of the training split as stored (restoration clips: their frames)."""
    sample = dm.train_set.load(index)
    if isinstance(sample, dict):
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in sample.values()])
    return sample


def _check_indices(report, family, ctx, tgt, batch, n, dm) -> bool:
    key = f"data.init_args.masks[{family}]"
    for name, idx in (("context", ctx), ("target", tgt)):
        if idx.dtype != torch.int64 or idx.ndim != 2 or idx.shape[0] != batch:
            report.add(
                "error",
                key,
                f"{name} indices are {idx.dtype} {list(idx.shape)}; the model consumes int64 "
                f"[B={batch}, N] indices into the flattened grid",
                "use a sampler from fmtrain.masks (index tensors, never dense masks)",
                "masks",
            )
            return False
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            report.add(
                "error",
                key,
                f"{name} indices span [{int(idx.min())}, {int(idx.max())}] on a grid of {n} tokens",
                "sample masks over the model's token grid (data.patch_size is linked to it)",
                "masks",
            )
            return False
    overlap = any(np.intersect1d(c.numpy(), t.numpy()).size for c, t in zip(ctx, tgt, strict=True))
    if overlap or tgt.shape[1] == 0 or ctx.shape[1] < max(dm.sampler.min_context_tokens, 1):
        report.add(
            "error",
            key,
            f"masks give {ctx.shape[1]} context and {tgt.shape[1]} target tokens"
            + (" with context and target overlapping" if overlap else ""),
            "fewer or smaller blocks in data.masks, or a larger grid",
            "masks",
        )
        return False
    return True


def mask_statistics(
    report: CheckReport, sampler, grid: tuple[int, ...], batch_size: int, batches: int = 32
) -> None:
    """Context/target fractions per mask family over many sampled batches."""
    rng = np.random.default_rng(0)
    n = int(np.prod(grid))
    families = sampler.num_families()
    specs = getattr(sampler, "families", None) or [sampler] * families
    per_family: list[tuple[list[float], list[float]]] = [([], []) for _ in range(families)]
    # Fractions are of the tokens a family is drawn over: the whole grid for most samplers,
    # a level's region for hierarchical masks (whose finer levels cover a box of the grid).
    covered = sampler.family_tokens(grid)
    for _ in range(batches):
        pairs = sampler.sample(grid, batch_size, rng)
        for f, ((ctx_f, tgt_f), pair) in enumerate(zip(per_family, pairs, strict=True)):
            ctx_f += [pair.context.shape[1] / covered[f]] * batch_size
            tgt_f += [pair.target.shape[1] / covered[f]] * batch_size
    for i, (ctx_f, tgt_f) in enumerate(per_family):
        report.masks.append(
            {
                "family": i,
                "spec": str(specs[i]),
                "num_tokens": covered[i],
                "context_fraction": [min(ctx_f), float(np.mean(ctx_f)), max(ctx_f)],
                "target_fraction": [min(tgt_f), float(np.mean(tgt_f)), max(tgt_f)],
            }
        )
        if min(ctx_f) < _TINY_CONTEXT_FRACTION:
            where = "grid's" if covered[i] == n else "family's region's"
            report.add(
                "warning",
                f"data.init_args.masks[{i}]",
                f"context can fall to {min(ctx_f):.1%} of the {covered[i]} {where} tokens: "
                "the model then sees almost nothing",
                "a lower mask ratio, fewer or smaller blocks, or a larger token grid",
                "masks",
            )
