"""What the volume reader tests share: real files on disk (pydicom's and nibabel's test data,
nilearn's templates), geometry read off the `Volume` contract, and a writer of single-frame
DICOM series from a real multi-frame MR."""

from __future__ import annotations

import glob
from pathlib import Path

import nibabel as nib
import nilearn
import numpy as np
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from fmtrain.data.volumes.volume import Volume

DATA_STORE = Path(get_testdata_file("emri_small.dcm")).parent
EMRI_VARIANTS = sorted(
    p for p in glob.glob(str(DATA_STORE / "emri_small*.dcm")) if "too_short" not in p
)
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
NIBABEL_FILES = [
    "anatomical.nii",
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "functional.nii",
    "reoriented_anat_moved.nii",
    "standard.nii.gz",
]
NILEARN_FILES = sorted(glob.glob(str(Path(nilearn.__file__).parent / "datasets/data/*.nii.gz")))
LPS = np.array([-1.0, -1.0, 1.0])  # RAS -> LPS: negate the first two world axes


def world(volume: Volume, index_zyx) -> np.ndarray:
    """LPS position of a voxel according to the Volume contract."""
    offset = np.asarray(index_zyx, float) * np.asarray(volume.spacing)
    return np.asarray(volume.origin) + offset @ volume.direction


def floats(values) -> np.ndarray:
    """DICOM decimal strings (a multi-value) as floats."""
    return np.array([float(v) for v in values])


# single-frame series written from a real multi-frame MR

ROW = np.array([0.8, 0.6, 0.0])  # an oblique plane, so a wrong axis order shows
COLUMN = np.array([0.0, 0.0, -1.0])
NORMAL = np.cross(ROW, COLUMN)
ORIGIN = np.array([-12.5, 40.25, 7.0])
PIXEL_SPACING = (0.9, 0.75)
STEP = 1.5


def write_series(
    folder: Path,
    frames: np.ndarray,
    *,
    step: float = STEP,
    positions: bool = True,
    series_uid: str | None = None,
    seed: int = 0,
    jitter: dict[int, float] | None = None,
) -> str:
    """Write each frame as its own MR Image Storage file: shuffled names, scrambled
    InstanceNumbers, frame i at ORIGIN + i * step * NORMAL (+ jitter[i] mm)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    names = rng.permutation(len(frames))
    numbers = rng.permutation(len(frames)) + 1
    for i in rng.permutation(len(frames)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.Manufacturer = "MR", "series-test", "pydicom-data"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid
        ds.InstanceNumber = int(numbers[i]) if positions else int(i + 1)
        ds.PixelSpacing = [str(v) for v in PIXEL_SPACING]
        ds.SliceThickness = str(step)
        if positions:
            where = ORIGIN + (i * step + (jitter or {}).get(i, 0.0)) * NORMAL
            ds.ImagePositionPatient = [f"{v:.6f}" for v in where]
        else:
            ds.SpacingBetweenSlices = str(abs(step))
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*ROW, *COLUMN)]
        ds.Rows, ds.Columns = frames.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(frames[i], dtype=np.uint16).tobytes()
        ds.save_as(folder / f"IM{names[i]:04d}", enforce_file_format=True)
    return series_uid


def assert_same(a: Volume, b: Volume) -> None:
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spacing == b.spacing
    np.testing.assert_array_equal(a.direction, b.direction)
    assert a.origin == b.origin
