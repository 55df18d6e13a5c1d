import numpy as np
import pytest

from fmtrain.data.video.clips import Clip, ClipIndex, FrameCache


def test_clip_index_lists_every_start():
    index = ClipIndex({"a": 10, "b": 5}, clip_length=4, stride=3)
    # a: starts 0, 3, 6 (6 + 4 = 10 fits); b: start 0 only
    assert index.clips == [Clip("a", 0), Clip("a", 3), Clip("a", 6), Clip("b", 0)]
    assert len(index) == 4
    assert index[2] == ("a", 6)
    assert index.short_sequences == []


def test_short_sequences_are_named_not_dropped_silently():
    index = ClipIndex({"long": 8, "tiny": 2, "empty": 0}, clip_length=5)
    assert len(index) == 4
    assert index.short_sequences == [("tiny", 2), ("empty", 0)]
    summary = index.summary()
    assert "from 1 of 3 sequence(s)" in summary
    assert "'tiny' (2 frames)" in summary


def test_no_clip_names_clip_length_and_longest_sequence():
    with pytest.raises(ValueError) as err:
        ClipIndex({"a": 3, "b": 6}, clip_length=7)
    assert "clip_length=7" in str(err.value)
    assert "'b' with 6 frame(s)" in str(err.value)
    with pytest.raises(ValueError, match="no sequences"):
        ClipIndex({}, clip_length=1)


class Seq:
    def __init__(self, name, n):
        self.name, self.n = name, n

    def __len__(self):
        return self.n


def test_clip_index_accepts_sized_sequences():
    index = ClipIndex([Seq("x", 3), Seq("y", 1)], clip_length=2)
    assert index.clips == [Clip("x", 0), Clip("x", 1)]
    assert index.short_sequences == [("y", 1)]


def loader(shape=(4, 4, 3)):
    calls = []

    def load(path):
        calls.append(path.name)
        return np.full(shape, len(calls), np.uint8)

    return load, calls


def test_cache_fills_until_full_and_counts_hits():
    load, calls = loader()  # 48 bytes a frame
    cache = FrameCache(byte_budget=100)
    for name in ["a", "b", "c", "a", "b", "c"]:
        cache.get(name, load)
    # a and b fit (96 bytes), c never does: it is loaded twice, a and b once
    assert calls == ["a", "b", "c", "c"]
    assert cache.report() == {"items": 2, "bytes": 96, "budget": 100, "hits": 2, "misses": 4}
    assert "a" in cache and "c" not in cache
    cache.require_nonempty()
    with pytest.raises(ValueError):
        cache.get("a", load)[0, 0, 0] = 9  # cached arrays are read-only


def test_empty_cache_explains_a_budget_below_one_frame():
    load, _ = loader((16, 16, 3))
    cache = FrameCache(byte_budget=500)
    cache.get("x.png", load)
    assert cache.report()["items"] == 0
    with pytest.raises(ValueError) as err:
        cache.require_nonempty()
    assert "768 bytes" in str(err.value)
    assert "budget is 500 bytes" in str(err.value)


def test_empty_cache_explains_nothing_requested_and_zero_budget():
    with pytest.raises(ValueError, match="no frame was ever requested"):
        FrameCache(1000).require_nonempty()
    cache = FrameCache(0)
    cache.get("x", loader()[0])
    with pytest.raises(ValueError, match="byte_budget is 0"):
        cache.require_nonempty()
