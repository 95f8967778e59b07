"""Real data: the Metapsy psychotherapy-for-depression database (read from ../shared/data).

The numbers asserted are those reported in docs/meta.md; the data are not shipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.analysis import load_effects
from brainmatch.evidence.meta import rma, subgroup_analysis
from brainmatch.evidence.nma import network_meta_analysis
from brainmatch.evidence.readers import metapsy_comparisons, read_table

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def metapsy(shared_data: Path) -> Path:
    return shared_data / "metapsy-psyctr" / "data.csv"


def test_reader_handles_the_metapsy_standard(metapsy: Path) -> None:
    raw = read_table(metapsy)
    assert len(raw) == 900 and raw[".g"].dtype.kind == "f"  # decimal commas parsed
    comp = metapsy_comparisons(raw)
    # one row per comparison: several instruments of one comparison combined
    assert len(comp) == 599
    assert comp["n_outcomes"].max() > 1
    assert comp["n_group2"].notna().all()
    single = comp[comp["n_outcomes"] == 1].iloc[0]
    src = raw[
        (raw["study"] == single["study"]) & (raw["condition_arm1"] == single["condition_arm1"])
    ].iloc[0]
    assert single["yi"] == pytest.approx(src[".g"])
    assert single["vi"] == pytest.approx(src[".g_se"] ** 2)


def test_cbt_versus_waitlist_and_care_as_usual(metapsy: Path) -> None:
    wl, notes = load_effects(metapsy, select=["condition_arm1=cbt", "condition_arm2=wl"])
    cau, _ = load_effects(metapsy, select=["condition_arm1=cbt", "condition_arm2=cau"])
    r_wl = rma(wl["yi"], wl["vi"])
    r_cau = rma(cau["yi"], cau["vi"])
    assert notes["metapsy"] and notes["n_shared"] > 0
    assert (r_wl.k, r_cau.k) == (141, 124)
    assert r_wl.estimate == pytest.approx(0.968, abs=1e-3)
    assert r_cau.estimate == pytest.approx(0.662, abs=1e-3)
    # the well-known pattern: wait-list controls inflate the effect
    assert r_wl.ci_lb[0] > r_cau.estimate
    assert r_cau.ci_lb[0] > 0.4


def test_subgroups_by_therapy_type_versus_waitlist(metapsy: Path) -> None:
    t, _ = load_effects(metapsy, select=["condition_arm2=wl"])
    sub = subgroup_analysis(t["yi"], t["vi"], t["condition_arm1"].astype(str))
    assert "cbt" in sub.groups and sub.groups["cbt"].k == 141
    assert sub.df_between == len(sub.groups) - 1
    assert 0 < sub.p_between < 1


def test_network_of_therapy_types(metapsy: Path) -> None:
    comp = metapsy_comparisons(read_table(metapsy))
    res = network_meta_analysis(
        comp,
        study="study",
        treat1="arm1",
        treat2="arm2",
        effect="yi",
        se=None,
        variance="vi",
        arm1="arm1_id",
        arm2="control_id",
        n_control="n_group2",
        reference="wl",
        tol_multi=None,
    )
    assert res.n_studies == 480 and res.n_multiarm == 94
    # Hedges' g contrasts of a multi-arm study are not additive: netmeta's 0.001 rule
    # would stop, so they are listed (by name) instead of silently used
    assert any("'Ayen, 2004'" in m for m in res.multiarm_inconsistent)
    with pytest.raises(BrainmatchInputError, match="inconsistent treatment effects"):
        network_meta_analysis(
            comp,
            study="study",
            treat1="arm1",
            treat2="arm2",
            effect="yi",
            se=None,
            variance="vi",
            arm1="arm1_id",
            arm2="control_id",
            n_control="n_group2",
        )
    assert res.pscore_random["wl"] < 0.01  # every therapy beats wait-list
    cbt_wl = res.comparison("cbt", "wl")
    assert cbt_wl["estimate"] == pytest.approx(0.913, abs=1e-3)
    assert cbt_wl["ci_lb"] > 0.8
    # network estimates agree with the direct pairwise ones in direction and size
    assert np.sign(res.comparison("cbt", "cau")["estimate"]) == 1
