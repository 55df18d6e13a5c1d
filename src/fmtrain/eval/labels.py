"""Labels files for probes, and how their ids find the samples they label.

A labels file is a TSV (or CSV) with a header: one id column and one column per task. The id
column is the first of :data:`ID_COLUMNS` the header has. Its ids may be written as the
manifest wrote them, as absolute paths (from this machine or another one), as paths relative
to any folder, or as bare file names with or without their extension.

Ids are matched to samples by path from the end. A sample is named by its key (the manifest
``filepath``, or the path in a file list or under a folder) and by the path of its file. A
label id fits a sample when their last parts name the same file (the same name, or the same
name once extensions are dropped: ``1001_L`` fits ``1001_L.dcm``); the more parent folders
agree after that, the better the fit, and an id equal to the key fits best. Each id goes to
the sample it fits best and each sample takes the id that fits it best; an id that fits
several samples equally well (two ``scan.dcm`` in different folders, named by the file name
alone) is ambiguous and labels nothing. Every outcome is counted.
"""

from __future__ import annotations

import csv
import logging
import os
import posixpath
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("fmtrain")

__all__ = ["ID_COLUMNS", "LabelMatch", "LabelTable", "match_labels", "read_label_table"]

#: columns that may hold the ids, in the order they are looked for
ID_COLUMNS = ("filepath", "path", "file", "filename", "key", "id")

HOW_IDS_MATCH = (
    "ids are matched by path from the end: the file name must agree (with or without its "
    "extension), then the more parent folders agree the better, so absolute paths, paths "
    "relative to any folder and bare file names all work as long as they name one sample"
)

_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


@dataclass(frozen=True)
class LabelTable:
    """A labels file's rows. ``id_column`` is the column the ids are in."""

    path: str
    id_column: str
    columns: tuple[str, ...]
    rows: tuple[dict[str, str], ...]


def read_label_table(path: str | Path) -> LabelTable:
    """Read a labels TSV (``.tsv``) or CSV (anything else), header first.

    Raises:
        ValueError: when the file is empty or its header has none of :data:`ID_COLUMNS`.
    """
    path = Path(path)
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        rows = tuple(reader)
        header = tuple(reader.fieldnames or ())
    id_column = next((c for c in ID_COLUMNS if c in header), None)
    if id_column is None:
        raise ValueError(
            f"{path}: a labels file needs a header with an id column, one of "
            f"{list(ID_COLUMNS)} (paths or file names of the samples); its header is "
            f"{list(header)}"
        )
    if not rows:
        raise ValueError(f"{path}: the labels file has a header but no rows")
    return LabelTable(str(path), id_column, header, rows)


@dataclass
class LabelMatch:
    """Which label row each sample got, and what did not match."""

    rows: dict[str, dict[str, str]]  # sample key -> its label row
    how: Counter = field(default_factory=Counter)  # "file name", "path (2 parts)", ...
    unmatched_ids: list[str] = field(default_factory=list)
    ambiguous_ids: list[str] = field(default_factory=list)
    num_samples: int = 0

    def summary(self, table: LabelTable) -> str:
        """One line: how many samples got a label, how, and what was left over."""
        how = ", ".join(f"{n} by {what}" for what, n in self.how.most_common())
        text = (
            f"{table.path}: {len(self.rows)} of {self.num_samples} samples matched by column "
            f"{table.id_column!r}" + (f" ({how})" if how else "")
        )
        if self.unmatched_ids:
            text += f"; {len(self.unmatched_ids)} label ids match no sample of these splits"
        if self.ambiguous_ids:
            text += (
                f"; {len(self.ambiguous_ids)} ids are ambiguous (they fit several samples "
                f"equally, e.g. {self.ambiguous_ids[0]!r})"
            )
        return text


def _parts(path: str) -> tuple[str, ...]:
    path = path.strip().replace("\\", "/")
    if "://" in path:
        path = path.split("://", 1)[1]
    return tuple(p for p in posixpath.normpath(path).split("/") if p not in ("", "."))


def _stem(name: str) -> str:
    """The file name without its extension (and a compression suffix before it)."""
    for suffix in _COMPRESSIONS:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return posixpath.splitext(name)[0] or name


def _sample_names(sample: Mapping) -> list[tuple[str, ...]]:
    """A sample's key and the absolute path of its file (its folder for a DICOM series)."""
    names = [_parts(sample["key"])]
    paths = [str(p) for p in sample.get("paths") or ()]
    if paths:
        where = paths[0] if len(paths) == 1 else posixpath.commonpath(paths)
        if "://" not in where:
            where = os.path.abspath(where)
        names.append(_parts(where))
    return [n for n in names if n]


def _fit(label: tuple[str, ...], name: tuple[str, ...]) -> tuple[int, int] | None:
    """(parent folders that agree, 1 if the file names agree exactly else 0), or None when
    the file names differ even without extensions."""
    if label[-1] == name[-1]:
        exact = 1
    elif _stem(label[-1]) == _stem(name[-1]):
        exact = 0
    else:
        return None
    parents = 0
    for a, b in zip(reversed(label[:-1]), reversed(name[:-1]), strict=False):
        if a != b:
            break
        parents += 1
    return parents, exact


def _how(score: tuple[int, int, int]) -> str:
    whole, parents, exact = score
    if whole:
        return "id as listed in the manifest"
    if parents:
        return f"path ({parents + 1} trailing parts)"
    return "file name" if exact else "file name without extension"


def match_labels(table: LabelTable, samples: Iterable[Mapping]) -> LabelMatch:
    """Give each sample the label row whose id fits it best (see the module docstring).

    Args:
        table: from :func:`read_label_table`.
        samples: sample records with ``key`` and, when known, ``paths`` (their files).

    Raises:
        ValueError: when no sample gets a label; the message shows ids from both sides
            and how ids are matched.
    """
    samples = list(samples)
    by_stem: dict[str, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
    keys = {}
    for index, sample in enumerate(samples):
        keys[posixpath.normpath(str(sample["key"]))] = index
        for name in _sample_names(sample):
            by_stem[_stem(name[-1])].append((index, name))
    # each id -> its best-fitting sample
    proposals: dict[int, list[tuple[tuple[int, int, int], int]]] = defaultdict(list)
    result = LabelMatch(rows={}, num_samples=len(samples))
    for row_index, row in enumerate(table.rows):
        raw = (row.get(table.id_column) or "").strip()
        label = _parts(raw)
        if not label:
            continue
        if posixpath.normpath(raw) in keys:
            proposals[keys[posixpath.normpath(raw)]].append(((1, 0, 0), row_index))
            continue
        best: dict[int, tuple[int, int, int]] = {}
        for index, name in by_stem.get(_stem(label[-1]), []):
            fit = _fit(label, name)
            if fit is not None and (0, *fit) > best.get(index, (-1, -1, -1)):
                best[index] = (0, *fit)
        if not best:
            result.unmatched_ids.append(raw)
            continue
        top = max(best.values())
        winners = [i for i, score in best.items() if score == top]
        if len(winners) > 1:
            result.ambiguous_ids.append(raw)
            continue
        proposals[winners[0]].append((top, row_index))
    # each sample -> the id that fits it best; a tie leaves it without a label
    for index, offers in proposals.items():
        top = max(score for score, _ in offers)
        rows = [r for score, r in offers if score == top]
        if len(rows) > 1:
            result.ambiguous_ids += [table.rows[r][table.id_column] for r in rows]
            continue
        result.rows[samples[index]["key"]] = table.rows[rows[0]]
        result.how[_how(top)] += 1
    if not result.rows:
        raise ValueError(_nothing_matched(table, samples))
    return result


def _nothing_matched(table: LabelTable, samples: Sequence[Mapping]) -> str:
    ids = [r.get(table.id_column, "") for r in table.rows[:2]]
    names = []
    for sample in samples[:2]:
        paths = sample.get("paths") or ()
        names.append(f"{sample['key']!r}" + (f" (file {paths[0]})" if paths else ""))
    return (
        f"{table.path}: no id in column {table.id_column!r} matches a sample. The labels "
        f"file has ids like {', '.join(repr(i) for i in ids)}; the samples are "
        f"{', '.join(names) or 'none'}. {HOW_IDS_MATCH[0].upper()}{HOW_IDS_MATCH[1:]}. "
        "Point --labels at the file for this data, or fix its id column."
    )
