import random

import numpy as np
import pytest

from fmtrain.data.video.frame_io import read_frame, write_png
from fmtrain.data.video.frames import check_split, list_sequences, natural_sort_key


def touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_natural_sort_orders_numbers_by_value():
    names = ["frame_11.png", "10.png", "2.png", "1.png", "frame_2.png", "100.png"]
    assert sorted(names) != sorted(names, key=natural_sort_key)  # lexical order is wrong
    assert sorted(names, key=natural_sort_key) == [
        "1.png",
        "2.png",
        "10.png",
        "100.png",
        "frame_2.png",
        "frame_11.png",
    ]


def test_natural_sort_is_total_and_stable_under_shuffles():
    names = [f"{i}.png" for i in range(30)] + ["01.png", "a1b2.png", "A1b10.png", "x.png"]
    expected = sorted(names, key=natural_sort_key)
    for seed in range(5):
        shuffled = names[:]
        random.Random(seed).shuffle(shuffled)
        assert sorted(shuffled, key=natural_sort_key) == expected
    assert expected.index("9.png") < expected.index("10.png")
    assert expected.index("a1b2.png") < expected.index("A1b10.png")


def make_split(root, split="train", seqs=None):
    seqs = seqs or {"seq1": 12}
    for seq, n in seqs.items():
        for stream in ("blur", "sharp"):
            for i in range(n):
                touch(root / split / stream / seq / f"{i}.png", f"{stream}{i}")
    return root


def test_list_sequences_sorts_frames_numerically(tmp_path):
    make_split(tmp_path, seqs={"seq10": 12, "seq2": 3})
    listing = list_sequences(tmp_path, "train")
    assert [s.name for s in listing.sequences] == ["seq2", "seq10"]
    seq10 = listing.sequences[1]
    assert len(seq10) == 12
    assert [p.name for p in seq10.frames["blur"]][:4] == ["0.png", "1.png", "2.png", "3.png"]
    assert seq10.frames["sharp"][10].name == "10.png"
    assert seq10.frames["sharp"][10].parent.parent.name == "sharp"
    assert listing.refused == {}


def test_list_sequences_refuses_disagreeing_streams_by_name(tmp_path):
    make_split(tmp_path, seqs={"good": 4, "short_sharp": 4, "renamed": 3, "only_blur": 2})
    (tmp_path / "train/sharp/short_sharp/3.png").unlink()
    (tmp_path / "train/sharp/renamed/2.png").rename(tmp_path / "train/sharp/renamed/7.png")
    for p in (tmp_path / "train/sharp/only_blur").iterdir():
        p.unlink()
    (tmp_path / "train/sharp/only_blur").rmdir()
    touch(tmp_path / "train/blur/good/.DS_Store")  # hidden files are not frames

    listing = list_sequences(tmp_path, "train")
    assert [s.name for s in listing.sequences] == ["good"]
    assert len(listing.sequences[0]) == 4
    assert set(listing.refused) == {"short_sharp", "renamed", "only_blur"}
    assert "4 frame(s) in 'blur' but 3 in 'sharp'" in listing.refused["short_sharp"]
    assert "'2', '7'" in listing.refused["renamed"]
    assert "missing from stream(s) ['sharp']" in listing.refused["only_blur"]
    assert "short_sharp" in listing.summary()


def test_list_sequences_matches_frames_by_stem_across_extensions(tmp_path):
    for i in range(3):
        touch(tmp_path / "val/blur/s/" / f"{i}.png")
        touch(tmp_path / "val/spike_vox/s/" / f"{i}.npy")
    listing = list_sequences(tmp_path, "val", streams=("blur", "spike_vox"))
    seq = listing.sequences[0]
    assert seq.stems == ("0", "1", "2")
    assert [p.suffix for p in seq.frames["spike_vox"]] == [".npy"] * 3


def test_nothing_usable_is_an_error_listing_reasons(tmp_path):
    make_split(tmp_path, seqs={"a": 2})
    (tmp_path / "train/sharp/a/1.png").unlink()
    with pytest.raises(ValueError, match=r"(?s)no usable sequence.*'a'.*2 frame\(s\) in 'blur'"):
        list_sequences(tmp_path, "train")


def test_wrong_case_split_suggests_the_right_one(tmp_path):
    make_split(tmp_path, split="Train")
    (tmp_path / "Val").mkdir()
    with pytest.raises(ValueError) as err:
        list_sequences(tmp_path, "train")
    msg = str(err.value)
    assert "split 'train' not found under" in msg
    assert "['Train', 'Val']" in msg
    assert "did you mean 'Train'?" in msg
    assert check_split(tmp_path, "Train") == tmp_path / "Train"


def test_missing_root_and_stream_folders_are_named(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        check_split(tmp_path / "nowhere", "train")
    make_split(tmp_path)
    with pytest.raises(ValueError) as err:
        list_sequences(tmp_path, "train", streams=("blur", "sharp", "spike_vox"))
    assert str(tmp_path / "train" / "spike_vox") in str(err.value)
    assert "['blur', 'sharp']" in str(err.value)


def test_frame_io_round_trip_and_bad_files(tmp_path):
    frame = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "a" / "1.png", frame)
    np.testing.assert_array_equal(read_frame(tmp_path / "a" / "1.png"), frame)
    with pytest.raises(ValueError, match="does not exist"):
        read_frame(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"bad\.png"):
        read_frame(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "f.png", frame.astype(np.float32))
