"""Participant-level train/val/test splits, stratified by device, deterministic per seed.

A participant's scans all go to one split (otherwise a probe "generalises" to the same eye).
Participants are grouped by the set of devices they were scanned on, and each group is cut
by the split fractions, so every device appears in every split in about the same proportion.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from fmtrain.data.items import CatalogItem

__all__ = ["DEFAULT_FRACTIONS", "assign_splits", "split_counts"]

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def _check(fractions: Mapping[str, float]) -> None:
    if not fractions or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative, got {dict(fractions)}")
    total = sum(fractions.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)} (sum {total})")


def assign_splits(
    items: list[CatalogItem], fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, str]:
    """Participant id -> split name.

    Within each device group the participants are shuffled with a seed derived from
    (`seed`, group) and cut at the cumulative fractions (rounded), so adding a device group
    never reshuffles another group.
    """
    _check(fractions)
    devices: dict[str, set[str]] = defaultdict(set)
    for item in items:
        devices[item.participant_id].add(item.device)
    groups: dict[str, list[str]] = defaultdict(list)
    for participant, seen in devices.items():
        groups["+".join(sorted(seen))].append(participant)
    names = list(fractions)
    bounds = np.cumsum([fractions[n] for n in names])
    out: dict[str, str] = {}
    for group, members in sorted(groups.items()):
        members.sort()
        rng = np.random.default_rng((seed, zlib.crc32(group.encode())))
        order = [members[i] for i in rng.permutation(len(members))]
        cuts = [0, *(round(b * len(order)) for b in bounds)]
        for name, start, stop in zip(names, cuts[:-1], cuts[1:], strict=True):
            for participant in order[start:stop]:
                out[participant] = name
    return out


def split_counts(items: list[CatalogItem], assignment: Mapping[str, str]) -> dict:
    """Items per split and device, for summaries and logs."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in items:
        counts[assignment[item.participant_id]][item.device] += 1
    return {split: dict(sorted(devs.items())) for split, devs in sorted(counts.items())}
