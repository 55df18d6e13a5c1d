"""Model parts in plain torch.nn: no Lightning, no data."""

from .grid import TokenGrid
from .predictor import JEPAPredictor
from .vit import VIT_SIZES, VisionTransformer

__all__ = ["VIT_SIZES", "JEPAPredictor", "TokenGrid", "VisionTransformer"]
