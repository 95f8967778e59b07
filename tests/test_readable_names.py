"""Feature columns as a clinician reads them (``recommend``'s drivers, the reports): every
kind of feature ``brainmatch extract`` writes gets its measure and its regions in words."""

from __future__ import annotations

import pytest

from brainmatch.selection.regions import readable_feature_name


@pytest.mark.parametrize(
    ("column", "readable"),
    [
        (
            "conn__ctx_lh_insula__ctx_lh_rostralanteriorcingulate",
            "connectivity: left insula - left rostral anterior cingulate",
        ),
        (
            "tconn__ctx-lh-insula__ctx-rh-insula",
            "connectivity (tangent): left insula - right insula",
        ),
        ("vol__Left-Hippocampus", "volume: left hippocampus"),
        ("vol__eTIV_ml", "volume: estimated total intracranial volume (ml)"),
        ("ctx__L_insula_thickavg", "cortical thickness: left insula"),
        (
            "ctx__R_rostralanteriorcingulate_surfavg",
            "surface area (per eTIV): right rostral anterior cingulate",
        ),
        (
            "ctx__L_bankssts_grayvol",
            "grey-matter volume (per eTIV): left banks of the superior temporal sulcus",
        ),
        ("ctx__LThickness", "mean cortical thickness: left hemisphere"),
        ("ctx__RSurfArea", "total surface area (per eTIV): right hemisphere"),
        ("dti__fa__wm_Cingulum_L", "DTI fractional anisotropy: left white matter cingulum"),
        ("dti__md__Right-Thalamus", "DTI mean diffusivity: right thalamus"),
        (
            "task__faces__faces-shapes__Left-Amygdala",
            "task 'faces', contrast faces - shapes: left amygdala",
        ),
        ("amp__sgACC", "ALFF: sgACC"),  # acronyms keep their case
        ("falff__ctx-rh-precuneus", "fALFF: right precuneus"),
        ("noise__0001", "noise feature 0001"),
        ("age", "age"),
    ],
)
def test_every_extracted_feature_kind_reads_as_words(column: str, readable: str) -> None:
    assert readable_feature_name(column) == readable
