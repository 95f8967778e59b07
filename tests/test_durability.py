"""Durability: Cox models against lifelines (Rossi), survival metrics against their
definitions and lifelines, the simulator's follow-up, out-of-fold selection, CLI, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.durability import CoxModel, SurvivalSelector, validate_durability
from brainmatch.durability import metrics as M
from brainmatch.durability.run import durability_analysis, parse_horizon
from brainmatch.errors import BrainmatchInputError
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.simulate.followup import draw_followup, write_followup
from brainmatch.validation.synthetic import measured_features

runner = CliRunner()
ROSSI = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]


def test_cox_equals_lifelines_on_rossi() -> None:
    from lifelines.datasets import load_rossi

    r = load_rossi()
    m = CoxModel().fit(r[ROSSI], r["week"], r["arrest"])
    # lifelines' published fit (its documentation and SCIENCE.md)
    expected = [-0.3794, -0.0574, 0.3139, -0.1498, -0.4337, -0.0849, 0.0915]
    np.testing.assert_allclose(m.coef_, expected, atol=5e-5)
    assert round(M.harrell_c(r["week"], r["arrest"], m.predict_risk(r[ROSSI])), 4) == 0.6403
    from lifelines import CoxPHFitter

    ref = CoxPHFitter().fit(r, "week", "arrest")
    sf = ref.predict_survival_function(r[ROSSI].iloc[:20], times=[10, 30, 52]).to_numpy().T
    np.testing.assert_allclose(m.predict_survival(r[ROSSI].iloc[:20], [10, 30, 52]), sf, atol=1e-12)


def _surv(seed: int, n: int = 150, censor: bool = True) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(0, 1, n)
    t = rng.exponential(np.exp(-risk))
    c = rng.exponential(1.5, n) if censor else np.full(n, np.inf)
    return np.minimum(t, c), (t <= c).astype(float), risk


def test_kaplan_meier_and_rmst_equal_lifelines() -> None:
    from lifelines import KaplanMeierFitter
    from lifelines.utils import restricted_mean_survival_time

    t, e, _ = _surv(1)
    kmf = KaplanMeierFitter().fit(t, e)
    times, surv = M.kaplan_meier(t, e)
    np.testing.assert_allclose(surv, kmf.survival_function_at_times(times).to_numpy(), atol=1e-12)
    np.testing.assert_allclose(
        M.rmst(t, e, 1.0), restricted_mean_survival_time(kmf, t=1.0), rtol=1e-9
    )


def test_metrics_without_censoring_reduce_to_their_definitions() -> None:
    from sklearn.metrics import roc_auc_score

    t, e, risk = _surv(2, censor=False)
    assert M.uno_c(t, e, risk) == pytest.approx(M.harrell_c(t, e, risk), abs=1e-12)
    tau = float(np.median(t))
    y = (t <= tau).astype(int)
    assert M.time_auc(t, e, risk, tau) == pytest.approx(roc_auc_score(y, risk), abs=1e-12)
    s = np.clip(np.exp(-np.exp(risk) * tau), 0, 1)
    assert M.brier(t, e, s, tau) == pytest.approx(np.mean(((t > tau) - s) ** 2), abs=1e-12)
    # random risk: concordance near 0.5; the true risk: well above
    t, e, risk = _surv(3, n=400)
    assert 0.45 < M.uno_c(t, e, np.random.default_rng(0).normal(size=400)) < 0.55
    assert M.uno_c(t, e, risk) > 0.65


def _followup_data(effect: float, n: int = 300, seed: int = 5) -> tuple[Any, ...]:
    trial = draw_trial(TrialSpec(n_subjects=n, n_sites=3, seed=seed))
    fu, truth, _ = draw_followup(trial, durability_effect=effect)
    f = measured_features(trial, n_noise=5, reliability=0.9, seed=1)
    keep = fu["relapse"].notna().to_numpy()
    X = f.drop(columns="participant_id").to_numpy()[keep]
    return (
        X,
        fu["relapse_weeks"].to_numpy()[keep],
        fu["relapse"].to_numpy(float)[keep],
        trial.truth["arm"].to_numpy()[keep],
        truth[keep].reset_index(drop=True),
    )


def test_followup_simulation() -> None:
    _, t, e, _, truth = _followup_data(0.6)
    assert 0.2 < e.mean() < 0.7 and t.max() <= 104
    # therapy is the more durable arm on average (simulator assumption, Hollon 2005 direction)
    assert truth["rmst52__CBT"].mean() > truth["rmst52__SSRI"].mean()
    # the brain moderator: high connectivity favours CBT's durability
    trial = draw_trial(TrialSpec(n_subjects=300, n_sites=3, seed=5))
    scc = trial.truth["scc_connectivity"].to_numpy()[trial.truth["dropout"].to_numpy() == 0]
    adv = (truth["rmst52__CBT"] - truth["rmst52__SSRI"]).to_numpy()
    assert np.corrcoef(scc, adv)[0, 1] > 0.3


@pytest.mark.slow
def test_policy_recovers_most_of_oracle_gain_and_null_claims_none() -> None:
    X, t, e, arm, truth = _followup_data(1.0, n=400)
    res = validate_durability(X, t, e, arm, n_bootstrap=200)
    arms = res.params["arms"]
    R = truth[[f"rmst52__{a}" for a in arms]].to_numpy()
    rec = res.predictions["recommended"].to_numpy()
    policy = R[np.arange(len(rec)), [arms.index(a) for a in rec]].mean()
    best, oracle = R.mean(axis=0).max(), R.max(axis=1).mean()
    assert (policy - best) / (oracle - best) > 0.5
    g = res.metrics["policy_rmst_gain"]
    assert g["ci_low"] > 0 and res.metrics["uno_c"] > 0.6
    X, t, e, arm, truth = _followup_data(0.0, n=400)
    null = validate_durability(X, t, e, arm, n_bootstrap=200)
    assert null.metrics["policy_rmst_gain"]["ci_low"] <= 0
    null = validate_durability(X, t, e, arm, model="pseudo", n_bootstrap=200)
    assert null.metrics["policy_rmst_gain"]["ci_low"] <= 0


def test_pseudo_observations_without_censoring_are_the_indicators() -> None:
    """Without censoring the jackknife pseudo-observation of S(t) is 1[T > t] exactly;
    with censoring their mean is close to the Kaplan-Meier estimate (Andersen & Perme 2010)."""
    from brainmatch.durability.metrics import kaplan_meier, pseudo_survival, step_at

    rng = np.random.default_rng(0)
    t = rng.exponential(50, 200)
    grid = np.array([10.0, 30.0, 52.0])
    ps = pseudo_survival(t, np.ones(200), grid)
    np.testing.assert_allclose(ps, (t[:, None] > grid[None, :]).astype(float), atol=1e-12)
    c = rng.uniform(20, 120, 200)
    obs, ev = np.minimum(t, c), (t <= c).astype(float)
    ps = pseudo_survival(obs, ev, grid)
    kt, ks = kaplan_meier(obs, ev)
    np.testing.assert_allclose(ps.mean(axis=0), step_at(kt, ks, grid), atol=0.01)


def test_pseudo_learner_and_auto_choice() -> None:
    X, t, e, arm, truth = _followup_data(1.0, n=300)
    sel = SurvivalSelector(horizon=52, model="pseudo").fit(X, t, e, arm)
    curves = sel.predict_survival(X[:20], np.linspace(0, 52, 27))
    assert np.allclose(curves[..., 0], 1.0) and np.all(np.diff(curves, axis=-1) <= 1e-12)
    np.testing.assert_allclose(sel.predict_rfs(X[:20]), curves[..., -1], atol=1e-12)
    # the lasso keeps the moderator: the recommendation agrees with the truth's durable arm
    agree = (sel.recommend(X) == truth["durable_arm"].to_numpy()).mean()
    assert agree > 0.6
    auto = SurvivalSelector(horizon=52, model="auto").fit(X, t, e, arm)
    assert auto.model_ == max(auto.model_scores_, key=lambda k: auto.model_scores_[k])
    with pytest.raises(BrainmatchInputError, match="not used with model 'auto'"):
        SurvivalSelector(model="auto", penalizer=0.1).fit(X, t, e, arm)
    with pytest.raises(BrainmatchInputError, match="model 'forest'"):
        SurvivalSelector(model="forest").fit(X, t, e, arm)


def test_selector_interval_and_interaction_model() -> None:
    X, t, e, arm, _ = _followup_data(0.8, n=200)
    sel = SurvivalSelector(horizon=52, n_bootstrap=20, seed=1).fit(X, t, e, arm)
    rfs = sel.predict_rfs(X[:5])
    lo, hi = sel.predict_interval(X[:5])
    assert rfs.shape == (5, 2) and np.all((lo <= rfs + 1e-9) & (rfs <= hi + 1e-9))
    inter = SurvivalSelector(horizon=52, model="interaction").fit(X, t, e, arm)
    r2 = inter.predict_rfs(X[:50])
    assert r2.shape == (50, 2) and np.corrcoef(rfs[:, 0], inter.predict_rfs(X[:5])[:, 0])[0, 1] > 0


def test_input_errors() -> None:
    X, t, e, arm, _ = _followup_data(0.6, n=120)
    with pytest.raises(BrainmatchInputError, match="event-free arm"):
        SurvivalSelector().fit(X, t, np.where(arm == "SSRI", 0.0, e), arm)
    with pytest.raises(BrainmatchInputError, match="censored"):
        validate_durability(X, t, np.where(np.arange(len(e)) < 5, 1.0, 0.0), arm)
    with pytest.raises(BrainmatchInputError, match="shorter horizon"):
        validate_durability(X, t, e, arm, horizon=500)
    with pytest.raises(BrainmatchInputError, match="must be 0"):
        SurvivalSelector().fit(X, t, e * 2, arm)
    assert parse_horizon("52w") == 52 and parse_horizon("1y") == pytest.approx(52.1775)
    assert parse_horizon("12m", "months") == 12
    with pytest.raises(BrainmatchInputError, match="--horizon 'soon'"):
        parse_horizon("soon")


@pytest.fixture()
def tables(tmp_path: Path) -> tuple[Path, Path, Path]:
    trial = draw_trial(TrialSpec(n_subjects=160, n_sites=2, seed=8, followup=True))
    write_followup(trial, tmp_path)
    f = measured_features(trial, n_noise=3, seed=2)
    fp = tmp_path / "features.tsv"
    f.to_csv(fp, sep="\t", index=False)
    pp = tmp_path / "participants.tsv"
    trial.participants.to_csv(pp, sep="\t", index=False)
    return fp, pp, tmp_path / "phenotype" / "followup.tsv"


@pytest.mark.parametrize(
    "model",
    ["lasso-cox", "per-arm", "interaction", "pseudo", pytest.param("auto", marks=pytest.mark.slow)],
)
def test_cli_durability(tables: tuple[Path, Path, Path], tmp_path: Path, model: str) -> None:
    fp, pp, fu = tables
    out = tmp_path / f"out-{model}"
    r = runner.invoke(
        app,
        [
            "durability",
            "--features",
            str(fp),
            "--outcomes",
            str(pp),
            "--outcomes",
            str(fu),
            "--treatment-column",
            "arm",
            "--time-column",
            "relapse_weeks",
            "--event-column",
            "relapse",
            "--horizon",
            "52w",
            "--model",
            model,
            "--n-bootstrap",
            "50",
            "--n-repeats",
            "1",
            # 3 folds, not the default 5: "auto" repeats its inner model choice in each
            # fold, here and in the API run; the CLI must equal the API for any fold count
            "--n-splits",
            "3",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    api = durability_analysis(
        fp,
        [pp, fu],
        treatment_column="arm",
        time_column="relapse_weeks",
        event_column="relapse",
        model=model,
        n_bootstrap=50,
        n_repeats=1,
        n_splits=3,
    )
    assert res["metrics"]["harrell_c"] == pytest.approx(api.metrics["harrell_c"], abs=1e-12)
    assert "restricted mean survival time" in res["description"]
    assert "Harrell's C" in (out / "report.html").read_text()
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert {"rfs__CBT", "rfs__SSRI", "recommended"} <= set(pred.columns)


def test_cli_durability_bad_input(tables: tuple[Path, Path, Path], tmp_path: Path) -> None:
    fp, pp, fu = tables
    base = [
        "durability",
        "--features",
        str(fp),
        "--outcomes",
        str(pp),
        "--outcomes",
        str(fu),
        "--treatment-column",
        "arm",
        "--out",
        str(tmp_path / "o"),
    ]
    r = runner.invoke(app, [*base, "--time-column", "weeks", "--event-column", "relapse"])
    assert r.exit_code == 2 and "--time-column 'weeks': no such column" in r.output
    r = runner.invoke(app, [*base, "--time-column", "relapse_weeks", "--event-column", "arm"])
    assert r.exit_code == 2 and "must be 0 (censored) or 1" in r.output
    r = runner.invoke(
        app,
        [*base, "--time-column", "relapse_weeks", "--event-column", "relapse", "--horizon", "5y"],
    )
    assert r.exit_code == 2 and "shorter horizon" in r.output


@pytest.mark.slow
def test_auto_penalty_by_inner_cv(tables: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from brainmatch.durability.selector import PENALTY_GRID

    X, t, e, arm, _ = _followup_data(0.8, n=160)
    sel = SurvivalSelector(penalizer="auto").fit(X, t, e, arm)
    assert sel.penalizer_ in PENALTY_GRID and len(sel.penalty_scores_) == len(PENALTY_GRID)
    assert sel.penalty_scores_[sel.penalizer_] == max(sel.penalty_scores_.values())
    fp, pp, fu = tables
    base = [
        "durability",
        "--features",
        str(fp),
        "--outcomes",
        str(pp),
        "--outcomes",
        str(fu),
        "--treatment-column",
        "arm",
        "--time-column",
        "relapse_weeks",
        "--event-column",
        "relapse",
        "--n-bootstrap",
        "20",
        "--n-repeats",
        "1",
        # two outer folds: the API fit above checks the inner-CV choice; this run checks
        # that the CLI passes "auto" through (each outer fold repeats the inner CV)
        "--n-splits",
        "2",
    ]
    r = runner.invoke(app, [*base, "--penalizer", "auto", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "a" / "results.json").read_text())["penalizer"] == "auto"
    r = runner.invoke(app, [*base, "--penalizer", "lots", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "--penalizer 'lots'" in r.output


def test_simulate_followup_options(tmp_path: Path) -> None:
    r = runner.invoke(
        app, ["simulate", str(tmp_path / "bad"), "--followup", "--durability-effect", "5"]
    )
    assert r.exit_code == 2 and "--durability-effect 5.0: must be between 0 and 3" in r.output


@pytest.mark.slow
def test_simulate_followup_cli(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    r = runner.invoke(
        app,
        [
            "simulate",
            str(out),
            "--n-subjects",
            "6",
            "--sites",
            "1",
            "--n-volumes",
            "20",
            "--followup",
            "--durability-effect",
            "0",
            "--seed",
            "2",
            "--n-jobs",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    fu = pd.read_csv(out / "phenotype" / "followup.tsv", sep="\t", na_values="n/a")
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["followup"]["durability_effect"] == 0.0
    trial = draw_trial(TrialSpec(n_subjects=6, n_sites=1, n_volumes=20, seed=2))
    expected, _, _ = draw_followup(trial, durability_effect=0.0)
    np.testing.assert_allclose(fu["relapse_weeks"], expected["relapse_weeks"].astype(float))


def test_cli_durability_site_column(tables: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """durability --site-column: ComBat inside every training fold, as the API."""
    fp, pp, fu = tables
    out = tmp_path / "site"
    r = runner.invoke(
        app,
        [
            *("durability", "--features", str(fp), "--outcomes", str(pp), "--outcomes", str(fu)),
            *("--treatment-column", "arm", "--time-column", "relapse_weeks"),
            *("--event-column", "relapse", "--site-column", "site", "--n-bootstrap", "20"),
            *("--n-repeats", "1", "--out", str(out)),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    api = durability_analysis(
        fp,
        [pp, fu],
        treatment_column="arm",
        time_column="relapse_weeks",
        event_column="relapse",
        site_column="site",
        n_bootstrap=20,
        n_repeats=1,
    )
    assert (
        res["harmonised_sites"] == api.params["harmonised_sites"]
        and len(res["harmonised_sites"]) == 2
    )
    assert res["metrics"]["uno_c"] == pytest.approx(api.metrics["uno_c"], abs=1e-12)
    assert "harmonised across 2 sites by ComBat" in res["description"]
    r = runner.invoke(
        app,
        [
            *("durability", "--features", str(fp), "--outcomes", str(pp), "--outcomes", str(fu)),
            *("--treatment-column", "arm", "--time-column", "relapse_weeks"),
            *("--event-column", "relapse", "--site-column", "scanner", "--out", str(out / "x")),
        ],
    )
    assert r.exit_code == 2 and "--site-column 'scanner': no such column" in r.output
