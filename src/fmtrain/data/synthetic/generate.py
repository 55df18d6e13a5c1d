"""Write a synthetic OCT dataset laid out like AI-READI: DICOM files, manifest.tsv, labels.tsv.

Layout under ``out_dir``::

    manifest.tsv                 AI-READI columns, see fmtrain.data.volumes.manifest
    labels.tsv                   ground truth for probes
    lesions.tsv                  lesion scale and the largest lesion's size per volume (mm);
                                 apart from labels.tsv so that probes do not take them as tasks
    retinal_oct/<device>/<participant_id>/<participant_id>_<laterality>.dcm

Every file goes through the real DICOM writer, and the manifest's geometry is what that file
holds, so the rest of the pipeline reads synthetic data exactly as it reads AI-READI.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from fmtrain.data.preparation import run_tasks
from fmtrain.data.synthetic.oct_devices import OCT_DEVICES
from fmtrain.data.synthetic.synthetic_oct import PATHOLOGIES, synthesize_oct
from fmtrain.data.volumes.dicom_oct import write_oct_dicom
from fmtrain.data.volumes.manifest import ManifestRow, write_manifest

__all__ = ["LABEL_COLUMNS", "LESION_COLUMNS", "generate_oct_dataset"]

LABEL_COLUMNS = (
    "participant_id",
    "sop_instance_uid",
    "filepath",
    "device",
    "pathology",
    "foveal_thickness_mm",
)
LESION_COLUMNS = (
    "filepath",
    "pathology",
    "lesion_scale",
    "lesion_max_width_mm",
    "lesion_max_height_mm",
)


@dataclass(frozen=True)
class _Task:
    out_dir: str
    index: int
    participant_id: str
    device: str
    scale: float
    pathology_fraction: float
    seed: int
    spacing_in: Literal["shared", "per_frame"]
    lesion_scale: tuple[float, float] = (1.0, 1.0)


def _participant(task: _Task) -> tuple[ManifestRow, dict[str, str], dict[str, str]]:
    """Synthesize and write one participant's volume; runs in a worker process."""
    # Everything random about a participant comes from (seed, index), never from the order in
    # which workers finish, so any worker count writes the same files.
    rng = np.random.default_rng([task.seed, task.index])
    laterality = "R" if rng.uniform() < 0.5 else "L"
    abnormal = PATHOLOGIES[1:]
    pathology = (
        abnormal[int(rng.integers(len(abnormal)))]
        if rng.uniform() < task.pathology_fraction
        else "normal"
    )
    volume_seed = int(rng.integers(0, 2**31 - 1))
    # drawn after everything above, so a fixed scale leaves earlier datasets unchanged
    low, high = task.lesion_scale
    lesion_scale = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else low

    device = OCT_DEVICES[task.device].scaled(task.scale)
    oct_ = synthesize_oct(
        device,
        seed=volume_seed,
        pathology=pathology,
        laterality=laterality,
        lesion_scale=lesion_scale,
    )
    relative = Path("retinal_oct", device.key, task.participant_id)
    filename = f"{task.participant_id}_{laterality}.dcm"
    (Path(task.out_dir) / relative).mkdir(parents=True, exist_ok=True)
    sop_instance_uid = write_oct_dicom(
        Path(task.out_dir) / relative / filename,
        oct_.volume,
        oct_.spacing,
        device=device,
        patient_id=task.participant_id,
        laterality=laterality,
        spacing_in=task.spacing_in,
        uid_seed=f"fmtrain-synthetic-oct/{task.seed}/{task.participant_id}/{laterality}",
    )
    filepath = (relative / filename).as_posix()
    row = ManifestRow(
        participant_id=task.participant_id,
        manufacturer=device.manufacturer,
        manufacturers_model_name=device.model_name,
        anatomic_region="macula",
        imaging="oct",
        laterality=laterality,
        height=device.rows,
        width=device.columns,
        number_of_frames=device.frames,
        pixel_spacing=(device.row_spacing_mm, device.column_spacing_mm),
        slice_thickness=device.slice_spacing_mm,
        sop_instance_uid=sop_instance_uid,
        filepath=filepath,
    )
    labels = {
        "participant_id": task.participant_id,
        "sop_instance_uid": sop_instance_uid,
        "filepath": filepath,
        "device": device.key,
        "pathology": pathology,
        "foveal_thickness_mm": repr(oct_.foveal_thickness_mm),
    }
    lesions = {
        "filepath": filepath,
        "pathology": pathology,
        "lesion_scale": f"{lesion_scale:.4g}",
        "lesion_max_width_mm": f"{oct_.labels.get('lesion_max_width_mm', 0.0):.4g}",
        "lesion_max_height_mm": f"{oct_.labels.get('lesion_max_height_mm', 0.0):.4g}",
    }
    return row, labels, lesions


def generate_oct_dataset(
    out_dir: str | Path,
    *,
    num_participants: int = 64,
    devices: Sequence[str] = ("spectralis", "maestro2", "triton", "cirrus"),
    scale: float = 1.0,
    pathology_fraction: float = 0.5,
    seed: int = 0,
    workers: int = 1,
    lesion_scale: float | tuple[float, float] = 1.0,
) -> Path:
    """Generate a synthetic OCT dataset: one volume per participant, as real DICOM.

    Participant ``i`` (ids ``"1001"``, ``"1002"``, ...) is scanned on ``devices[i % n]``; the
    eye, the pathology (``pathology_fraction`` of participants get one of the non-normal
    :data:`~fmtrain.data.synthetic.synthetic_oct.PATHOLOGIES`, uniformly) and the anatomy
    are drawn from
    ``(seed, i)``. Pixel measures alternate between the shared and per-frame functional groups
    so that every device gets both layouts. The output is byte-identical for the same
    arguments, whatever ``workers`` is.

    Args:
        out_dir: Output folder (created if needed); existing files of the same names are
            overwritten.
        num_participants: Number of volumes to write.
        devices: Keys of :data:`~fmtrain.data.synthetic.oct_devices.OCT_DEVICES`, used round-robin.
        scale: Sampling density relative to each device's real matrix; 0.25 is the CPU demo.
        pathology_fraction: Probability, per participant, of a non-normal pathology.
        seed: Non-negative dataset seed.
        workers: Processes to synthesize with; 1 runs in this process.
        lesion_scale: Size of drusen and fluid pockets relative to their clinical size (see
            :func:`~fmtrain.data.synthetic.synthetic_oct.synthesize_oct`); a pair (low, high)
            draws each participant's scale log-uniformly between them, so one dataset holds
            lesions from smaller than a token to several tokens across. Written per volume
            to ``lesions.tsv`` with the largest lesion's width and height.

    Returns:
        Path of the written ``manifest.tsv``; ``labels.tsv`` sits beside it.

    Raises:
        ValueError: On an unknown device key or an out-of-range argument.
    """
    unknown = [d for d in devices if d not in OCT_DEVICES]
    if not devices or unknown:
        raise ValueError(
            f"generate_oct_dataset: devices must be a non-empty list of keys of OCT_DEVICES "
            f"{sorted(OCT_DEVICES)}, got {list(devices)!r}"
        )
    if num_participants < 1:
        raise ValueError(
            f"generate_oct_dataset: num_participants must be >= 1, got {num_participants}"
        )
    if not 0.0 <= pathology_fraction <= 1.0:
        raise ValueError(
            f"generate_oct_dataset: pathology_fraction must be in [0, 1], got {pathology_fraction}"
        )
    if not scale > 0:
        raise ValueError(f"generate_oct_dataset: scale must be > 0, got {scale}")
    if seed < 0:
        raise ValueError(f"generate_oct_dataset: seed must be >= 0, got {seed}")
    if workers < 1:
        raise ValueError(f"generate_oct_dataset: workers must be >= 1, got {workers}")
    scales = (lesion_scale, lesion_scale) if np.isscalar(lesion_scale) else tuple(lesion_scale)
    if len(scales) != 2 or not 0 < scales[0] <= scales[1]:
        raise ValueError(
            "generate_oct_dataset: lesion_scale must be > 0 or a pair 0 < low <= high, got "
            f"{lesion_scale!r}"
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [
        _Task(
            out_dir=str(out),
            index=i,
            participant_id=str(1001 + i),
            device=devices[i % len(devices)],
            scale=scale,
            pathology_fraction=pathology_fraction,
            seed=seed,
            # Alternating on i alone would pin each device to one layout when len(devices) is
            # even; shifting every round of devices gives each device both.
            spacing_in=("shared", "per_frame")[(i + i // len(devices)) % 2],
            lesion_scale=(float(scales[0]), float(scales[1])),
        )
        for i in range(num_participants)
    ]
    results = run_tasks(
        _participant, tasks, workers, desc="synthetic OCT", unit="volume", limit_torch_threads=False
    )

    manifest_path = out / "manifest.tsv"
    write_manifest([row for row, _, _ in results], manifest_path)
    _write_tsv(out / "labels.tsv", LABEL_COLUMNS, [labels for _, labels, _ in results])
    _write_tsv(out / "lesions.tsv", LESION_COLUMNS, [lesions for _, _, lesions in results])
    return manifest_path


def _write_tsv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
