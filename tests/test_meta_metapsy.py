"""Real data: the Metapsy psychotherapy-for-depression database (data-depression-psyctr).

References, none of them brainmatch's own output:

- Metapsy's own effect sizes: every row of the database carries the Hedges' g
  (``.g``, ``.g_se``) the Metapsy project computed with its R tools; brainmatch's
  ``effects.smd`` on the row's raw means, SDs and sizes must give the same g, and the
  reader must carry them through unchanged.
- The database's published metadata at the shipped commit (ceeabb7,
  github.com/metapsy-project/data-depression-psyctr, ``metadata/number_studies.txt`` and
  ``metadata/search_flow.json``): 480 included studies.
- Cuijpers P, Miguel C, Harrer M, Plessen CY, Ciharova M, Ebert D, Karyotaki E (2023).
  Cognitive behavior therapy vs. control conditions, other psychotherapies,
  pharmacotherapies and combined treatment for depression: a comprehensive meta-analysis
  including 409 trials with 52,702 patients. World Psychiatry 22(1):105-115,
  doi:10.1002/wps.21069 (abstract): CBT versus control conditions g = 0.79
  (95% CI 0.70-0.89), random effects, on the 2022 release of this database.  The shipped
  release (search up to 2024-01-01) is newer, so the test asks that brainmatch's pooled
  g lies inside the published confidence interval and within 0.02 of the published
  point estimate (measured: 0.786), not that it is equal.
- The wait-list inflation of effects reported from this database (Cuijpers et al. 2024,
  Epidemiol Psychiatr Sci 33:e56, doi:10.1017/S2045796024000611; Cuijpers et al. 2023
  above): effects against wait-list exceed those against care-as-usual.

Two parts.  ``tests/data/metapsy/data_extract.csv`` holds 42 rows (20 studies) of the
database, byte for byte (ODC-By 1.0, see ``tests/data/metapsy/README.md``), so the reader
and the Hedges' g checks run everywhere.  The full database is read from
``../shared/data/metapsy-psyctr`` and those tests skip without it (see
``tests/README.md``).  The figures of the worked example in ``docs/meta.md`` are
also asserted, marked as such: they keep the guide reproducible and are not a reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence import effects
from brainmatch.evidence.analysis import load_effects
from brainmatch.evidence.meta import rma, subgroup_analysis
from brainmatch.evidence.nma import network_meta_analysis
from brainmatch.evidence.readers import metapsy_comparisons, read_table

EXTRACT = Path(__file__).parent / "data" / "metapsy" / "data_extract.csv"
RAW_COLS = ["mean_arm1", "sd_arm1", "n_arm1", "mean_arm2", "sd_arm2", "n_arm2"]
# rows whose Metapsy g was not computed from the printed means / SDs (measured on the
# full database: every other `msd` row agrees within 0.002)
G_EXCEPTIONS = {"Mueller-Weinitschke, 2023", "Rohde, 2014b", "Victor-Aigbodion, 2023"}


def _recomputed_g(raw: pd.DataFrame) -> pd.DataFrame:
    """Hedges' g (therapy minus control, positive = fewer symptoms) from raw columns."""
    m = raw[raw["outcome_type"] == "msd"].dropna(subset=RAW_COLS).copy()
    # depression scales: lower is better, so g = control mean minus therapy mean
    yi, _ = effects.smd(
        m["mean_arm2"], m["sd_arm2"], m["n_arm2"], m["mean_arm1"], m["sd_arm1"], m["n_arm1"]
    )
    m["g_brainmatch"] = yi
    return m


# ----------------------------------------------------------------- shipped extract


def test_extract_reader_parses_the_metapsy_standard() -> None:
    raw = read_table(EXTRACT)
    assert len(raw) == 42 and raw["study"].nunique() == 20
    assert raw[".g"].dtype.kind == "f" and raw["n_arm1"].dtype.kind in "fi"  # decimal commas
    comp = metapsy_comparisons(raw)
    assert len(comp) == 28 and (comp["n_outcomes"] > 1).sum() == 11
    # a single-instrument comparison keeps Metapsy's own g and its squared SE
    single = comp[comp["n_outcomes"] == 1]
    for _, row in single.iterrows():
        src = raw[(raw["study"] == row["study"]) & (raw["condition_arm1"] == row["condition_arm1"])]
        src = src[np.isclose(src[".g"], row["yi"])]
        assert len(src) >= 1
        assert row["vi"] == pytest.approx(src[".g_se"].iloc[0] ** 2, rel=1e-12)


def test_extract_hedges_g_equals_metapsy() -> None:
    m = _recomputed_g(read_table(EXTRACT))
    assert len(m) == 39
    np.testing.assert_allclose(m["g_brainmatch"], m[".g"], atol=2e-3)
    assert float(np.median(np.abs(m["g_brainmatch"] - m[".g"]))) < 1e-4


def test_extract_through_load_effects() -> None:
    table, notes = load_effects(EXTRACT)
    assert notes["metapsy"] and len(table) == 28
    r = rma(table["yi"], table["vi"])
    assert r.k == 28 and np.isfinite(r.estimate) and r.estimate > 0


# ------------------------------------------------------------------- full database


@pytest.fixture(scope="module")
def metapsy(shared_data: Path) -> Path:
    path = shared_data / "metapsy-psyctr" / "data.csv"
    if not path.is_file():
        pytest.skip(
            f"{path} is absent: the Metapsy data-depression-psyctr database, commit "
            "ceeabb7 (doi:10.5281/zenodo.7254845); copy its data.csv there to run this test"
        )
    return path


@pytest.mark.shared_data
def test_reader_handles_the_metapsy_standard(metapsy: Path) -> None:
    raw = read_table(metapsy)
    assert len(raw) == 900 and raw[".g"].dtype.kind == "f"  # decimal commas parsed
    # the database's metadata: number_studies.txt = 480, search_flow.json "included": 480
    assert raw["study"].nunique() == 480
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


@pytest.mark.shared_data
def test_hedges_g_equals_metapsy_on_every_row(metapsy: Path) -> None:
    m = _recomputed_g(read_table(metapsy))
    assert len(m) == 810
    diff = np.abs(m["g_brainmatch"] - m[".g"])
    assert set(m.loc[diff > 2e-3, "study"]) == G_EXCEPTIONS
    assert int((diff > 2e-3).sum()) == 3
    assert float(np.median(np.abs(m["g_brainmatch"] - m[".g"]))) < 1e-4


@pytest.mark.shared_data
def test_cbt_versus_control_conditions_matches_cuijpers_2023(metapsy: Path) -> None:
    t, _ = load_effects(metapsy, select=["condition_arm1=cbt"])
    r = rma(t["yi"], t["vi"])  # REML, every control condition of the database
    assert 0.70 <= r.estimate <= 0.89  # World Psychiatry 2023: g = 0.79 (0.70-0.89)
    assert abs(r.estimate - 0.79) <= 0.02


@pytest.mark.shared_data
def test_cbt_versus_waitlist_and_care_as_usual(metapsy: Path) -> None:
    wl, notes = load_effects(metapsy, select=["condition_arm1=cbt", "condition_arm2=wl"])
    cau, _ = load_effects(metapsy, select=["condition_arm1=cbt", "condition_arm2=cau"])
    r_wl = rma(wl["yi"], wl["vi"])
    r_cau = rma(cau["yi"], cau["vi"])
    assert notes["metapsy"] and notes["n_shared"] > 0
    # published pattern: wait-list controls inflate the effect
    assert r_wl.ci_lb[0] > r_cau.estimate
    assert r_cau.ci_lb[0] > 0.4
    # docs/meta.md's worked example (reproducibility of the guide, not a reference)
    assert (r_wl.k, r_cau.k) == (141, 124)
    assert r_wl.estimate == pytest.approx(0.968, abs=1e-3)
    assert r_cau.estimate == pytest.approx(0.662, abs=1e-3)


@pytest.mark.shared_data
def test_subgroups_by_therapy_type_versus_waitlist(metapsy: Path) -> None:
    t, _ = load_effects(metapsy, select=["condition_arm2=wl"])
    sub = subgroup_analysis(t["yi"], t["vi"], t["condition_arm1"].astype(str))
    # each subgroup estimate is the separate fit on that subgroup's rows of the same table
    cbt = t[t["condition_arm1"].astype(str) == "cbt"]
    alone = rma(cbt["yi"], cbt["vi"])
    assert sub.groups["cbt"].k == alone.k
    assert sub.groups["cbt"].estimate == pytest.approx(alone.estimate, rel=1e-8)
    assert sub.df_between == len(sub.groups) - 1
    assert 0 < sub.p_between < 1


@pytest.mark.shared_data
def test_network_of_therapy_types(metapsy: Path) -> None:
    comp = metapsy_comparisons(read_table(metapsy))
    kw = dict(
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
    res = network_meta_analysis(comp, reference="wl", tol_multi=None, **kw)
    # every study of the database (metadata: 480) enters the network
    assert res.n_studies == 480 and res.n_multiarm == 94
    # Hedges' g contrasts of a multi-arm study are not additive: netmeta's 0.001 rule
    # would stop, so they are listed (by name) instead of silently used
    assert any("'Ayen, 2004'" in m for m in res.multiarm_inconsistent)
    with pytest.raises(BrainmatchInputError, match="inconsistent treatment effects"):
        network_meta_analysis(comp, **kw)
    assert res.pscore_random["wl"] < 0.01  # every therapy beats wait-list
    cbt_wl = res.comparison("cbt", "wl")
    # published direction and size: CBT beats wait-list by more than it beats care-as-usual
    assert cbt_wl["ci_lb"] > 0.8
    assert res.comparison("cbt", "cau")["estimate"] > 0
    assert cbt_wl["estimate"] > res.comparison("cbt", "cau")["estimate"]
    # docs/meta.md's worked example (reproducibility of the guide, not a reference)
    assert cbt_wl["estimate"] == pytest.approx(0.913, abs=1e-3)
    assert res.design_Q["Q_inc_random"] == pytest.approx(102.9, abs=0.05)
