"""What the object-storage tests (S3, GCS) do alike: put a local folder into a bucket, and
read a DICOM back from it to compare with the local read."""

from pathlib import Path

import numpy as np

from fmtrain.core.storage import filesystem
from fmtrain.data import read_volume


def upload(folder: Path, url: str, options: dict) -> None:
    """Copy `folder`'s files under `url` (s3://, gs://, ...), reached with `options`."""
    fs, path = filesystem(url, options)
    fs.put(f"{folder}/", f"{path}/", recursive=True)


def assert_bucket_read_equals_local_read(dataset: Path, url: str, options: dict, cache: Path):
    """A DICOM of `dataset` uploaded under `url` reads to the same voxels and spacing."""
    upload(dataset, f"{url}/raw", options)
    name = sorted(dataset.rglob("*.dcm"))[0].relative_to(dataset)
    remote = read_volume(f"{url}/raw/{name}", storage_options=options, cache_dir=str(cache))
    local = read_volume(str(dataset / name))
    np.testing.assert_array_equal(remote.array, local.array)
    assert remote.spacing == local.spacing
