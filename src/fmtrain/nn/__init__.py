"""Model parts in plain torch.nn: no Lightning, no data."""

from fmtrain.nn.decoder import MAEDecoder
from fmtrain.nn.encoder import Encoder, EncoderSpec, ViTEncoder
from fmtrain.nn.heads import MeanPool, mean_pool
from fmtrain.nn.predictor import JEPAPredictor
from fmtrain.nn.sparse_cnn import SparseCNNEncoder
from fmtrain.nn.vit import VIT_SIZES, VisionTransformer

__all__ = [
    "VIT_SIZES",
    "Encoder",
    "EncoderSpec",
    "JEPAPredictor",
    "MAEDecoder",
    "MeanPool",
    "SparseCNNEncoder",
    "ViTEncoder",
    "VisionTransformer",
    "mean_pool",
]
