"""`read_volume` through URLs (memory://, s3://): the same volume as the local file.

Expected values come from plain pydicom attribute access and nibabel's header, never from
fmtrain's reader helpers, and are compared through the `Volume` contract (`volume_files`).
"""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from fmtrain.data.volumes.read import read_volume
from tests.data.volumes.volume_files import NIBABEL_DATA, assert_same, write_series


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (get_testdata_file("eCT_Supplemental.dcm"), "ct"),  # no suffix: detected by content
        (str(NIBABEL_DATA / "example4d.nii.gz"), "example4d.nii.gz"),
    ],
)
def test_memory_url_reads_like_the_local_file(
    path: str, name: str, memory_root, tmp_path: Path
) -> None:
    fs, root = memory_root
    fs.pipe(f"{root}/{name}", Path(path).read_bytes())
    url = f"memory://{root}/{name}"
    remote = read_volume(url, cache_dir=str(tmp_path / "cache"))
    assert_same(remote, read_volume(path))
    assert remote.metadata["path"] == url


def test_memory_url_series_folder(memory_root, tmp_path: Path, emri_reference: np.ndarray) -> None:
    fs, root = memory_root
    write_series(tmp_path / "series", emri_reference)
    for file in (tmp_path / "series").iterdir():
        fs.pipe(f"{root}/series/{file.name}", file.read_bytes())
    remote = read_volume(f"memory://{root}/series/", cache_dir=str(tmp_path / "cache"))
    assert_same(remote, read_volume(tmp_path / "series"))
    assert all(f.startswith(f"memory://{root}/series/IM") for f in remote.metadata["files"])


def test_s3_url_series_folder(
    s3_bucket: tuple[str, dict], tmp_path: Path, emri_reference: np.ndarray
) -> None:
    url, options = s3_bucket
    write_series(tmp_path / "series", emri_reference[:4])
    fs = fsspec.filesystem("s3", **options)
    fs.put(f"{tmp_path / 'series'}/", f"{url.removeprefix('s3://')}/series/", recursive=True)
    remote = read_volume(f"{url}/series", storage_options=options, cache_dir=str(tmp_path / "c"))
    assert_same(remote, read_volume(tmp_path / "series"))
    assert remote.metadata["path"] == f"{url}/series"
