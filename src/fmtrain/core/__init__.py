"""Ground floor: the token grid (the contract between data and model) and storage URLs.

No torch models and no Lightning here; every other part may import these.
"""

from fmtrain.core.grid import TokenGrid

__all__ = ["TokenGrid"]
