"""Which DICOM objects are images to train on, and why the others are not.

An export from an image archive holds, beside its image series, segmentations (SEG), RT
structure sets, plans and dose grids, structured reports, presentation states and key object
selections. Some carry pixels (a SEG's masks, an RTDOSE's dose grid) and read like any
multi-frame file, so the file's declared kind decides, not whether pixels decode.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID

__all__ = ["NON_IMAGE_MODALITIES", "NON_IMAGE_SOP_CLASSES", "not_an_image"]

# Modality (0008,0060) of objects that are not images, and what each is.
NON_IMAGE_MODALITIES: dict[str, str] = {
    "SEG": "a segmentation",
    "RTSTRUCT": "an RT structure set",
    "RTPLAN": "an RT plan",
    "RTDOSE": "an RT dose grid",
    "RTRECORD": "an RT treatment record",
    "SR": "a structured report",
    "PR": "a presentation state",
    "KO": "a key object selection",
}

# SOP classes that carry pixels but no image, for files whose Modality is missing or odd.
NON_IMAGE_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose Storage
    }
)


def not_an_image(ds: Dataset, *, has_pixels: bool) -> str | None:
    """Why `ds` is not an image to train on, or None when it may be one.

    Args:
        ds: The data set, or only its header (read without pixels).
        has_pixels: Whether the file holds a Pixel Data element (float ones included).

    Returns:
        A short reason naming the Modality and SOP class, for a ``not_an_image`` skip.
    """
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    kind = f"Modality {modality or '(none)'}, SOP class {_sop_name(sop_class)}"
    if modality in NON_IMAGE_MODALITIES:
        return f"{NON_IMAGE_MODALITIES[modality]} ({kind}), not an image"
    if sop_class in NON_IMAGE_SOP_CLASSES:
        return f"not an image ({kind})"
    # an image storage class without pixels or image attributes is a broken image (a header
    # cut short, say), which the reader refuses as one, not an object to set aside
    if not has_pixels and "Rows" not in ds and "Columns" not in ds and not _image_class(sop_class):
        return f"no Pixel Data and no Rows or Columns: not an image ({kind})"
    return None


def _image_class(uid: str) -> bool:
    """Whether `uid` is a storage SOP class of images (CT Image Storage, Enhanced MR Image
    Storage, Ophthalmic Tomography Image Storage, ...) as the standard names them."""
    return bool(uid) and "Image Storage" in UID(uid).name


def _sop_name(uid: str) -> str:
    if not uid:
        return "(none)"
    name = UID(uid).name
    return uid if name == uid else f"{name} ({uid})"
