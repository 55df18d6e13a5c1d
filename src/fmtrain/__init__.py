"""fmtrain: self-supervised pretraining for volumes, video and 1D signals."""

__version__ = "0.1.0"
