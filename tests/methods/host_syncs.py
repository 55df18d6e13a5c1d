"""Counting what would make a training step wait for its device, on any device, the CPU
included (where nothing waits, so CUDA's sync debug mode cannot be used): reads of tensor
values on the host (`item`, `tolist`, `bool`, `int`, copies to the CPU), seen as Python calls,
and ops whose output size depends on tensor values (`nonzero`, `unique`, ...), seen as
dispatched ops. Each hit keeps the innermost fmtrain frame that caused it."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# ops that read a value on the host, or size their output by the data
_SYNC_OPS = {
    "_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "unique",
    "_unique", "_unique2", "unique_consecutive", "unique_dim", "bincount", "histc",
    "argwhere", "_assert_async",
}  # fmt: skip
_HOST_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
    torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
}  # fmt: skip


def _where() -> str:
    frames = [f for f in traceback.extract_stack() if "/fmtrain/" in f.filename]
    return f"{frames[-1].filename.split('/fmtrain/')[-1]}:{frames[-1].lineno}" if frames else "?"


class _Reads(TorchFunctionMode):
    def __init__(self, hits: list[str]) -> None:
        super().__init__()
        self.hits = hits

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        copy_to_cpu = func in (torch.Tensor.cpu, torch.Tensor.to) and (
            func is torch.Tensor.cpu or "cpu" in str([*args[1:], *kwargs.values()])
        )
        if func in _HOST_READS or copy_to_cpu:
            self.hits.append(f"{getattr(func, '__name__', func)} at {_where()}")
        return func(*args, **kwargs)


class _Ops(TorchDispatchMode):
    def __init__(self, hits: list[str]) -> None:
        super().__init__()
        self.hits = hits

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in _SYNC_OPS:
            self.hits.append(f"aten.{func.overloadpacket.__name__} at {_where()}")
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_host_syncs() -> Iterator[list[str]]:
    """Within the block, every host read and data-sized op, as "what at file:line"."""
    hits: list[str] = []
    with _Reads(hits), _Ops(hits):
        yield hits
