"""``brainmatch train``: ground-truth recovery, null calibration, leakage canary, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection import train
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.validation.synthetic import measured_features, outcome_table

FAST = {
    "n_repeats": 2,
    "n_permutations": 199,
    "n_boot": 200,
    "learning_curve": False,
    "report": False,
}


def _trial(n=200, effect=1.2, arms=("CBT", "SSRI"), seed=1, n_noise=20, reliability=0.9, sites=3):
    trial = draw_trial(
        TrialSpec(n_subjects=n, n_sites=sites, effect_size=effect, arms=arms, seed=seed)
    )
    return (
        trial,
        measured_features(trial, n_noise=n_noise, reliability=reliability, seed=seed),
        outcome_table(trial),
    )


def _true_gain_share(trial, result):
    """Share of the oracle's gain over the best single arm that the policy recovers."""
    arms = result.metrics["arms"]
    truth = trial.truth.set_index("participant_id")
    pred = result.predictions.set_index("participant_id")
    mu = truth.loc[pred.index, [f"mu__{a}" for a in arms]].to_numpy()
    rec = np.searchsorted(arms, pred["recommended"])
    best = mu.mean(axis=0).min()
    return (best - mu[np.arange(len(rec)), rec].mean()) / (best - mu.min(axis=1).mean())


@pytest.mark.slow
def test_recovers_most_of_the_oracle_gain(tmp_path):
    trial, f, o = _trial(n=400)
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        covariates=("age", "sex"),
        out_dir=tmp_path,
        **FAST,
    )
    share = _true_gain_share(trial, res)
    sel = res.metrics["selection"]
    assert share > 0.6, share
    assert sel["permutation_p"] < 0.01
    assert sel["policy_gain"] > 0 and sel["policy_gain_ci"][0] > 0
    assert sel["benefit_d"] > 0.3
    for arm in ("CBT", "SSRI"):
        assert res.metrics["per_arm"][arm]["r2"] > 0.05


@pytest.mark.slow
def test_null_trials_are_calibrated(tmp_path):
    """No interaction: permutation p uniform, false positives near 5%, CI mostly covers 0."""
    ps, cover = [], []
    for s in range(24):
        _, f, o = _trial(n=70, effect=0.0, seed=500 + s, n_noise=10, sites=2)
        res = train(
            f,
            o,
            treatment_column="arm",
            outcome_column="hamd_week8",
            baseline_column="hamd_baseline",
            site_column="site",
            out_dir=tmp_path / str(s),
            n_repeats=1,
            n_permutations=99,
            n_boot=100,
            learning_curve=False,
            report=False,
            seed=s,
        )
        sel = res.metrics["selection"]
        ps.append(sel["permutation_p"])
        cover.append(sel["benefit_d_ci"][0] <= 0 <= sel["benefit_d_ci"][1])
    ps = np.array(ps)
    assert np.mean(ps <= 0.05) <= 0.15
    assert stats.kstest(ps, "uniform").pvalue > 0.01
    assert np.mean(cover) >= 0.7


def test_leakage_canary(tmp_path):
    """Selecting features on all data before CV finds signal in noise; train does not."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng(0)
    n, p = 100, 2000
    X = rng.normal(size=(n, p))
    y = rng.normal(size=n)
    arm = np.repeat(["A", "B"], n // 2)
    # the leaky analysis: top features by correlation with y on the whole sample
    r = np.abs((X - X.mean(0)).T @ (y - y.mean())) / n
    top = np.argsort(-r)[:20]
    leaky = cross_val_predict(RidgeCV(), X[:, top], y, cv=5)
    leaky_r2 = 1 - np.sum((y - leaky) ** 2) / np.sum((y - y.mean()) ** 2)
    assert leaky_r2 > 0.2  # optimism from leakage
    f = pd.DataFrame(X, columns=[f"f{j}" for j in range(p)])
    f.insert(0, "participant_id", [f"sub-{i:03d}" for i in range(n)])
    o = pd.DataFrame({"participant_id": f["participant_id"], "arm": arm, "y": y})
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="y",
        out_dir=tmp_path,
        **{**FAST, "n_permutations": 99},
    )
    for m in res.metrics["per_arm"].values():
        assert m["r2"] < 0.05
    assert res.metrics["selection"]["permutation_p"] > 0.05
    assert any("chance" in w for w in res.metrics["warnings"])


@pytest.mark.slow
def test_outputs_three_arms_missing_features(tmp_path):
    _, f, o = _trial(n=150, arms=("CBT", "SSRI", "yoga"), effect=1.2, seed=4)
    f = f.copy()
    rng = np.random.default_rng(0)
    cols = f.columns[1:]
    mask = rng.random((len(f), len(cols))) < 0.05
    f[cols] = f[cols].mask(mask)
    train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        covariates=("age", "sex"),
        out_dir=tmp_path,
        n_repeats=1,
        n_permutations=99,
        n_boot=100,
    )
    pred = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    assert list(pred.columns) == [
        "participant_id",
        "treatment",
        "observed",
        "predicted__CBT",
        "predicted__SSRI",
        "predicted__yoga",
        "recommended",
        "advantage",
    ]
    assert set(pred["recommended"]) <= {"CBT", "SSRI", "yoga"}
    assert (pred["advantage"] >= 0).all()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "n",
        "arms",
        "cv",
        "per_arm",
        "selection",
        "warnings",
        "learning_curve",
        "tripod_ai",
    ):
        assert key in metrics
    for key in (
        "benefit_d",
        "benefit_d_ci",
        "permutation_p",
        "policy_gain",
        "policy_gain_ci",
        "share_above_threshold",
    ):
        assert key in metrics["selection"]
    assert set(metrics["per_arm"]) == {"CBT", "SSRI", "yoga"}
    assert any("missing feature values" in w for w in metrics["warnings"])
    assert any("fewer than 100 per arm" in w for w in metrics["warnings"])
    html = (tmp_path / "report.html").read_text()
    assert "TRIPOD" in html and html.count("data:image/png;base64") >= 5
    assert 'alt="glass brain"' in html  # feature names name Desikan-Killiany regions
    # out-of-fold: observed column is the received arm's outcome, never refitted in-sample
    assert metrics["n"] == len(pred)


def test_binary_outcome_leave_site_out(tmp_path):
    _, f, o = _trial(n=240, effect=1.2, seed=6)
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="remission",
        site_column="site",
        cv="leave-site-out",
        out_dir=tmp_path,
        n_permutations=99,
        n_boot=200,
        learning_curve=False,
        report=False,
    )
    m = res.metrics
    assert m["binary"] and m["better"] == "higher"
    assert m["cv"]["scheme"] == "leave-site-out" and m["cv"]["n_splits"] == 3
    for arm in ("CBT", "SSRI"):
        assert {"auc", "balanced_accuracy", "brier"} <= set(m["per_arm"][arm])
    p = res.predictions
    assert p[["predicted__CBT", "predicted__SSRI"]].stack().between(0, 1).all()
    assert m["selection"]["threshold"] == 0.1


def test_bad_input_messages(tmp_path):
    _, f, o = _trial(n=60, seed=2, n_noise=5)
    kw = {"out_dir": tmp_path, **FAST}
    with pytest.raises(BrainmatchInputError, match="did you mean 'hamd_week8'"):
        train(f, o, treatment_column="arm", outcome_column="hamd_wk8", **kw)
    with pytest.raises(BrainmatchInputError, match="swapped"):
        train(f, o, treatment_column="hamd_week8", outcome_column="arm", **kw)
    few = o.copy()
    few.loc[few.index[:25], "arm"] = "yoga"
    few.loc[few.index[:20], "arm"] = "CBT"
    few.loc[few.index[20:25], "arm"] = "yoga"
    with pytest.raises(BrainmatchInputError, match=r"too few patients .*yoga \("):
        train(f, few, treatment_column="arm", outcome_column="hamd_week8", **kw)
    bad = f.copy()
    bad["noise__0001"] = bad["noise__0001"].astype(str)
    bad.loc[3, "noise__0001"] = "high"
    with pytest.raises(BrainmatchInputError, match="not numeric: noise__0001"):
        train(bad, o, treatment_column="arm", outcome_column="hamd_week8", **kw)
    with pytest.raises(BrainmatchInputError, match=r"3 of 60 participants .*sub-001, sub-002"):
        train(f.iloc[3:], o, treatment_column="arm", outcome_column="hamd_week8", **kw)
    leak = f.merge(o[["participant_id", "hamd_week8"]])
    with pytest.raises(BrainmatchInputError, match="would leak"):
        train(leak, o, treatment_column="arm", outcome_column="hamd_week8", **kw)
    with pytest.raises(BrainmatchInputError, match="features file not found"):
        train(
            tmp_path / "nope.parquet", o, treatment_column="arm", outcome_column="hamd_week8", **kw
        )
    # several outcome tables are merged on participant_id; IDs must match
    part, pheno = o[["participant_id", "arm", "site"]], o.drop(columns=["arm", "site"])
    merged = train(
        f,
        [part, pheno],
        treatment_column="arm",
        outcome_column="hamd_week8",
        site_column="site",
        **{**kw, "n_permutations": 10, "n_repeats": 1},
    )
    assert merged.metrics["n"] == int(o["hamd_week8"].notna().sum())
    with pytest.raises(BrainmatchInputError, match=r"2 participant\(s\) are in only one"):
        train(f, [part, pheno.iloc[2:]], treatment_column="arm", outcome_column="hamd_week8", **kw)
    (tmp_path / "f.xlsx").write_text("x")
    with pytest.raises(BrainmatchInputError, match="not an Excel workbook"):
        train(tmp_path / "f.xlsx", o, treatment_column="arm", outcome_column="hamd_week8", **kw)


def test_training_is_deterministic_and_fast_enough(tmp_path):
    import time

    _, f, o = _trial(n=120, effect=0.5, seed=8, n_noise=50)
    start = time.perf_counter()
    a = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        out_dir=tmp_path / "a",
        report=False,
        learning_curve=False,
    )  # default CV and 1000 permutations
    elapsed = time.perf_counter() - start
    b = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        out_dir=tmp_path / "b",
        report=False,
        learning_curve=False,
        n_permutations=20,
        n_repeats=1,
    )
    assert a.metrics["selection"]["n_permutations"] == 1000
    assert elapsed < 60
    c = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        out_dir=tmp_path / "c",
        report=False,
        learning_curve=False,
        n_permutations=20,
        n_repeats=1,
    )
    pd.testing.assert_frame_equal(b.predictions, c.predictions)
