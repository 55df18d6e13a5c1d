"""Datamodules: data, transforms and mask samplers composed into Lightning batches."""

from fmtrain.datamodules.base import PreparedDataModule
from fmtrain.datamodules.batch import MaskCollator, MaskedBatch
from fmtrain.datamodules.restoration import RestorationBatch, RestorationDataModule
from fmtrain.datamodules.signals import SignalDataModule
from fmtrain.datamodules.stream import PretrainStream
from fmtrain.datamodules.volumes import VolumeDataModule

__all__ = [
    "MaskCollator",
    "MaskedBatch",
    "PreparedDataModule",
    "PretrainStream",
    "RestorationBatch",
    "RestorationDataModule",
    "SignalDataModule",
    "VolumeDataModule",
]
