"""Channel aliases and selection by name."""

from __future__ import annotations

import numpy as np
import pytest

from fmtrain.data.signals.channels import (
    CANONICAL,
    canonical_name,
    channel_type,
    select_channels,
)
from fmtrain.data.signals.errors import SignalReadError
from fmtrain.data.signals.recording import Recording

SPELLINGS = {
    "ECG_I": ["I", "Lead I (Einthoven)", "lead i", "ECG I", "MLI", "SNUADC/ECG_I"],
    "ECG_II": ["II", "Lead II", "ECG II", "ECG_II", "MLII", "SNUADC/ECG_II", "ecg-ii", "DII"],
    "ECG_III": ["III", "Lead III", "ECG.III"],
    "ECG_aVR": ["aVR", "AVR", "Lead aVR", "ECG_aVR"],
    "ECG_aVL": ["aVL", "Lead aVL"],
    "ECG_aVF": ["aVF", "ECG aVF"],
    "ECG_V1": ["V1", "Lead V1", "SNUADC/ECG_V1"],
    "ECG_V5": ["V5", "ECG_V5", "SNUADC/ECG_V5", "ECG V5"],
    "ECG_V6": ["V6", "Lead V6"],
    "PPG": ["PLETH", "PPG", "Pleth", "SNUADC/PLETH", "SpO2 pleth", "Intellivue/PLETH"],
    "RESP": ["RESP", "Resp", "respiration", "Intellivue/RESP"],
    "ABP": ["ABP", "ART", "SNUADC/ART", "Arterial pressure"],
}


@pytest.mark.parametrize(
    ("canonical", "spelling"), [(c, s) for c, ss in SPELLINGS.items() for s in ss]
)
def test_aliases(canonical, spelling):
    assert canonical_name(spelling) == canonical


@pytest.mark.parametrize("name", ["hr", "HR", "Solar8000/HR", "SpO2", "RR", "NIBP", "ECG", "x"])
def test_measurements_are_not_waveforms(name):
    assert canonical_name(name) is None


def test_every_canonical_name_maps_to_itself_and_has_a_type():
    assert all(canonical_name(name) == name for name in CANONICAL)
    assert {channel_type(n) for n in CANONICAL} == {"ecg", "ppg", "other"}
    assert channel_type("ECG_V3") == "ecg" and channel_type("PPG") == "ppg"
    assert channel_type("ABP") == "other" and channel_type("hr") == "other"


def test_select_channels_orders_renames_and_reindexes_metadata():
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    rec = Recording(
        data=data,
        rate=100.0,
        channels=("Lead I (Einthoven)", "Lead II", "Pleth", "Temp"),
        path="/data/r1.dcm",
        metadata={"units": ("mV", "mV", "", "C")},
    )
    out = select_channels(rec, ["PPG", "II", "Temp"])
    assert out.channels == ("PPG", "II", "Temp")
    np.testing.assert_array_equal(out.data, data[[2, 1, 3]])
    assert out.metadata["units"] == ("", "mV", "C")
    assert out.metadata["file_channels"] == ("Pleth", "Lead II", "Temp")
    with pytest.raises(SignalReadError) as info:
        select_channels(rec, ["ECG_V1"])
    err = info.value
    assert err.reason == "missing_channel" and "r1.dcm" in str(err)
    assert "'ECG_V1'" in err.detail and "'Lead II'" in err.detail and "'Temp'" in err.detail
    with pytest.raises(ValueError, match="twice"):
        select_channels(rec, ["II", "ECG_II"])
