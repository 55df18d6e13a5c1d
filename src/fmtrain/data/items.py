"""One item to read (a volume, a recording), shared by every data wing's catalog and splits."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CatalogItem"]


@dataclass(frozen=True)
class CatalogItem:
    """One file (or DICOM series) to read: a volume or a recording.

    Attributes:
        key: unique name of the item (its path relative to the source's folder).
        paths: the file, or the files of one DICOM series, as paths or URLs.
        participant_id: whose data it is; splits never put one participant in two splits.
            File lists without the column use the key, so each file is its own participant.
        device: device model (manifest ``manufacturers_model_name``), or ``"unknown"``.
        attributes: other columns (anatomic_region, laterality, labels, ...), as text.
    """

    key: str
    paths: tuple[str, ...]
    participant_id: str
    device: str = "unknown"
    attributes: dict[str, str] = field(default_factory=dict)
