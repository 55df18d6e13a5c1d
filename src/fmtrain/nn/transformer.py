"""Pre-norm transformer block over `scaled_dot_product_attention`."""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

# SDPA kernels fmtrain lets PyTorch choose from, best first. cuDNN attention is left out on
# purpose: on an H100 (torch 2.11+cu130, bf16) SDPA picked it for the V-JEPA quality recipe
# and 67 of 1,000 steps went non-finite from step 531 on, with a replay that could not
# reproduce them; with cuDNN attention disabled the same run skipped 0 of 1,000 (one A/B
# pair, measured outside the issues on 2026-11-25). Flash and memory-efficient kernels were as
# fast on the median there, without cuDNN's long tail of slow steps.
ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

#: `model.init_args.attention_backend`: "auto" lets SDPA choose among `ATTENTION_BACKENDS`;
#: a named kernel is the only one allowed (a benchmark then measures exactly it), and one
#: that cannot run the inputs (flash needs fp16/bf16 on a GPU, efficient a GPU) stops the
#: first step with PyTorch's reasons. "cudnn" is opt-in only, for the reason above.
AttentionBackend = Literal["auto", "flash", "efficient", "math", "cudnn"]
_KERNELS: dict[str, list[SDPBackend]] = {
    "auto": ATTENTION_BACKENDS,
    "flash": [SDPBackend.FLASH_ATTENTION],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    "math": [SDPBackend.MATH],
    "cudnn": [SDPBackend.CUDNN_ATTENTION],
}


def attention_kernels(backend: str) -> list[SDPBackend]:
    """The SDPA kernels an `attention_backend` setting allows, best first."""
    if backend not in _KERNELS:
        raise ValueError(
            f"model.init_args.attention_backend={backend!r}: expected one of "
            f"{', '.join(get_args(AttentionBackend))} (auto: flash, then memory-efficient, "
            "then math; cuDNN only when named)"
        )
    return _KERNELS[backend]


class Attention(nn.Module):
    """Multi-head self-attention over SDPA with the kernels of `backend` (default: flash,
    then memory-efficient, then math, whichever first runs the inputs)."""

    def __init__(
        self, dim: int, num_heads: int, *, qkv_bias: bool = True, backend: str = "auto"
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.set_attention_backend(backend)

    def set_attention_backend(self, backend: str) -> None:
        """Allow only the SDPA kernels of `backend` ("auto", "flash", "efficient", "math",
        "cudnn")."""
        attention_kernels(backend)  # refuses an unknown name now, not at the first step
        # the name, not the kernels: SDPBackend values cannot be pickled, and spawn-type
        # launchers (XLA on a TPU, ddp_spawn) pickle the model into each process
        self.backend = backend

    @property
    def kernels(self) -> list[SDPBackend]:
        """The SDPA kernels this attention may use, best first."""
        return attention_kernels(self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        with sdpa_kernel(self.kernels):
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            )
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample during training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal linear weights, zero biases, unit norms (the ViT/V-JEPA default)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
