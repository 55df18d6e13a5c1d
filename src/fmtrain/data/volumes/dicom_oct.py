"""Ophthalmic Tomography Image Storage (multi-frame OCT) DICOM: write and read.

Geometry lives in the functional groups, as on AI-READI's devices: the Pixel Measures macro
(PixelSpacing = [row, column] spacing, SliceThickness, optionally SpacingBetweenSlices) sits in
either the Shared or every item of the Per-frame Functional Groups Sequence, and each frame's
Plane Position macro holds its ImagePositionPatient.

The reader never invents geometry. General-purpose readers (MONAI's among them) fall back to
1 mm spacing for multi-frame OCT and swap axes; here a file without pixel measures is an error
that names the file and the missing attribute.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from fmtrain.data.synthetic.oct_devices import OCTDevice
from fmtrain.data.volumes.dicom_multiframe import read_dicom_file
from fmtrain.data.volumes.volume import Volume

__all__ = ["OPHTHALMIC_TOMOGRAPHY_SOP_CLASS", "read_oct_dicom", "write_oct_dicom"]

OPHTHALMIC_TOMOGRAPHY_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.4"

# Frame axes in the patient coordinate system (LPS): an A-scan line runs left to right across
# the fundus (+x), depth runs posterior (+y), and B-scans step from inferior to superior (+z).
_ROW_DIRECTION = (1.0, 0.0, 0.0)
_COLUMN_DIRECTION = (0.0, 1.0, 0.0)
_FRAME_STEP_DIRECTION = (0.0, 0.0, 1.0)
_IN_STACK_POSITION_TAG = 0x00209057
_FRAME_CONTENT_SEQUENCE_TAG = 0x00209111


def _ds(value: float) -> str:
    """A decimal string (DS, at most 16 characters) that round-trips ``value`` when it can."""
    text = repr(float(value))
    return text if len(text) <= 16 else format_number_as_ds(float(value))


def _uid(uid_seed: str | None, role: str) -> str:
    return generate_uid(entropy_srcs=[uid_seed, role]) if uid_seed is not None else generate_uid()


def write_oct_dicom(
    path: str | Path,
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    device: OCTDevice,
    patient_id: str,
    laterality: str = "R",
    spacing_in: Literal["shared", "per_frame"] = "shared",
    uid_seed: str | None = None,
) -> str:
    """Write a volume as a multi-frame Ophthalmic Tomography Image Storage file.

    The file has a 128-byte preamble and File Meta Information (Explicit VR Little Endian),
    8-bit MONOCHROME2 pixels with one frame per B-scan, and its geometry in the functional
    groups. It is marked as synthetic in ImageComments.

    Args:
        path: Output file; its folder must exist.
        volume: uint8 array [frames, rows, columns].
        spacing: (slice, row, column) spacing in mm. Stored as DICOM decimal strings, so values
            needing more than 16 characters are rounded (the device spacings never do).
        device: Source of Manufacturer and ManufacturerModelName.
        patient_id: PatientID (also used in PatientName).
        laterality: ImageLaterality, ``"R"`` or ``"L"``.
        spacing_in: Where the Pixel Measures macro goes: ``"shared"`` (once, in the Shared
            Functional Groups) or ``"per_frame"`` (in every Per-frame Functional Groups item).
        uid_seed: When given, all UIDs and dates derive from it, so the same arguments produce
            a byte-identical file; otherwise UIDs are random and dates are today's.

    Returns:
        The SOPInstanceUID written.

    Raises:
        ValueError: On a volume that is not 3D uint8, a non-positive spacing, or an unknown
            laterality or ``spacing_in``.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3 or volume.dtype != np.uint8:
        raise ValueError(
            f"write_oct_dicom({path}): volume must be a uint8 array [frames, rows, columns], "
            f"got dtype {volume.dtype} with shape {volume.shape}"
        )
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(
            f"write_oct_dicom({path}): spacing must be three positive mm values "
            f"(slice, row, column), got {spacing!r}"
        )
    if laterality not in ("R", "L"):
        raise ValueError(
            f"write_oct_dicom({path}): laterality must be 'R' or 'L', got {laterality!r}"
        )
    if spacing_in not in ("shared", "per_frame"):
        raise ValueError(
            f"write_oct_dicom({path}): spacing_in must be 'shared' or 'per_frame', "
            f"got {spacing_in!r}"
        )
    frames, rows, columns = volume.shape
    slice_spacing, row_spacing, column_spacing = (float(s) for s in spacing)

    sop_instance_uid = _uid(uid_seed, "sop_instance")
    if uid_seed is not None:
        digest = hashlib.sha256(uid_seed.encode()).digest()
        day = datetime.date(2023, 1, 1) + datetime.timedelta(days=digest[0] + digest[1] % 110)
        clock = f"{9 + digest[2] % 8:02d}{digest[3] % 60:02d}{digest[4] % 60:02d}"
    else:
        now = datetime.datetime.now()
        day, clock = now.date(), now.strftime("%H%M%S")
    date = day.strftime("%Y%m%d")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = OPHTHALMIC_TOMOGRAPHY_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "FMTRAIN_SYNTH"

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = OPHTHALMIC_TOMOGRAPHY_SOP_CLASS
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = clock
    ds.AcquisitionDateTime = date + clock
    ds.AccessionNumber = ""
    ds.Modality = "OPT"
    ds.Manufacturer = device.manufacturer
    ds.ManufacturerModelName = device.model_name
    ds.SoftwareVersions = "fmtrain synthetic OCT"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = "Macular cube (synthetic)"
    ds.PatientName = f"Synthetic^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = _uid(uid_seed, "study")
    ds.SeriesInstanceUID = _uid(uid_seed, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = _uid(uid_seed, "frame_of_reference")
    ds.PositionReferenceIndicator = ""
    ds.ImageLaterality = laterality
    ds.ImageComments = "Synthetic volume generated by fmtrain; not patient data."
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = Sequence()

    dimension_uid = _uid(uid_seed, "dimension_organization")
    organization = Dataset()
    organization.DimensionOrganizationUID = dimension_uid
    ds.DimensionOrganizationSequence = Sequence([organization])
    index = Dataset()
    index.DimensionOrganizationUID = dimension_uid
    index.DimensionIndexPointer = _IN_STACK_POSITION_TAG
    index.FunctionalGroupPointer = _FRAME_CONTENT_SEQUENCE_TAG
    index.DimensionDescriptionLabel = "B-scan"
    ds.DimensionIndexSequence = Sequence([index])

    measures = Dataset()
    measures.PixelSpacing = [_ds(row_spacing), _ds(column_spacing)]
    measures.SliceThickness = _ds(slice_spacing)

    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [_ds(v) for v in _ROW_DIRECTION + _COLUMN_DIRECTION]
    shared.PlaneOrientationSequence = Sequence([orientation])
    anatomy = Dataset()
    anatomy.FrameLaterality = laterality
    region = Dataset()
    region.CodeValue = "5665001"
    region.CodingSchemeDesignator = "SCT"
    region.CodeMeaning = "Retina"
    anatomy.AnatomicRegionSequence = Sequence([region])
    shared.FrameAnatomySequence = Sequence([anatomy])
    if spacing_in == "shared":
        shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    # Frames are centred on the scan: the middle B-scan passes through the origin.
    origin = (-(columns * column_spacing) / 2.0, 0.0, -(frames - 1) * slice_spacing / 2.0)
    per_frame = []
    for i in range(frames):
        item = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = i + 1
        content.DimensionIndexValues = [i + 1]
        item.FrameContentSequence = Sequence([content])
        position = Dataset()
        position.ImagePositionPatient = [
            _ds(round(o + i * slice_spacing * d, 10))
            for o, d in zip(origin, _FRAME_STEP_DIRECTION, strict=True)
        ]
        item.PlanePositionSequence = Sequence([position])
        if spacing_in == "per_frame":
            item.PixelMeasuresSequence = Sequence([measures])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = frames

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(volume).tobytes()
    ds["PixelData"].VR = "OB"

    ds.save_as(path, enforce_file_format=True)
    return str(sop_instance_uid)


def read_oct_dicom(path: str | Path) -> Volume:
    """Read a multi-frame OCT DICOM file into a :class:`Volume`, geometry included.

    The general multi-frame reader (`fmtrain.data.volumes.dicom_multiframe.read_dicom_file`) does
    the work, with no spacing fallback: PixelSpacing from the Pixel Measures macro in the
    Shared Functional Groups, else in the Per-frame items (all frames must then agree), else
    the top level; slice spacing from SpacingBetweenSlices, else the frames'
    ImagePositionPatient (SliceThickness when it agrees with them).

    Args:
        path: The DICOM file.

    Returns:
        Volume with ``array`` [frames, rows, columns] in the stored dtype (float32 only when
        the file has a non-identity RescaleSlope/RescaleIntercept), ``spacing`` (slice, row,
        column) in mm, ``direction``/``origin`` from the plane orientation and positions, and
        ``metadata`` with, among others, ``path``, ``manufacturer``, ``model_name``,
        ``laterality``, ``patient_id``, ``sop_instance_uid``, ``sop_class_uid``,
        ``study_instance_uid``, ``series_instance_uid``, ``number_of_frames``,
        ``spacing_source`` (``"shared"``, ``"per_frame"`` or ``"top_level"``) and
        ``slice_spacing_source`` (the attribute the slice spacing was read from).

    Raises:
        VolumeReadError: If the file is missing, not DICOM, truncated, has no pixel data, or
            lacks the geometry; ``reason`` says which and the message names the file.
    """
    return read_dicom_file(path)
