"""Channel names: one canonical name per physiological channel, and the spellings files use.

Files name the same lead a dozen ways ("II", "Lead II", "MLII", "SNUADC/ECG_II"). Recipes name
channels canonically (`CANONICAL`); `canonical_name` maps a file's spelling onto them and
`select_channels` picks a recording's channels in the order a recipe wants.

Matching is case-insensitive, ignores parenthesised remarks ("Lead I (Einthoven)"), treats
spaces, "/", "-", "_" and "." alike, and drops a device prefix ("SNUADC/", "Solar8000/"). A
name that is a *measurement*, not a waveform, is deliberately absent: "HR" (heart rate) and
"SpO2" (saturation) are not PPG, "RR" (respiratory rate) is not RESP, "NIBP" is not ABP.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording

__all__ = [
    "ALIASES",
    "CANONICAL",
    "PER_CHANNEL_KEYS",
    "canonical_name",
    "channel_type",
    "check_distinct",
    "match_channels",
    "normalise",
    "select_channels",
]

log = logging.getLogger("fmtrain.data")

_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
CANONICAL: tuple[str, ...] = (*(f"ECG_{lead}" for lead in _LEADS), "PPG", "RESP", "ABP")

# Recording.metadata entries that hold one value per channel: selection reorders them too.
PER_CHANNEL_KEYS = ("units", "file_units", "source_rates", "file_channels")


def _lead_aliases(lead: str) -> list[str]:
    names = [lead, f"lead {lead}", f"ecg {lead}", f"ekg {lead}", f"ecg lead {lead}"]
    if lead in ("I", "II", "III"):
        # MIT-BIH's modified limb leads (MLII) and the continental "DII" spelling
        names += [f"ml{lead}", f"d{lead}"]
    return names


# canonical name -> spellings (matched after `normalise`)
ALIASES: dict[str, tuple[str, ...]] = {
    **{f"ECG_{lead}": tuple(_lead_aliases(lead)) for lead in _LEADS},
    "PPG": (
        "ppg",
        "pleth",
        "pleth wave",
        "spo2 pleth",
        "pleth spo2",
        "plethysmogram",
        "photoplethysmogram",
    ),
    "RESP": ("resp", "respiration", "resp wave", "respiratory", "impedance resp"),
    "ABP": ("abp", "art", "arterial pressure", "arterial blood pressure"),
}

_SEPARATORS = re.compile(r"[\s/\-_.]+")
_REMARK = re.compile(r"\([^)]*\)")


def normalise(name: str) -> str:
    """Lower-case `name`, drop parenthesised remarks and fold separators into one space.

    Args:
        name: a channel name as a file or a recipe spells it.
    """
    return _SEPARATORS.sub(" ", _REMARK.sub(" ", name).lower()).strip()


_TABLE: dict[str, str] = {
    normalise(alias): canon for canon, aliases in ALIASES.items() for alias in (canon, *aliases)
}


def canonical_name(name: str) -> str | None:
    """The canonical name of a channel, or None when it is not one fmtrain knows.

    Args:
        name: a channel name as a file spells it; a device prefix before the last "/" is
            ignored when the whole name is not itself an alias.
    """
    found = _TABLE.get(normalise(name))
    if found is None and "/" in name:
        found = _TABLE.get(normalise(name.rsplit("/", 1)[1]))
    return found


def channel_type(canonical: str) -> Literal["ecg", "ppg", "other"]:
    """Which band-pass and range defaults a channel gets.

    Args:
        canonical: a canonical name; an alias is resolved first, anything else is "other".
    """
    name = canonical if canonical in CANONICAL else canonical_name(canonical)
    if name is None:
        return "other"
    if name.startswith("ECG_"):
        return "ecg"
    return "ppg" if name == "PPG" else "other"


def check_distinct(wanted: Sequence[str]) -> list[str]:
    """The matching key of each wanted name; a ValueError when two name one channel.

    Args:
        wanted: the names a recipe asks for.
    """
    keys = [canonical_name(w) or normalise(w) for w in wanted]
    if len(set(keys)) != len(keys):
        raise ValueError(f"channels {list(wanted)} name the same channel twice")
    return keys


def match_channels(available: Sequence[str], wanted: Sequence[str], *, path: str) -> list[int]:
    """Indices into `available` of the channels in `wanted`, in the order wanted.

    A canonical or alias name matches every spelling of that channel; any other name matches
    only itself (after `normalise`). When several channels match, one spelled exactly as
    wanted wins, else the first, and the choice is logged.

    Args:
        available: the channel names a file has.
        wanted: the names a recipe asks for.
        path: the file, for messages.

    Raises:
        SignalReadError: "missing_channel", naming the channel and the ones the file has.
        ValueError: `wanted` names one channel twice.
    """
    keys = check_distinct(wanted)
    have = [canonical_name(a) or normalise(a) for a in available]
    picked = []
    for name, key in zip(wanted, keys, strict=True):
        hits = [i for i, k in enumerate(have) if k == key]
        if not hits:
            raise SignalReadError(
                "missing_channel",
                path,
                f"no channel {name!r} (nor any alias of it); the file has {list(available)}",
            )
        exact = [i for i in hits if normalise(available[i]) == normalise(name)]
        choice = (exact or hits)[0]
        if len(hits) > 1:
            log.warning(
                "%s: %d channels match %r (%s); using %r",
                path,
                len(hits),
                name,
                ", ".join(repr(available[i]) for i in hits),
                available[choice],
            )
        picked.append(choice)
    return picked


def select_channels(recording: Recording, wanted: Sequence[str]) -> Recording:
    """The channels of `recording` named in `wanted`, in that order and under those names.

    Args:
        recording: a recording as read.
        wanted: canonical names, aliases or exact names (see `match_channels`).

    Raises:
        SignalReadError: "missing_channel" when one is not in the recording.
    """
    picked = match_channels(recording.channels, wanted, path=recording.path)
    metadata = dict(recording.metadata)
    metadata.setdefault("file_channels", recording.channels)
    for key in PER_CHANNEL_KEYS:
        values = metadata.get(key)
        if isinstance(values, tuple | list) and len(values) == len(recording.channels):
            metadata[key] = tuple(values[i] for i in picked)
    return replace(
        recording, data=recording.data[picked], channels=tuple(wanted), metadata=metadata
    )
