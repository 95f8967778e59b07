"""brainmatch.evidence.meta / effects against R metafor's own numbers.

Reference values (tests/data/meta/README.md names every source):
- PyMARE 0.0.13's pinned metafor 4.6.0 grid: 180 ``rma.uni`` fits (FE, DL, HE, ML,
  REML x z / knha / adhoc x 0-2 moderators) with Q-profile tau^2 intervals, and
  ``escalc`` SMD / MD values;
- statsmodels 0.15's metafor results: Kacker (2004) with PM / DL / FE and Knapp-Hartung,
  and ``escalc`` OR / RR on ``dat.fine1993``;
- metafor's documented ``dat.bcg`` example (printed to 4 decimals): REML fit,
  prediction interval, Q-profile CI and ``regtest``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence import effects
from brainmatch.evidence.meta import (
    egger_test,
    leave_one_out,
    rma,
    subgroup_analysis,
    trim_and_fill,
)

DATA = Path(__file__).parent / "data" / "meta"
REF = json.loads((DATA / "metafor_reference.json").read_text())
GRID = pd.read_csv(DATA / "metafor_small_sample.csv")
MODELS = {"intercept": [], "one": ["mod1"], "two": ["mod1", "mod2"]}
TOL = 1e-9  # the issue asks for 1e-6; the implementation reaches ~1e-12


def _case_id(c: dict) -> str:
    return f"{c['design']}-{c['model']}-{c['method']}-{c['test']}"


@pytest.mark.filterwarnings("ignore:the Knapp-Hartung adjustment")
@pytest.mark.parametrize("case", REF["cases"], ids=[_case_id(c) for c in REF["cases"]])
def test_rma_equals_metafor_grid(case: dict) -> None:
    rows = GRID[GRID["case"] == case["design"]]
    cols = MODELS[case["model"]]
    r = rma(
        rows["y"],
        rows["v"],
        mods=rows[cols].to_numpy() if cols else None,
        method=case["method"],
        test=case["test"],
    )
    for key, got in [
        ("tau2", r.tau2),
        ("beta", r.beta),
        ("se", r.se),
        ("pval", r.pval),
        ("ci_lb", r.ci_lb),
        ("ci_ub", r.ci_ub),
        ("QE", r.QE),
        ("QEp", r.QEp),
        ("I2", r.I2),
        ("H2", r.H2),
    ]:
        np.testing.assert_allclose(got, case[key], rtol=TOL, atol=TOL, err_msg=key)
    if case["method"] == "FE":
        assert r.tau2_ci_lb is None
    else:
        np.testing.assert_allclose(
            [r.tau2_ci_lb, r.tau2_ci_ub],
            [case["tau2_ci_lb"], case["tau2_ci_ub"]],
            rtol=TOL,
            atol=TOL,
        )
    assert r.ddf == case["dof"]


def test_grid_covers_every_estimator_and_test() -> None:
    combos = {(c["method"], c["test"]) for c in REF["cases"]}
    assert combos == {
        (m, t) for m in ("FE", "DL", "HE", "ML", "REML") for t in ("z", "knha", "adhoc")
    }


SM = json.loads((DATA / "statsmodels_metafor_reference.json").read_text())


@pytest.mark.filterwarnings("ignore:the Knapp-Hartung adjustment")
@pytest.mark.parametrize(
    "fit",
    SM["kacker2004"]["fits"],
    ids=[f"{f['method']}-{f['test']}" for f in SM["kacker2004"]["fits"]],
)
def test_paule_mandel_dl_fe_knha_equal_metafor(fit: dict) -> None:
    k = SM["kacker2004"]
    r = rma(k["yi"], k["vi"], method=fit["method"], test=fit["test"])
    np.testing.assert_allclose(r.estimate, fit["b"], rtol=1e-9)
    for ours, key in [
        (r.se[0], "se"),
        (r.ci_lb[0], "ci_lb"),
        (r.ci_ub[0], "ci_ub"),
        (r.tau2, "tau2"),
        (r.QE, "QE"),
        (r.QEp, "QEp"),
        (r.I2, "I2"),
        (r.H2, "H2"),
    ]:
        np.testing.assert_allclose(ours, fit[key], rtol=1e-8, atol=1e-9, err_msg=key)
    if "se_tau2" in fit:
        np.testing.assert_allclose(r.se_tau2, fit["se_tau2"], rtol=1e-8)


BCG = json.loads((DATA / "bcg_metafor_reference.json").read_text())


def _bcg() -> tuple[np.ndarray, np.ndarray]:
    d = BCG["data"]
    return effects.log_risk_ratio(
        d["tpos"], np.add(d["tpos"], d["tneg"]), d["cpos"], np.add(d["cpos"], d["cneg"])
    )


def test_bcg_published_reml_fit_prediction_interval_and_confint() -> None:
    y, v = _bcg()
    r = rma(y, v)
    ref = BCG["rma_reml"]
    got = {
        "estimate": r.estimate,
        "se": r.se[0],
        "zval": r.zval[0],
        "ci_lb": r.ci_lb[0],
        "ci_ub": r.ci_ub[0],
        "tau2": r.tau2,
        "se_tau2": r.se_tau2,
        "I2": r.I2,
        "H2": r.H2,
        "QE": r.QE,
        "tau2_ci_lb": r.tau2_ci_lb,
        "tau2_ci_ub": r.tau2_ci_ub,
    }
    for key, value in got.items():
        decimals = 2 if key in ("I2", "H2") else 4
        assert round(float(value), decimals) == pytest.approx(ref[key], abs=1e-12), key
    pred = BCG["predict_exp"]
    assert round(float(np.exp(r.pi_lb)), 4) == pred["pi_lb"]
    assert round(float(np.exp(r.pi_ub)), 4) == pred["pi_ub"]
    assert round(float(np.exp(r.estimate)), 4) == pred["pred"]


def test_bcg_published_egger_regtest() -> None:
    y, v = _bcg()
    eg = egger_test(rma(y, v))
    assert round(eg["zval"], 4) == BCG["regtest"]["zval"]
    assert round(eg["pval"], 4) == BCG["regtest"]["pval"]


def test_prediction_interval_uses_t_with_knapp_hartung() -> None:
    y, v = _bcg()
    r = rma(y, v, test="knha")
    from scipy import stats

    crit = stats.t.ppf(0.975, r.k - 1)
    half = crit * np.sqrt(r.se[0] ** 2 + r.tau2)
    np.testing.assert_allclose([r.pi_lb, r.pi_ub], [r.estimate - half, r.estimate + half])


# ---------------------------------------------------------------- effect sizes


def test_smd_and_md_equal_metafor_escalc() -> None:
    ref = json.loads((DATA / "metafor_escalc_reference.json").read_text())
    inp = pd.read_csv(DATA / "metafor_escalc_inputs.csv").set_index("case")
    for c in ref["cases"]:
        r = inp.loc[c["case"]]
        y, v = effects.smd(r.m1, r.sd1, r.n1, r.m2, r.sd2, r.n2)
        np.testing.assert_allclose([y[0], v[0]], [c["SMD"]["yi"], c["SMD"]["vi"]], rtol=1e-12)
        y, v = effects.mean_difference(r.m1, r.sd1, r.n1, r.m2, r.sd2, r.n2)
        np.testing.assert_allclose([y[0], v[0]], [c["MD"]["yi"], c["MD"]["vi"]], rtol=1e-12)
        np.testing.assert_allclose(
            effects.small_sample_correction(r.n1 + r.n2 - 2)[0], c["cm_two_sample"], rtol=1e-12
        )


def test_log_odds_and_risk_ratio_equal_metafor_escalc() -> None:
    f = SM["fine1993"]
    y, v = effects.log_odds_ratio(f["e2i"], f["nei"], f["c2i"], f["nci"])
    np.testing.assert_allclose(y, f["y_or"], rtol=1e-12)
    np.testing.assert_allclose(v, f["v_or"], rtol=1e-12)
    y, v = effects.log_risk_ratio(f["e2i"], f["nei"], f["c2i"], f["nci"])
    np.testing.assert_allclose(y, f["y_rr"], rtol=1e-12)
    np.testing.assert_allclose(v, f["v_rr"], rtol=1e-12)


def test_zero_cells_get_half_added_only_in_that_study() -> None:
    y, v = effects.log_odds_ratio([0, 5], [10, 10], [3, 2], [10, 10])
    np.testing.assert_allclose(y[0], np.log((0.5 * 7.5) / (10.5 * 3.5)))
    np.testing.assert_allclose(v[1], 1 / 5 + 1 / 5 + 1 / 2 + 1 / 8)


def test_aggregate_dependent_limits() -> None:
    y, v = np.array([0.2, 0.6, 0.4]), np.array([0.04, 0.09, 0.05])
    est, var = effects.aggregate_dependent(y, v, rho=0.0)
    fe = rma(y, v, method="FE")
    np.testing.assert_allclose([est, var], [fe.estimate, fe.se[0] ** 2])
    # equal variances, correlation rho: the mean, with variance v (1 + rho) / 2
    est, var = effects.aggregate_dependent([0.2, 0.4], [0.05, 0.05], rho=0.6)
    np.testing.assert_allclose([est, var], [0.3, 0.05 * 1.6 / 2])


# ---------------------------------------------------------------- subgroups, bias


def _simulate(k: int, mu: float, tau2: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = rng.integers(20, 200, size=k)
    v = 4 / n
    y = mu + rng.normal(0, np.sqrt(tau2), k) + rng.normal(0, np.sqrt(v))
    return y, v


def test_reml_recovers_simulated_truth() -> None:
    y, v = _simulate(400, 0.5, 0.04, seed=1)
    r = rma(y, v)
    assert abs(r.estimate - 0.5) < 3 * r.se[0]
    assert r.tau2_ci_lb < 0.04 < r.tau2_ci_ub


def test_subgroups_detect_a_true_difference_and_match_the_fixed_q() -> None:
    y1, v1 = _simulate(60, 0.2, 0.01, seed=2)
    y2, v2 = _simulate(60, 0.8, 0.01, seed=3)
    y, v = np.concatenate([y1, y2]), np.concatenate([v1, v2])
    g = ["a"] * 60 + ["b"] * 60
    sub = subgroup_analysis(y, v, g)
    assert sub.p_between < 1e-6
    assert sub.moderator_test["QMp"] < 1e-6
    a, b = sub.groups["a"], sub.groups["b"]
    assert abs(a.estimate - 0.2) < 0.1 and abs(b.estimate - 0.8) < 0.1
    wa, wb = 1 / a.se[0] ** 2, 1 / b.se[0] ** 2
    mu = (wa * a.estimate + wb * b.estimate) / (wa + wb)
    q = wa * (a.estimate - mu) ** 2 + wb * (b.estimate - mu) ** 2
    np.testing.assert_allclose(sub.Q_between, q)
    # no true difference: the test stays quiet
    y3, v3 = _simulate(60, 0.5, 0.01, seed=4)
    y4, v4 = _simulate(60, 0.5, 0.01, seed=5)
    assert subgroup_analysis(np.r_[y3, y4], np.r_[v3, v4], g).p_between > 0.01


def test_trim_and_fill_fills_a_suppressed_side() -> None:
    y, v = _simulate(80, 0.3, 0.0, seed=6)
    se = np.sqrt(v)
    keep = ~((y < 0.3) & (se > np.median(se)))  # small studies with small effects vanish
    r = rma(y[keep], v[keep], method="FE")
    tf = trim_and_fill(r)
    assert tf["side"] == "left" and tf["k0"] > 3
    assert tf["estimate"] < r.estimate
    # a mirrored, symmetric funnel needs (almost) nothing filled
    ys = np.concatenate([0.3 + (y - 0.3), 0.3 - (y - 0.3)])
    vs = np.concatenate([v, v])
    assert trim_and_fill(rma(ys, vs, method="FE"))["k0"] <= 1


def test_leave_one_out_is_the_fit_without_that_study() -> None:
    y, v = _bcg()
    r = rma(y, v, labels=[f"s{i}" for i in range(len(y))])
    loo = leave_one_out(r)
    assert [x["study"] for x in loo] == r.labels
    ref = rma(np.delete(y, 4), np.delete(v, 4))
    np.testing.assert_allclose(loo[4]["estimate"], ref.estimate)
    np.testing.assert_allclose(loo[4]["tau2"], ref.tau2)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "vi, message",
    [
        ([0.1, -0.2, 0.1], "sampling variances must be positive"),
        ([0.1, 0.0, 0.1], "sampling variances must be positive"),
    ],
)
def test_rejects_nonpositive_variances(vi: list[float], message: str) -> None:
    with pytest.raises(BrainmatchInputError, match=message):
        rma([0.1, 0.2, 0.3], vi)


def test_rejects_too_few_studies() -> None:
    with pytest.raises(BrainmatchInputError, match="at least 2 studies"):
        rma([0.1], [0.1], method="FE")
    with pytest.raises(BrainmatchInputError, match="at least 3 studies"):
        rma([0.1, 0.2], [0.1, 0.1], method="REML")
    with pytest.raises(BrainmatchInputError, match="Egger's test needs at least 3"):
        egger_test(rma([0.1, 0.2], [0.1, 0.1], method="FE"))


def test_rejects_unknown_method_and_test() -> None:
    with pytest.raises(BrainmatchInputError, match="unknown --method 'SJ'"):
        rma([0.1, 0.2, 0.3], [0.1, 0.1, 0.1], method="SJ")
    with pytest.raises(BrainmatchInputError, match="unknown --test 'wald'"):
        rma([0.1, 0.2, 0.3], [0.1, 0.1, 0.1], test="wald")


def test_rejects_non_numeric_effects_and_bad_raw_data() -> None:
    with pytest.raises(BrainmatchInputError, match="numeric"):
        rma(["a", "b", "c"], [0.1, 0.1, 0.1])
    with pytest.raises(BrainmatchInputError, match="sd1 must be positive"):
        effects.smd([1.0], [0.0], [10], [0.5], [1.0], [10])
    with pytest.raises(BrainmatchInputError, match="cannot exceed"):
        effects.log_odds_ratio([12], [10], [3], [10])
