"""Measures of representation quality."""

from .rank import effective_rank

__all__ = ["effective_rank"]
