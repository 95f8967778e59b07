"""Network meta-analysis: properties that pin the model down.

netmeta's own printed output (tau^2, effects, Q decomposition, P-scores on its Stowe2010
and Baker2009 examples) is pinned in ``test_nma_netmeta.py``; this file asserts what must
hold for netmeta's model on any data:
- the fixed-effect model equals statsmodels' arm-level WLS with study effects (an
  independent implementation of the same model, multi-arm studies included);
- a two-treatment network is exactly the pairwise DerSimonian-Laird / REML
  meta-analysis (metafor-exact ``rma``);
- results do not depend on the order of arms or rows;
- a three-arm study given as all three pairs (Rücker's reduced variances) and the
  same study given as two comparisons against its control plus the control's size
  give the same estimates;
- simulated true effects and their ranking are recovered, and the
  design-by-treatment test flags an inconsistent loop and not a consistent one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.meta import rma
from brainmatch.evidence.nma import network_meta_analysis

TRUE = {"A": 0.0, "B": 0.3, "C": 0.6, "D": 0.45}


def _pairwise(seed: int = 0, k: int = 15) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.02, 0.2, k)
    y = 0.4 + rng.normal(0, np.sqrt(v + 0.05))
    df = pd.DataFrame(
        {
            "study": [f"s{i}" for i in range(k)],
            "treat1": "X",
            "treat2": "Y",
            "TE": y,
            "seTE": np.sqrt(v),
        }
    )
    return df, y, v


@pytest.mark.parametrize("method", ["DL", "REML"])
def test_two_treatments_equal_pairwise_meta_analysis(method: str) -> None:
    df, y, v = _pairwise()
    res = network_meta_analysis(df, reference="Y", method_tau=method)
    ref = rma(y, v, method=method)
    c = res.comparison("X", "Y")
    tol = 1e-10 if method == "DL" else 1e-5  # REML: metafor stops its scoring at 1e-5
    np.testing.assert_allclose(res.tau2, ref.tau2, rtol=tol)
    np.testing.assert_allclose([c["estimate"], c["se"]], [ref.estimate, ref.se[0]], rtol=tol)
    np.testing.assert_allclose(res.Q, ref.QE, rtol=1e-10)
    fe = rma(y, v, method="FE")
    cf = res.comparison("X", "Y", model="fixed")
    np.testing.assert_allclose([cf["estimate"], cf["se"]], [fe.estimate, fe.se[0]], rtol=1e-10)


def _simulate_network(
    seed: int, n_studies: int = 60, inconsistent: float = 0.0, tau: float = 0.1
) -> pd.DataFrame:
    """Arm-level simulation: each study has 2-3 arms; outputs all pairs' contrasts."""
    rng = np.random.default_rng(seed)
    designs = [("A", "B"), ("A", "C"), ("B", "C"), ("A", "D"), ("C", "D"), ("A", "B", "C")]
    rows = []
    for s in range(n_studies):
        design = designs[s % len(designs)]
        n = rng.integers(40, 200, size=len(design))
        base = rng.normal(0, 1)
        delta = rng.normal(0, tau / np.sqrt(2), size=len(design))
        means = {}
        for j, t in enumerate(design):
            shift = inconsistent if (design == ("B", "C") and t == "C") else 0.0
            means[t] = base + TRUE[t] + shift + delta[j] + rng.normal(0, 1 / np.sqrt(n[j]))
        var = {t: 1 / n[j] for j, t in enumerate(design)}
        for a in range(len(design)):
            for b in range(a + 1, len(design)):
                ta, tb = design[b], design[a]
                rows.append(
                    {
                        "study": f"s{s}",
                        "treat1": ta,
                        "treat2": tb,
                        "TE": means[ta] - means[tb],
                        "seTE": np.sqrt(var[ta] + var[tb]),
                        "n2": n[a],
                    }
                )
    return pd.DataFrame(rows)


def test_recovers_simulated_effects_and_ranking() -> None:
    df = _simulate_network(1, n_studies=120)
    res = network_meta_analysis(df, reference="A")
    for t, mu in TRUE.items():
        c = res.comparison(t, "A") if t != "A" else None
        if c is not None:
            assert c["ci_lb"] < mu < c["ci_ub"], (t, c)
            assert abs(c["estimate"] - mu) < 0.1
    ranking = sorted(res.pscore_random, key=lambda t: -res.pscore_random[t])
    assert ranking == ["C", "D", "B", "A"]
    flipped = network_meta_analysis(df, reference="A", larger_is_better=False)
    assert sorted(flipped.pscore_random, key=lambda t: -flipped.pscore_random[t]) == [
        "A",
        "B",
        "D",
        "C",
    ]
    np.testing.assert_allclose(sum(res.pscore_random.values()), len(TRUE) / 2)


def test_invariant_to_arm_and_row_order() -> None:
    df = _simulate_network(2)
    base = network_meta_analysis(df, reference="A")
    swapped = df.rename(columns={"treat1": "treat2", "treat2": "treat1"}).assign(TE=-df["TE"])
    shuffled = swapped.sample(frac=1.0, random_state=3).reset_index(drop=True)
    other = network_meta_analysis(shuffled, reference="A")
    np.testing.assert_allclose(other.d_random, base.d_random, atol=1e-10)
    np.testing.assert_allclose(other.cov_random, base.cov_random, atol=1e-12)
    np.testing.assert_allclose(other.tau2, base.tau2, atol=1e-12)
    # the reference is only a parametrisation
    refd = network_meta_analysis(df, reference="C")
    for a, b in [("B", "A"), ("D", "C"), ("C", "B")]:
        np.testing.assert_allclose(
            refd.comparison(a, b)["estimate"], base.comparison(a, b)["estimate"], atol=1e-10
        )
        np.testing.assert_allclose(
            refd.comparison(a, b)["se"], base.comparison(a, b)["se"], atol=1e-10
        )


def test_three_arm_study_all_pairs_equals_star_with_control_size() -> None:
    df = _simulate_network(4, n_studies=30)
    full = network_meta_analysis(df, reference="A")
    # keep only the comparisons against arm "A" in three-arm studies, plus A's size
    three = df.groupby("study")["study"].transform("size") == 3
    star = df[~three | (df["treat2"] == "A")].copy()
    star["nA"] = np.where(star["treat2"] == "A", star["n2"], np.nan)
    reduced = network_meta_analysis(star, reference="A", n_control="nA")
    np.testing.assert_allclose(reduced.d_fixed, full.d_fixed, atol=1e-10)
    np.testing.assert_allclose(reduced.cov_fixed, full.cov_fixed, atol=1e-12)
    assert reduced.n_multiarm == full.n_multiarm == 5
    # without the control size the shared arm cannot be separated
    with pytest.raises(BrainmatchInputError, match="shared control group's size"):
        network_meta_analysis(star, reference="A")


def test_design_by_treatment_flags_inconsistency() -> None:
    consistent = network_meta_analysis(_simulate_network(5, 90, tau=0.0), reference="A")
    broken = network_meta_analysis(
        _simulate_network(5, 90, inconsistent=0.6, tau=0.0), reference="A"
    )
    assert consistent.design_Q["p_inc"] > 0.01
    assert broken.design_Q["p_inc"] < 1e-6
    d = broken.design_Q
    np.testing.assert_allclose(d["Q_het"] + d["Q_inc"], broken.Q, rtol=1e-10)
    assert d["df_het"] + d["df_inc"] == broken.df


def test_league_table_is_antisymmetric() -> None:
    res = network_meta_analysis(_simulate_network(6), reference="A")
    table = res.league_table()
    assert list(table.index) == list(table.columns)
    for a in res.treatments:
        assert table.loc[a, a] == a
        for b in res.treatments:
            if a != b:
                assert res.comparison(a, b)["estimate"] == pytest.approx(
                    -res.comparison(b, a)["estimate"]
                )


def test_bad_networks() -> None:
    df = pd.DataFrame(
        {
            "study": ["1", "2"],
            "treat1": ["A", "C"],
            "treat2": ["B", "D"],
            "TE": [0.1, 0.2],
            "seTE": [0.1, 0.1],
        }
    )
    with pytest.raises(BrainmatchInputError, match="disconnected: A, B; C, D"):
        network_meta_analysis(df)
    with pytest.raises(BrainmatchInputError, match="must be positive"):
        network_meta_analysis(df.assign(seTE=[0.1, 0.0]))
    with pytest.raises(BrainmatchInputError, match="missing column"):
        network_meta_analysis(df.drop(columns="seTE"))
    with pytest.raises(BrainmatchInputError, match="appears twice"):
        network_meta_analysis(pd.concat([df, df.iloc[:1]]))
    with pytest.raises(BrainmatchInputError, match="reference 'Z' is not in the network"):
        network_meta_analysis(df.assign(treat1=["A", "A"], treat2=["B", "B"]), reference="Z")


def test_cli_nma_writes_outputs(tmp_path: Path) -> None:
    src = tmp_path / "net.csv"
    _simulate_network(7).to_csv(src, index=False)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["nma", str(src), "--out", str(out), "--reference", "A"])
    assert res.exit_code == 0, res.output
    for name in (
        "results.json",
        "report.html",
        "league_table.tsv",
        "network.svg",
        "network.png",
        "nma_forest.svg",
        "effects_vs_reference.tsv",
        "edges.tsv",
    ):
        assert (out / name).stat().st_size > 0, name
    r = json.loads((out / "results.json").read_text())
    assert r["reference"] == "A" and set(r["pscore_random"]) == set(TRUE)
    assert "Rücker" in (out / "report.html").read_text()
    bad = CliRunner().invoke(
        app, ["nma", str(src), "--out", str(tmp_path / "o2"), "--method", "SJ"]
    )
    assert bad.exit_code == 2 and "DL or REML" in bad.output


def test_fixed_effect_equals_arm_based_weighted_regression() -> None:
    """Contrast-based FE NMA with multi-arm covariances == arm-level WLS with study effects.

    statsmodels' WLS on arm means (study dummies + treatment dummies, weights 1/var,
    scale fixed at 1) is an independent implementation of the same fixed-effect model.
    """
    import statsmodels.api as sm

    rng = np.random.default_rng(11)
    designs = [("A", "B"), ("A", "C"), ("B", "C", "D"), ("A", "B", "C"), ("C", "D")]
    arms, rows = [], []
    for s in range(25):
        design = designs[s % len(designs)]
        n = rng.integers(30, 150, size=len(design))
        base = rng.normal(0, 1)
        for t, nj in zip(design, n, strict=True):
            arms.append(
                {
                    "study": f"s{s}",
                    "treat": t,
                    "mean": base + TRUE[t] + rng.normal(0, 1 / np.sqrt(nj)),
                    "var": 1 / nj,
                }
            )
        study_arms = arms[-len(design) :]
        for i in range(len(study_arms)):
            for j in range(i + 1, len(study_arms)):
                a, b = study_arms[j], study_arms[i]
                rows.append(
                    {
                        "study": a["study"],
                        "treat1": a["treat"],
                        "treat2": b["treat"],
                        "TE": a["mean"] - b["mean"],
                        "seTE": np.sqrt(a["var"] + b["var"]),
                    }
                )
    res = network_meta_analysis(pd.DataFrame(rows), reference="A")
    arm = pd.DataFrame(arms)
    X = pd.get_dummies(arm[["study", "treat"]], drop_first=False, dtype=float)
    X = X.drop(columns=["treat_A"])
    fit = sm.WLS(arm["mean"], X, weights=1 / arm["var"]).fit(cov_type="fixed scale")
    for t in ("B", "C", "D"):
        i = res.treatments.index(t)
        np.testing.assert_allclose(res.d_fixed[i], fit.params[f"treat_{t}"], atol=1e-10)
        np.testing.assert_allclose(np.sqrt(res.cov_fixed[i, i]), fit.bse[f"treat_{t}"], rtol=1e-9)
    # Q of the contrast model is the arm-level weighted residual sum of squares
    np.testing.assert_allclose(res.Q, float(np.sum(fit.resid**2 / arm["var"])), rtol=1e-9)
    # random effects: tau^2 with correlation 1/2 between a study's contrasts is an arm-level
    # random effect of variance tau^2 / 2 (with study effects fixed).  This checks the
    # covariance structure given tau^2; the tau^2 estimate itself is pinned to netmeta's
    # printed values in test_nma_netmeta.py.
    assert res.tau2 > 0
    fit_re = sm.WLS(arm["mean"], X, weights=1 / (arm["var"] + res.tau2 / 2)).fit(
        cov_type="fixed scale"
    )
    for t in ("B", "C", "D"):
        i = res.treatments.index(t)
        np.testing.assert_allclose(res.d_random[i], fit_re.params[f"treat_{t}"], atol=1e-10)
        np.testing.assert_allclose(
            np.sqrt(res.cov_random[i, i]), fit_re.bse[f"treat_{t}"], rtol=1e-9
        )
