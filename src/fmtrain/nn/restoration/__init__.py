"""Video restoration networks (VRT-style) in plain torch.nn: blurry frames in, sharp frames out."""

from fmtrain.nn.restoration.drop_path import drop_path_scales
from fmtrain.nn.restoration.spec import VRTNetwork
from fmtrain.nn.restoration.tmsa import TMSABlock, TMSAStage, WindowMutualAttention
from fmtrain.nn.restoration.vrt import VRT_SIZES, VRTLite, VRTSize
from fmtrain.nn.restoration.windows import window_masks, window_partition, window_reverse

__all__ = [
    "VRT_SIZES",
    "TMSABlock",
    "TMSAStage",
    "VRTLite",
    "VRTNetwork",
    "VRTSize",
    "WindowMutualAttention",
    "drop_path_scales",
    "window_masks",
    "window_partition",
    "window_reverse",
]
