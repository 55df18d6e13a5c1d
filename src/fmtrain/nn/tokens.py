"""Token selection by index, shared by encoders, predictors and decoders."""

from __future__ import annotations

import torch


def gather_tokens(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Select tokens per sample: x [B, N, D], indices int64 [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, indices.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def expect_tokens(
    tokens: torch.Tensor, batch: int, count: int, key: str = "model.init_args.encoder"
) -> torch.Tensor:
    """Insist that an encoder returned tokens [batch, count, D], and say what to fix if not.

    An encoder that pools ([B, D]) or reorders axes would otherwise fail far downstream
    (a decoder's gather or a shape mismatch inside attention) with no mention of the encoder.
    """
    if tokens.ndim != 3 or tokens.shape[0] != batch or tokens.shape[1] != count:
        pooled = tokens.ndim == 2
        raise ValueError(
            f"{key} returned {list(tokens.shape)} where tokens [{batch}, {count}, D] are "
            f"needed ({count} = the tokens it was asked to encode). "
            + (
                "It pools: encoders must return every token; pooling is a separate head "
                "(fmtrain.nn.heads), applied by probes, never inside the encoder."
                if pooled
                else "Encoders return [batch, tokens, width] in the token grid's order."
            )
        )
    return tokens
