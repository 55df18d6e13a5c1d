"""Measures of representation quality."""

from fmtrain.eval.rank import effective_rank

__all__ = ["effective_rank"]
