"""A real training step at reduced input size, for recipes too big to run here at full size.

The fake-tensor pass has the full-size shapes, memory and FLOPs; this runs the recipe's own
method and architecture for real on a smaller input (axes halved, largest first, in
multiples of the patch, until the predicted FLOPs fit), so that the first loss and gradients
are computed and checked for NaN/Inf on this machine too. Masks are drawn by the recipe's own
sampler on the smaller grid; a grid its masks do not fit is grown back until they do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["reduced_sizes", "run_reduced_step"]


def reduced_sizes(
    input_size: Sequence[int], patch: Sequence[int], keep_fraction: float
) -> list[tuple[int, ...]]:
    """Candidate input sizes, smallest first, down to about `keep_fraction` of the tokens:
    the largest axis (in patches) halved at each step, never below one patch."""
    tokens = [s // p for s, p in zip(input_size, patch, strict=True)]
    full = math.prod(tokens)
    sizes = []
    while math.prod(tokens) > max(keep_fraction * full, 1):
        axis = max(range(len(tokens)), key=lambda a: tokens[a])
        if tokens[axis] <= 1:
            break
        tokens[axis] = max(1, tokens[axis] // 2)
        sizes.append(tuple(t * p for t, p in zip(tokens, patch, strict=True)))
    return sizes[::-1]  # smallest first; grown back while the masks do not fit


def _cropped(batch: Any, full: Sequence[int], small: Sequence[int]) -> dict[str, Any]:
    """The batch's float fields cut to the smaller shape on every axis where it shrank."""
    fields = dict(vars(batch))
    for name, value in fields.items():
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue
        if value.ndim != len(full):
            continue
        index = tuple(
            slice(0, s) if d > 0 and value.shape[d] == f and s < f else slice(None)
            for d, (f, s) in enumerate(zip(full, small, strict=True))
        )
        fields[name] = value[index]
    return fields


def _rebuild(module: Any, input_size: Sequence[int]) -> Any:
    """The recipe's method again, from its saved hyper-parameters (as the recipe parser gives
    them: nested class paths included), at another input size."""
    from jsonargparse import ArgumentParser

    settings = {k: v for k, v in module.hparams.items() if not k.startswith("_")}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(type(module), "model", fail_untyped=False, sub_configs=True)
    config = parser.parse_object({"model": {**settings, "input_size": list(input_size)}})
    return parser.instantiate_classes(config).model


def run_reduced_step(module: Any, batch: Any, sampler: Any, flop_fraction: float) -> dict:
    """Build the recipe's method at a smaller input, step it once for real, report.

    Returns:
        dict(input_size, loss, finite, seconds), or dict(skipped=reason).
    """
    grid = module.grid
    m = batch.inputs.shape[0]
    for size in reduced_sizes(grid.input_size, grid.patch_size, flop_fraction):
        try:
            small = _rebuild(module, size)
            if sampler is not None:
                sampler.validate(small.grid.shape)
        except (ValueError, TypeError) as err:  # jsonargparse wraps the model's refusal
            if "input_size" in str(err) or "grid" in str(err) or "tokens" in str(err):
                continue  # the masks (or the network's windows) need a larger grid
            raise
        fields = _cropped(batch, module.expected_input_shape(m), small.expected_input_shape(m))
        if sampler is not None:
            pairs = sampler.sample(small.grid.shape, m, np.random.default_rng(0))
            fields["contexts"] = [p.context for p in pairs]
            fields["targets"] = [p.target for p in pairs]
        reduced = type(batch)(**fields)
        small.train()
        start = time.perf_counter()
        loss = small.run_forward(reduced).loss
        loss.backward()
        grads = [p.grad for p in small.method.parameters() if p.grad is not None]
        finite = bool(torch.isfinite(loss).all()) and all(
            bool(torch.isfinite(g).all()) for g in grads
        )
        return {
            "input_size": list(size),
            "loss": float(loss.detach()),
            "finite": finite,
            "seconds": round(time.perf_counter() - start, 3),
        }
    return {"skipped": "no smaller input fits the recipe's masks and network"}
