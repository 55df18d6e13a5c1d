"""The one rule for the global batch: per-device batch x devices x nodes x accumulation.

`fmtrain fit --global_batch_size` refuses to start on a mismatch and `fmtrain check` reports
it; both describe it with the same words so a user sees one message, not two dialects.
"""

from __future__ import annotations


def global_batch_mismatch(
    wanted: int | None, per_device: int, world: int, accumulate: int
) -> tuple[str, str] | None:
    """(problem, fix) when `wanted` differs from the product; None when it matches or is unset."""
    if wanted is None:
        return None
    actual = per_device * world * accumulate
    if actual == wanted:
        return None
    suggested = max(wanted // (per_device * world), 1)
    problem = (
        f"global_batch_size={wanted} but data.batch_size ({per_device}) x devices x nodes "
        f"({world}) x trainer.accumulate_grad_batches ({accumulate}) = {actual}"
    )
    fix = f"set trainer.accumulate_grad_batches={suggested} or change data.batch_size"
    return problem, fix
