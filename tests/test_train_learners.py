"""Learners, ``TreatmentSelector``, ``cross_validate`` and ``ValidationResult``.

References: scikit-learn (``LassoCV`` per arm on the same folds, number for number), a real
feature table shipped with scikit-learn (the diabetes study's 10 baseline measurements,
Efron et al. 2004) with simulated arms and outcomes, the known potential outcomes of
:func:`brainmatch.validation.regimes.draw_regime` (a generator independent of
``brainmatch simulate``), and hand computations.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_diabetes
from sklearn.linear_model import LassoCV
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.selection import LEARNERS, TreatmentSelector, cross_validate, recommend, validate
from brainmatch.selection.learners import dr_cate_error, econml_available, make_learner
from brainmatch.validation.regimes import draw_regime, oracle_share
from brainmatch.validation.splits import outer_splits


def _diabetes_trial(seed: int = 0, effect: float = 1.0):
    """Real covariates (442 patients, 10 measurements), simulated arms and outcomes: the
    arm effect depends on BMI and s5 (log triglycerides), sparse and linear."""
    X = load_diabetes(as_frame=True).data
    Z = (X - X.mean()) / X.std()
    rng = np.random.default_rng(seed)
    n = len(Z)
    arm = rng.permutation(np.repeat(["A", "B"], n // 2 + 1)[:n])
    prog = 0.5 * Z["bp"] + 0.3 * Z["age"]
    tau = effect * (Z["bmi"] - 0.8 * Z["s5"])
    mu = np.column_stack([prog + tau / 2, prog - tau / 2])
    y = mu[np.arange(n), (arm == "B").astype(int)] + rng.normal(0, 1, n)
    return X.to_numpy(), arm, y, mu, list(X.columns)


def test_t_linear_equals_sklearn_lasso_t_learner_on_the_same_folds():
    """The T-learner is scikit-learn's StandardScaler + LassoCV per arm, fold by fold."""
    X, arm, y, _, _ = _diabetes_trial()
    res = cross_validate(
        TreatmentSelector("t-linear", better="higher"),
        X,
        arm,
        y,
        n_repeats=1,
        n_permutations=0,
    )
    ref = np.zeros((len(y), 2))
    for _, tr, te in outer_splits(arm, n_splits=5, n_repeats=1, seed=0):
        sc = StandardScaler().fit(X[tr])
        for a, name in enumerate(("A", "B")):
            rows = tr[arm[tr] == name]
            m = LassoCV(alphas=30, cv=5, max_iter=2000).fit(sc.transform(X[rows]), y[rows])
            ref[te, a] = m.predict(sc.transform(X[te]))
    got = res.predictions[["predicted__A", "predicted__B"]].to_numpy()
    np.testing.assert_allclose(got, ref, atol=1e-8)


def test_recovery_on_real_covariates():
    """Diabetes covariates: the T-learner and the elastic-net interaction model recover the
    planted selection rule out of fold (measured 0.93 and 0.94 at seed 0; the SD over
    seeds 0-4 is below 0.03), and validation supports selecting."""
    X, arm, y, mu, names = _diabetes_trial()
    shares = {}
    for learner in ("t-linear", "enet-interaction"):
        res = cross_validate(
            TreatmentSelector(learner, better="higher"),
            pd.DataFrame(X, columns=names),
            arm,
            y,
            n_repeats=1,
            n_permutations=0,
        )
        rec = (res.predictions["recommended"] == "B").to_numpy().astype(int)
        shares[learner] = oracle_share(mu, rec)
        assert res.metrics["selection"]["policy_gain_ci"][0] > 0
    assert min(shares.values()) > 0.85, shares


def test_sparse_high_dimensional_regime_auto_chooses_a_sparse_learner():
    """p >> n with 3 interacting features: ridge interaction recovers little, auto picks a
    sparse learner by the doubly robust CATE error and recovers most of the gain."""
    r = draw_regime(240, 600, "sparse", 2, seed=4, effect=1.5)
    X = r.features.iloc[:, 1:].to_numpy()
    t = np.searchsorted(r.arms, r.outcomes["arm"])
    y = r.outcomes["y"].to_numpy()
    train, test = np.arange(160), np.arange(160, 240)
    shares = {}
    for learner in ("interaction", "auto"):
        select = "none" if learner == "interaction" else None  # the plain ridge
        sel = TreatmentSelector(learner, better="higher", select=select)
        sel.fit(X[train], t[train], y[train])
        rec = sel.recommend(X[test])["recommended"].astype(int).to_numpy()
        shares[learner] = oracle_share(r.mu[test], rec)
        if learner == "auto":
            assert sel.chosen_learner_ in ("t-linear", "enet-interaction")
            scores = sel.learner_.scores_
            assert scores[sel.chosen_learner_] < scores["interaction"]
    assert shares["auto"] > 0.6 and shares["auto"] > shares["interaction"] + 0.3, shares


def test_dr_cate_error_by_hand():
    t = np.array([0, 1, 0, 1])
    y = np.array([1.0, 2.0, 0.0, 4.0])
    a = np.array([[1.0, 2.0], [0.0, 3.0], [0.5, 1.0], [1.0, 3.0]])
    b = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    e = np.array([0.5, 0.5])
    got = dr_cate_error({"a": a, "b": b}, t, y, e)
    mu = (a + b) / 2
    gamma = mu + np.eye(2)[t] / 0.5 * (y[:, None] - mu)
    phi = gamma - gamma.mean(1, keepdims=True)
    for name, pred in (("a", a), ("b", b)):
        tau = pred - pred.mean(1, keepdims=True)
        assert got[name] == pytest.approx(((phi - tau) ** 2).sum(1).mean())


@pytest.mark.parametrize(
    "learner", [m for m in LEARNERS if m not in ("auto", "econml-dr", "causal-forest")]
)
def test_every_learner_recovers_a_strong_rule(learner):
    """Each learner, fitted on 300 patients of a strong sparse linear rule (p = 10), beats
    treating everyone alike on 300 new patients (oracle share > 0.5; measured >= 0.8)."""
    r = draw_regime(600, 10, "sparse", 2, seed=2, effect=2.0)
    X = r.features.iloc[:, 1:].to_numpy()
    t = np.searchsorted(r.arms, r.outcomes["arm"])
    y = r.outcomes["y"].to_numpy()
    sel = TreatmentSelector(learner, better="higher").fit(X[:300], t[:300], y[:300])
    rec = sel.recommend(X[300:])["recommended"].astype(int).to_numpy()
    assert oracle_share(r.mu[300:], rec) > 0.5


def test_binary_outcome_uses_penalised_logistic():
    """A 0/1 outcome: the T-learner is an L1 logistic model (probabilities from the logit
    link), saved with its link and read back identically."""
    r = draw_regime(400, 8, "sparse", 2, seed=5, effect=2.0)
    X = r.features.iloc[:, 1:].to_numpy()
    t = r.outcomes["arm"].to_numpy()
    yb = (r.outcomes["y"] > r.outcomes["y"].median()).astype(float).to_numpy()
    sel = TreatmentSelector("t-linear").fit(X, t, yb)
    assert sel.binary_ and sel.better_ == "higher"
    p = sel.predict_outcomes(X)
    assert ((p > 0) & (p < 1)).all().all()
    lin = sel.learner_.primal()
    assert lin["link"] == "logit"
    Z = sel.preprocessor_.transform(X, pd.DataFrame(index=range(len(X))), None)[0]
    eta = Z @ lin["coef"][0] + lin["intercept"][0]
    np.testing.assert_allclose(p.iloc[:, 0], 1 / (1 + np.exp(-eta)), atol=1e-12)


def test_selector_api_save_load_and_errors(tmp_path):
    r = draw_regime(200, 12, "sparse", 3, seed=6, sites=2)
    X = r.features.iloc[:, 1:]
    o = r.outcomes
    base = np.asarray(o["y"]) * 0 + np.random.default_rng(0).normal(size=len(o))
    sel = TreatmentSelector("enet-interaction", better="higher")
    assert sel.get_params()["learner"] == "enet-interaction"
    assert not hasattr(sel, "arms_") and clone(sel).learner == "enet-interaction"
    with pytest.raises(BrainmatchInputError, match="not fitted"):
        sel.predict_outcomes(X)
    sel.fit(X, o["arm"], o["y"], sites=o["site"], baseline=base)
    pred = sel.predict_outcomes(X, sites=o["site"], baseline=base)
    assert list(pred.columns) == r.arms and pred.shape == (200, 3)
    rec = sel.recommend(X, sites=o["site"], baseline=base)
    assert (rec["advantage"] >= 0).all() and set(rec["recommended"]) <= set(r.arms)
    path = sel.save(tmp_path / "m.npz")
    back = TreatmentSelector.load(path)
    np.testing.assert_allclose(
        back.predict_outcomes(X, sites=o["site"], baseline=base).to_numpy(),
        pred.to_numpy(),
        atol=1e-10,
    )
    # recommend() reads the file; not validated -> no reliable preference
    table = r.features.assign(site=o["site"], baseline=base).head(3)
    out = recommend(path, table, None)
    assert all(not p["reliable_preference"] for p in out.patients)
    assert all(p["statement"].startswith("no reliable preference") for p in out.patients)
    for p in out.patients:  # no refits in the file: no made-up interval or agreement
        assert p["advantage_interval"] is None and p["bootstrap_agreement"] is None
        assert any("saved without validation" in r for r in p["no_preference_reasons"])
        assert any("no bootstrap refits" in r for r in p["no_preference_reasons"])
    # the same through the CLI and its report: no interval is printed
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    table.to_csv(tmp_path / "new.csv", index=False)
    cli = CliRunner().invoke(
        app, ["recommend", str(path), str(tmp_path / "new.csv"), "--out", str(tmp_path / "r")]
    )
    assert cli.exit_code == 0, cli.output
    assert "no bootstrap refits in the model" in cli.output and "95% interval" not in cli.output
    html = (tmp_path / "r" / "report.html").read_text()
    assert "no bootstrap refits in the model file, so no interval" in html
    with pytest.raises(BrainmatchInputError, match="baseline is needed"):
        sel.predict_outcomes(X)
    with pytest.raises(BrainmatchInputError, match="X has 11 features"):
        sel.predict_outcomes(X.iloc[:, :11].to_numpy(), baseline=base)
    # named columns are matched by name, never by position
    shuffled = X[X.columns[::-1]]
    np.testing.assert_allclose(
        sel.predict_outcomes(shuffled, sites=o["site"], baseline=base).to_numpy(),
        pred.to_numpy(),
        atol=1e-12,
    )
    with pytest.raises(BrainmatchInputError, match=r"missing 1 fitted feature.*not seen in fit"):
        sel.predict_outcomes(X.rename(columns={X.columns[0]: "other"}), baseline=base)
    with pytest.raises(BrainmatchInputError, match="missing 1 fitted feature"):
        sel.predict_outcomes(X.iloc[:, :11], baseline=base)
    with pytest.raises(BrainmatchInputError, match="y must hold numbers"):
        TreatmentSelector().fit(X, o["arm"], ["a"] * len(o))
    with pytest.raises(BrainmatchInputError, match="sites has 10 labels for 200 patients"):
        TreatmentSelector().fit(X, o["arm"], o["y"], sites=o["site"][:10])
    with pytest.raises(BrainmatchInputError, match=r"cv='leave-site-out' needs sites="):
        cross_validate(TreatmentSelector(), X, o["arm"], o["y"], cv="leave-site-out")
    with pytest.raises(BrainmatchInputError, match=r"learner='ridge'"):
        TreatmentSelector("ridge").fit(X, o["arm"], o["y"])
    with pytest.raises(BrainmatchInputError, match="same value"):
        TreatmentSelector().fit(X, o["arm"], np.ones(len(o)))
    with pytest.raises(BrainmatchInputError, match="cannot be stored"):
        TreatmentSelector("s-hgb").fit(X, o["arm"], o["y"]).save(tmp_path / "h.npz")


def test_leave_site_out_without_harmonisation_holds_out_each_site_unharmonised():
    """``harmonize=False`` keeps the sites for the folds: each site's out-of-fold
    predictions are those of a selector fitted, without ComBat, on the other sites; with
    ComBat (the default) the same folds give other predictions (the sites shift the
    features)."""
    r = draw_regime(240, 8, "sparse", 2, seed=3, sites=3)
    X = r.features.iloc[:, 1:]
    o = r.outcomes
    site = o["site"].to_numpy()
    res = cross_validate(
        TreatmentSelector(harmonize=False), X, o["arm"], o["y"], sites=site,
        cv="leave-site-out", n_permutations=0,
    )  # fmt: skip
    assert res.metrics["options"]["harmonize"] is False
    splits = res.extras["splits"]
    assert sorted(np.unique(site[test]).item() for _, _, test in splits) == sorted(set(site))
    cols = [f"predicted__{a}" for a in r.arms]
    for _, train, test in splits:
        fold = TreatmentSelector(harmonize=False).fit(
            X.iloc[train], o["arm"].iloc[train], o["y"].iloc[train]
        )
        np.testing.assert_allclose(
            res.predictions[cols].to_numpy()[test],
            fold.predict_outcomes(X.iloc[test]).to_numpy(),
            atol=1e-8,
        )
    combat = cross_validate(
        TreatmentSelector(), X, o["arm"], o["y"], sites=site, cv="leave-site-out",
        n_permutations=0,
    )  # fmt: skip
    assert combat.metrics["options"]["harmonize"] is True
    assert not np.allclose(combat.predictions[cols], res.predictions[cols], atol=1e-3)


def test_validation_result_object(tmp_path):
    r = draw_regime(150, 8, "sparse", 2, seed=7)
    res = validate(
        r.features,
        r.outcomes,
        treatment_column="arm",
        outcome_column="y",
        better="higher",
        n_repeats=2,
        n_permutations=19,
        learning_curve=False,
    )
    res.save(tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == res.to_dict()
    res.save(tmp_path)  # a rerun updates its own folder
    pred = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    # a folder holding a user's files is refused, never overwritten
    user = tmp_path / "mine"
    user.mkdir()
    (user / "metrics.json").write_text("my notes")
    with pytest.raises(BrainmatchInputError, match=r"metrics\.json"):
        res.save(user)
    assert (user / "metrics.json").read_text() == "my notes"
    assert not (user / "predictions.tsv").exists()
    assert list(pred["participant_id"]) == list(res.predictions["participant_id"])
    html = res._repr_html_()
    assert "policy gain" in html and "selection supported" in html
    sel = res.metrics["selection"]
    assert sel["benefit_d_ci"] == [None, None] and "descriptive" in sel["benefit_d_note"]
    lo, hi = sel["policy_gain_ci"]
    assert lo < sel["policy_gain"] < hi
    assert sel["policy_gain_d"] == pytest.approx(
        sel["policy_gain"] / res.metrics["selection"]["policy_gain"] * sel["policy_gain_d"]
    )


def test_selection_is_never_supported_without_a_permutation_test():
    """A strong planted effect: with 39 permutations selection is supported; with none
    the policy gain's CI is the same, but 'supported' needs a test that ran."""
    r = draw_regime(200, 8, "sparse", 2, seed=7, effect=2.0)
    kw = dict(
        treatment_column="arm", outcome_column="y", better="higher", n_repeats=2,
        learning_curve=False,
    )  # fmt: skip
    tested = validate(r.features, r.outcomes, n_permutations=39, **kw)
    assert tested.selection_supported
    untested = validate(r.features, r.outcomes, n_permutations=0, **kw)
    ci = untested.metrics["selection"]["policy_gain_ci"]
    assert ci == pytest.approx(tested.metrics["selection"]["policy_gain_ci"]) and ci[0] > 0
    assert untested.metrics["selection"]["permutation_p"] is None
    assert not untested.selection_supported
    assert any("no permutation test was run" in w for w in untested.metrics["warnings"])


def test_one_arm_for_everyone_is_flagged():
    """A large main effect and no interaction: the model recommends one arm for all, and
    says so (metrics, warnings), and validation does not support selection."""
    r = draw_regime(200, 6, "none", 2, seed=8)
    o = r.outcomes.copy()
    o.loc[o["arm"] == "arm2", "y"] += 5.0
    res = validate(
        r.features,
        o,
        treatment_column="arm",
        outcome_column="y",
        better="higher",
        n_repeats=1,
        n_permutations=19,
        learning_curve=False,
    )
    sel = res.metrics["selection"]
    assert sel["single_arm_recommended"] == "arm2"
    assert sel["recommended_counts"] == {"arm1": 0, "arm2": 200}
    assert not sel["selection_supported"]
    assert any("recommends arm2 for every patient" in w for w in res.metrics["warnings"])


@pytest.mark.parametrize(
    "learner",
    [
        m
        if m in ("interaction", "per-arm", "t-linear", "enet-interaction")
        else pytest.param(m, marks=pytest.mark.slow)
        for m in LEARNERS
    ],
)
def test_cli_every_model(learner, tmp_path):
    """``brainmatch train --model X`` for every learner: exit 0, and the policy gain in
    metrics.json equals the Python API's on the same data and seed."""
    if learner in ("econml-dr", "causal-forest") and not econml_available():
        pytest.skip("EconML (the causal extra) is not installed")
    r = draw_regime(80, 5, "sparse", 2, seed=9, effect=1.5)
    r.features.to_csv(tmp_path / "f.csv", index=False)
    r.outcomes.to_csv(tmp_path / "o.tsv", sep="\t", index=False)
    args = [
        "train",
        "--features",
        str(tmp_path / "f.csv"),
        "--outcomes",
        str(tmp_path / "o.tsv"),
        "--treatment-column",
        "arm",
        "--outcome-column",
        "y",
        "--better",
        "higher",
        "--model",
        learner,
        "--n-repeats",
        "1",
        "--n-permutations",
        "3",
        "--out",
        str(tmp_path / "m"),
        "--no-report",
        "--no-learning-curve",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    api = validate(
        r.features,
        r.outcomes,
        treatment_column="arm",
        outcome_column="y",
        better="higher",
        model=learner,
        n_repeats=1,
        n_permutations=3,
        learning_curve=False,  # as --no-learning-curve above
    )
    assert m["selection"]["policy_gain"] == pytest.approx(api.metrics["selection"]["policy_gain"])
    stored = learner not in ("s-linear", "s-hgb", "econml-dr", "causal-forest")
    assert (tmp_path / "m" / "model.npz").exists() == stored


def test_cli_maps_parameter_names_to_flags(tmp_path):
    r = draw_regime(60, 4, "none", 2, seed=1)
    r.features.to_csv(tmp_path / "f.csv", index=False)
    r.outcomes.assign(arm=r.outcomes["arm"].str.upper().where(r.outcomes.index > 5, "arm1")).to_csv(
        tmp_path / "o.tsv", sep="\t", index=False
    )
    base = ["train", "--features", str(tmp_path / "f.csv"), "--outcomes", str(tmp_path / "o.tsv")]
    out = CliRunner().invoke(
        app,
        [*base, "--treatment-column", "arm", "--outcome-column", "y", "--out", str(tmp_path / "x")],
    )
    assert out.exit_code == 2
    assert "--treatment-column 'arm': arm labels that differ only in case" in out.output
    out = CliRunner().invoke(
        app,
        [
            *base,
            "--treatment-column",
            "arm",
            "--outcome-column",
            "y",
            "--model",
            "ridge",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert out.exit_code == 2 and "--model 'ridge': expected one of" in out.output


def test_learner_factory_rejects_unknown_names():
    with pytest.raises(BrainmatchInputError, match="expected one of"):
        make_learner("forest")


def test_regime_generator_truth():
    """The generator's truth is consistent: the oracle policy recovers all of the gain,
    the best single arm none of it; without interaction there is no gain to recover;
    sites shift the features and missing values appear at the requested rate."""
    r = draw_regime(500, 20, "nonlinear", 3, sites=3, missing=0.1, seed=1)
    assert oracle_share(r.mu, r.mu.argmax(axis=1)) == pytest.approx(1.0)
    best = int(r.mu.mean(axis=0).argmax())
    assert oracle_share(r.mu, np.full(500, best)) == pytest.approx(0.0)
    X = r.features.iloc[:, 1:]
    assert X.isna().to_numpy().mean() == pytest.approx(0.1, abs=0.01)
    site_means = X.groupby(r.outcomes["site"].to_numpy()).mean().to_numpy()
    assert np.ptp(site_means, axis=0).mean() > 0.3
    null = draw_regime(200, 5, "none", 2, seed=2)
    spread = null.mu - null.mu.mean(axis=1, keepdims=True)
    assert np.ptp(spread[:, 0]) == pytest.approx(0.0, abs=1e-12)
    # no interaction: nothing to recover, so the share is undefined for every draw (it
    # was +-5e15 for 44 % of them, a rounding error of the gap divided by)
    for n, arms, seed in [
        (150, 2, 2),
        *((n, a, s) for n in (150, 400) for a in (2, 4) for s in range(8)),
    ]:
        m = draw_regime(n, 5, "none", arms, seed=seed).mu
        assert np.isnan(oracle_share(m, np.zeros(n, dtype=np.intp)))
