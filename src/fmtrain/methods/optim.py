"""AdamW parameter groups: weight decay on weight matrices only."""

from __future__ import annotations

from torch import nn


def decay_param_groups(*modules: nn.Module) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Biases, norm scales (every parameter with fewer than 2 dims) and the names any
    submodule lists in `no_weight_decay()` get no decay. Each group carries `apply_weight_decay`,
    which the weight-decay schedule reads to leave the second group at 0.
    """
    decay, no_decay = [], []
    for module in modules:
        # names listed by any submodule, made relative to `module`
        skip = {
            f"{prefix}.{name}" if prefix else name
            for prefix, sub in module.named_modules()
            if hasattr(sub, "no_weight_decay")
            for name in sub.no_weight_decay()
        }
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim < 2 or name in skip or name.endswith(".bias"):
                no_decay.append(param)
            else:
                decay.append(param)
    return [
        {"params": decay, "apply_weight_decay": True},
        {"params": no_decay, "apply_weight_decay": False, "weight_decay": 0.0},
    ]
