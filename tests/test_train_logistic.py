"""Binary outcomes: the default ``interaction`` learner as a batched ridge-logistic model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize
from scipy.stats import norm
from sklearn.linear_model import LogisticRegression

from brainmatch.selection import _logistic
from brainmatch.selection._logistic import (
    LogisticInteractionLOO,
    alo_deviance,
    newton_logistic,
)
from brainmatch.selection.pipeline import LogisticArmModels
from brainmatch.selection.train import train, validate
from brainmatch.simulate.model import RESIDUAL_SD, TrialSpec, draw_trial
from brainmatch.validation.synthetic import measured_features, outcome_table


def _design(n=150, r=8, seed=0):
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, r - 1))])
    eta = 0.3 + X[:, 1] - 0.8 * X[:, 2]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return X, y, rng


def _penalised_nll(beta, X, y, lam, pen):
    eta = X @ beta
    mu = 1 / (1 + np.exp(-eta))
    f = np.sum(np.logaddexp(0, eta) - y * eta) + 0.5 * lam * np.sum(pen * beta**2)
    return f, X.T @ (mu - y) + lam * pen * beta


def test_newton_equals_sklearn_and_scipy():
    X, y, _ = _design()
    r = X.shape[1]
    for lam in (0.1, 3.0, 50.0):
        # every column penalised: sklearn's l2 LogisticRegression with C = 1 / lam
        ours = newton_logistic(X, y[:, None], lam, np.ones(r))[0]
        sk = LogisticRegression(C=1 / lam, fit_intercept=False, tol=1e-12, max_iter=10000)
        np.testing.assert_allclose(ours, sk.fit(X, y).coef_[0], atol=1e-6)
        # intercept (and one more column) unpenalised: scipy on the same objective
        pen = np.r_[0.0, 0.0, np.ones(r - 2)]
        ours = newton_logistic(X, y[:, None], lam, pen)[0]
        ref = optimize.minimize(
            _penalised_nll,
            np.zeros(r),
            args=(X, y, lam, pen),
            jac=True,
            method="BFGS",
            options={"gtol": 1e-10, "maxiter": 10000},
        ).x
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_batched_columns_equal_one_at_a_time():
    X, y, rng = _design(n=120)
    Y = np.column_stack([y] + [rng.permutation(y) for _ in range(7)])
    Y[:, 7] = np.clip(Y[:, 7] + rng.normal(0, 0.3, y.size), -0.5, 1.5)  # Freedman-Lane-like
    whole = LogisticInteractionLOO(X, 1).fit(Y)
    for j in range(Y.shape[1]):
        alone = LogisticInteractionLOO(X, 1).fit(Y[:, j : j + 1])
        assert alone.choice[0] == whole.choice[j]
        np.testing.assert_allclose(alone.coef[0], whole.coef[j], atol=1e-9)
    # each column's chosen penalty minimises its own ALO deviance over the grid
    for j in (0, 3):
        devs = [
            alo_deviance(
                X,
                np.clip(Y[:, j : j + 1], 0, 1),
                newton_logistic(X, np.clip(Y[:, j : j + 1], 0, 1), lam, whole.pen),
                lam,
                whole.pen,
            )[0]
            for lam in whole.lambdas
        ]
        assert int(np.argmin(devs)) == whole.choice[j]


def test_alo_approximates_exact_leave_one_out():
    """Rad & Maleki's ALO deviance is close to refitting without each patient."""
    X, y, _ = _design(n=80, r=6, seed=3)
    pen = np.r_[0.0, np.ones(5)]
    lam = 2.0
    beta = newton_logistic(X, y[:, None], lam, pen)
    alo = alo_deviance(X, y[:, None], beta, lam, pen)[0]
    exact = 0.0
    for i in range(y.size):
        keep = np.arange(y.size) != i
        b = newton_logistic(X[keep], y[keep, None], lam, pen)[0]
        eta = X[i] @ b
        exact += 2 * (np.logaddexp(0, eta) - y[i] * eta)
    assert alo == pytest.approx(exact, rel=0.02)


def test_arm_models_probabilities_and_fallback(monkeypatch):
    rng = np.random.default_rng(4)
    n, p, k = 160, 4, 2
    Z, C, t = rng.normal(size=(n, p)), rng.normal(size=(n, 1)), rng.integers(0, k, n)
    eta = np.where(t == 0, 1.5 * Z[:, 0], -1.5 * Z[:, 0]) + 0.5 * C[:, 0]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    fitted = LogisticArmModels().fit(Z, C, t, k, y[:, None])
    P = fitted.predict(Z, C)[:, :, 0]
    assert fitted.link_ == "logit" and ((P > 0) & (P < 1)).all()
    prim = fitted.primal(0)  # log-odds coefficients reproduce the predictions
    for a in range(k):
        e = Z @ prim["coef"][a] + prim["intercept"][a] + C @ prim["cov_coef"][a]
        np.testing.assert_allclose(1 / (1 + np.exp(-e)), P[:, a], atol=1e-12)
    assert prim["coef"][0, 0] > 0.3 and prim["coef"][1, 0] < -0.3  # the planted sign flip
    monkeypatch.setattr(_logistic, "MAX_WIDTH", 5)
    lp = LogisticArmModels().fit(Z, C, t, k, y[:, None])
    assert lp.link_ == "identity-clipped" and lp.ridge_ is not None


def _trial(n, effect, seed, n_noise=20, sites=3):
    trial = draw_trial(
        TrialSpec(n_subjects=n, n_sites=sites, effect_size=effect, arms=("CBT", "SSRI"), seed=seed)
    )
    f = measured_features(trial, n_noise=n_noise, reliability=0.9, seed=seed)
    return trial, f, outcome_table(trial)


def _remission_gain_share(trial, res):
    """Share of the oracle's gain in remission probability (over the best single arm)
    that the recommendations recover; P(remission) = P(HAMD week 8 <= 7) under the
    simulator's normal residual."""
    arms = res.metrics["arms"]
    truth = trial.truth.set_index("participant_id")
    pred = res.predictions.set_index("participant_id")
    mu = truth.loc[pred.index, [f"mu__{a}" for a in arms]].to_numpy()
    prob = norm.cdf((7.5 - mu) / RESIDUAL_SD)
    rec = np.searchsorted(arms, pred["recommended"])
    best = prob.mean(axis=0).max()
    return (prob[np.arange(rec.size), rec].mean() - best) / (prob.max(axis=1).mean() - best)


def _validate_remission(f, o, seed, n_permutations=199):
    return validate(
        f,
        o,
        treatment_column="arm",
        outcome_column="remission",
        baseline_column="hamd_baseline",
        site_column="site",
        n_repeats=1,
        n_permutations=n_permutations,
        learning_curve=False,
        seed=seed,
    )


def test_null_binary_trials_fast():
    """24 binary trials without interaction: the permutation p is not piled at 0 and the
    policy gain's CI rarely excludes 0 (binomial 1 % bounds for 24 trials).  19
    permutations: p = 0.05 is attainable (1/20), so a valid test flags each null trial with
    probability exactly 0.05, as with 99 (measured at trial seeds 700, 800, 900, 1000: no
    p <= 0.05, medians 0.50-0.63, no CI above 0)."""
    ps, fp = [], []
    for s in range(24):
        _, f, o = _trial(n=70, effect=0.0, seed=700 + s, n_noise=10, sites=2)
        res = _validate_remission(f, o, s, n_permutations=19)
        assert res.metrics["outcome_model"]["link"] == "logit"
        sel = res.metrics["selection"]
        ps.append(sel["permutation_p"])
        fp.append(sel["policy_gain_ci"][0] > 0)
    ps_a = np.array(ps)
    assert (ps_a <= 0.05).sum() <= 4 and np.median(ps_a) > 0.2, ps_a
    assert sum(fp) <= 2


def test_binary_train_stores_logit_and_recommend_returns_probabilities(tmp_path):
    from brainmatch.selection.recommend import recommend

    _, f, o = _trial(n=160, effect=1.2, seed=6, n_noise=5)
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="remission",
        site_column="site",
        out_dir=tmp_path / "model",
        n_permutations=19,  # nothing here tests the p or the intervals: the paths run
        n_boot=20,
        learning_curve=False,
    )
    m = res.metrics
    assert m["outcome_model"]["link"] == "logit"
    meta = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert meta["outcome_model"]["link"] == "logit"
    pred = res.predictions[["predicted__CBT", "predicted__SSRI"]].to_numpy()
    assert ((pred > 0) & (pred < 1)).all()
    rec = recommend(tmp_path / "model" / "model.npz", f.iloc[:5], clinical=o.iloc[:5])
    from brainmatch.selection.modelfile import load_model

    _, model_meta = load_model(tmp_path / "model" / "model.npz")
    assert model_meta["link"] == "logit"
    vals = np.array([[p["predicted"][a]["value"] for a in ("CBT", "SSRI")] for p in rec.patients])
    assert vals.shape == (5, 2) and ((vals > 0) & (vals < 1)).all()
    # the logistic decomposition of a difference is in log-odds, features + the rest
    for p in rec.patients:
        assert p["advantage_decomposition_scale"] == "log-odds"
        q = np.array(
            [p["predicted"][p["recommended"]]["value"], p["predicted"][p["next_best"]]["value"]]
        )
        lo = np.log(q / (1 - q))
        total = p["advantage_from_features"] + p["advantage_from_arm_average"]
        assert total == pytest.approx(lo[0] - lo[1], abs=1e-6)
    # another learner: metrics.json records the link of the model it stores
    other = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="remission",
        model="t-linear",
        out_dir=tmp_path / "t",
        n_repeats=1,
        n_permutations=0,
        n_boot=5,
        learning_curve=False,
    )
    assert other.metrics["outcome_model"]["link"] == "logit"


def _logistic_truth_trial(seed, n=400):
    """A trial whose remission follows a logistic model with an arm-by-feature
    interaction on the first measured feature (opposite signs in the two arms)."""
    _, f, o = _trial(n=n, effect=0.0, seed=seed, n_noise=15)
    rng = np.random.default_rng(seed)
    z = f[next(c for c in f.columns if c != "participant_id")].to_numpy(dtype=float)
    z = (z - z.mean()) / z.std()
    prob = 1 / (1 + np.exp(-np.column_stack([-0.3 + z, -0.3 - z])))
    arm = (o["arm"].to_numpy() == sorted(o["arm"].unique())[1]).astype(int)
    o = o.copy()
    o["remission"] = (rng.random(len(o)) < prob[np.arange(len(o)), arm]).astype(int)
    return f, o, prob


def _oracle_share(res, o, prob):
    pred = res.predictions.set_index("participant_id").loc[o["participant_id"]]
    rec = np.searchsorted(res.metrics["arms"], pred["recommended"].to_numpy())
    best = prob.mean(axis=0).max()
    return (prob[np.arange(rec.size), rec].mean() - best) / (prob.max(axis=1).mean() - best)


def test_recovery_logit_vs_linear_probability(monkeypatch):
    """Known logistic truth: the ridge-logistic default recovers most of the oracle's
    gain in remission probability, within 0.1 of the linear-probability ridge it replaces
    (measured, seeds 1-3: 0.822 / 0.652 / 0.709 vs 0.825 / 0.701 / 0.728; see
    docs/train.md)."""
    f, o, prob = _logistic_truth_trial(1)
    kw = dict(treatment_column="arm", outcome_column="remission", site_column="site")
    kw.update(n_repeats=1, n_permutations=99, learning_curve=False, seed=1)
    logit = validate(f, o, **kw)
    monkeypatch.setattr(_logistic, "MAX_WIDTH", 0)  # force the linear-probability path
    lp = validate(f, o, select="none", **kw)  # unscreened (the default would screen now)
    assert logit.metrics["outcome_model"]["link"] == "logit"
    assert lp.metrics["outcome_model"]["link"] == "identity-clipped"
    assert any("linear-probability" in w for w in lp.metrics["warnings"])
    s_logit, s_lp = _oracle_share(logit, o, prob), _oracle_share(lp, o, prob)
    assert s_logit > 0.7 and s_logit > s_lp - 0.1, (s_logit, s_lp)
    assert logit.metrics["selection"]["permutation_p"] <= 0.01


def test_binary_regime_shares_the_continuous_draw_and_the_default_recovers_its_gain():
    """``draw_regime(outcome="binary")`` (the benchmark's 0/1 rows): the same features,
    sites and missing values as the continuous draw, ``mu`` the probabilities of its
    log-odds, 0/1 outcomes drawn with them; and the default (ridge-logistic) recovers most
    of the oracle's gain where the effects are strong, against a policy that ignores them."""
    from brainmatch.validation.regimes import draw_regime, oracle_share

    kw = dict(sites=3, missing=0.05, effect=2.0, seed=3)
    c = draw_regime(800, 10, "sparse", 2, **kw)
    b = draw_regime(800, 10, "sparse", 2, outcome="binary", **kw)
    assert b.features.equals(c.features)
    assert b.outcomes[["arm", "site"]].equals(c.outcomes[["arm", "site"]])
    np.testing.assert_allclose(b.mu, 1 / (1 + np.exp(-c.mu)))
    y = b.outcomes["y"].to_numpy()
    assert set(np.unique(y)) == {0.0, 1.0}
    received = b.mu[np.arange(y.size), np.searchsorted(b.arms, b.outcomes["arm"])]
    assert abs(y.mean() - received.mean()) < 3 * np.sqrt(0.25 / y.size)
    with pytest.raises(ValueError, match="outcome"):
        draw_regime(50, 5, outcome="ordinal")
    res = validate(b.features, b.outcomes, treatment_column="arm", outcome_column="y",
                   site_column="site", n_repeats=1, n_permutations=0,
                   learning_curve=False)  # fmt: skip
    assert res.metrics["binary"] is True and res.metrics["better"] == "higher"
    rec = np.searchsorted(b.arms, res.predictions["recommended"].to_numpy())
    assert oracle_share(b.mu, rec) > 0.8  # 0.92 (seeds 4, 5: 0.92, 0.96)
    # choosing at random recovers nothing on average
    rng = np.random.default_rng(0)
    assert abs(oracle_share(b.mu, rng.integers(0, 2, y.size))) < 0.3


def test_binary_default_screens_where_the_logistic_design_is_too_wide():
    """A 0/1 outcome keeps the ridge-logistic model (``select="none"``) where its design
    fits; beyond ``MAX_WIDTH`` columns the model is a clipped linear-probability ridge
    anyway, and the default screens it (``auto``), as for a score.  Ground truth: n = 400,
    p = 200 (402 logistic columns), 3 interacting features; the screened default recovers
    0.84 of the oracle's gain (seeds 1, 2: 0.86, 0.85), the unscreened ridge 0.23 (0.10,
    0.49); bench_select.py --binary measures it against the anchors."""
    from brainmatch.selection import TreatmentSelector
    from brainmatch.validation.regimes import draw_regime, oracle_share

    kw = dict(treatment_column="arm", outcome_column="y", n_repeats=1, n_permutations=0,
              learning_curve=False)  # fmt: skip
    b = draw_regime(400, 200, "sparse", 2, outcome="binary", seed=0, effect=1.5)
    default = validate(b.features, b.outcomes, **kw)
    plain = validate(b.features, b.outcomes, select="none", **kw)

    def share(res):
        return oracle_share(b.mu, np.searchsorted(b.arms, res.predictions["recommended"]))

    assert default.metrics["feature_selection"]["select"] == "auto"
    assert default.metrics["outcome_model"] == {
        "link": "identity-clipped", "design_width": 402, "max_width": _logistic.MAX_WIDTH
    }  # fmt: skip
    assert any("screened (select=auto, the default there)" in w
               for w in default.metrics["warnings"])  # fmt: skip
    assert plain.metrics["feature_selection"]["select"] == "none"
    assert share(default) > 0.7 and share(default) > share(plain) + 0.3
    # the estimator resolves its default the same way
    X = b.features.drop(columns="participant_id")
    sel = TreatmentSelector().fit(X, b.outcomes["arm"], b.outcomes["y"])
    assert sel.learner_.select_ == "auto"
    # narrow: the ridge-logistic model, unscreened
    n = draw_regime(400, 10, "sparse", 2, outcome="binary", seed=0, effect=1.5)
    narrow = validate(n.features, n.outcomes, **kw)
    assert narrow.metrics["feature_selection"]["select"] == "none"
    assert narrow.metrics["outcome_model"]["link"] == "logit"
    sel = TreatmentSelector().fit(n.features.iloc[:, 1:], n.outcomes["arm"], n.outcomes["y"])
    assert sel.learner_.select_ == "none" and sel.learner_.primal()["link"] == "logit"


def test_cli_wide_binary_trial_trains_screened_and_recommends_probabilities(tmp_path):
    """Through the CLI: a wide 0/1 trial (2 arms x 160 features) trains the screened
    linear-probability default, says so, stores its identity-clipped link and the screened
    features, and ``recommend`` gives probabilities in [0, 1] decomposed on their own scale."""
    from typer.testing import CliRunner

    from brainmatch.cli.main import app
    from brainmatch.selection.modelfile import load_model
    from brainmatch.validation.regimes import draw_regime

    b = draw_regime(300, 160, "sparse", 2, outcome="binary", seed=2, effect=2.0)
    b.features.to_csv(tmp_path / "f.csv", index=False)
    b.outcomes.to_csv(tmp_path / "o.tsv", sep="\t", index=False)
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--features", str(tmp_path / "f.csv"),
                              "--outcomes", str(tmp_path / "o.tsv"),
                              "--treatment-column", "arm", "--outcome-column", "y",
                              "--out", str(tmp_path / "m"), "--n-repeats", "1",
                              "--n-permutations", "19", "--no-report"])  # fmt: skip
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["binary"] and m["feature_selection"]["select"] == "auto"
    assert m["outcome_model"]["link"] == "identity-clipped"
    assert any("screened (select=auto" in w for w in m["warnings"])
    # 162 reduced-model columns for 300 patients: a ridge, whose p-values ran small
    assert m["selection"]["permutation_null_method"] == "freedman-lane"
    assert any("reduced model is a ridge" in w for w in m["warnings"])
    _, meta = load_model(tmp_path / "m" / "model.npz")
    assert meta["link"] == "identity-clipped"
    assert m["feature_selection"]["final_k"] < 160  # 3 interacting features
    b.features.head(4).to_csv(tmp_path / "new.csv", index=False)
    res = runner.invoke(app, ["recommend", str(tmp_path / "m" / "model.npz"),
                              str(tmp_path / "new.csv"), "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 0, res.output
    rj = json.loads((tmp_path / "r" / "recommend.json").read_text())
    for p in rj["patients"]:
        vals = [p["predicted"][a]["value"] for a in ("arm1", "arm2")]
        assert all(0.0 <= v <= 1.0 for v in vals)
        assert p["advantage_decomposition_scale"] == "outcome"


def test_binary_default_switches_at_the_logistic_width_in_validate_and_the_estimator():
    """The boundary: 2 arms x (149 features + 1) = 300 logistic columns keeps the
    ridge-logistic model; one more covariate column (301) screens, in ``validate`` and in
    ``TreatmentSelector`` alike (the covariate counts as the model encodes it)."""
    from brainmatch.selection import TreatmentSelector
    from brainmatch.validation.regimes import draw_regime

    b = draw_regime(160, 149, "sparse", 2, outcome="binary", seed=1, effect=1.5)
    o = b.outcomes.assign(age=np.random.default_rng(0).normal(40, 10, 160))
    kw = dict(treatment_column="arm", outcome_column="y", n_repeats=1, n_permutations=0,
              learning_curve=False)  # fmt: skip
    narrow = validate(b.features, o, **kw)
    wide = validate(b.features, o, covariates=("age",), **kw)
    assert narrow.metrics["outcome_model"]["design_width"] == 300
    assert narrow.metrics["feature_selection"]["select"] == "none"
    assert narrow.metrics["outcome_model"]["link"] == "logit"
    assert wide.metrics["outcome_model"]["design_width"] == 301
    assert wide.metrics["feature_selection"]["select"] == "auto"
    assert wide.metrics["outcome_model"]["link"] == "identity-clipped"
    X = b.features.drop(columns="participant_id")
    est = TreatmentSelector().fit(X, o["arm"], o["y"])
    assert est.learner_.select_ == "none"
    est = TreatmentSelector().fit(X, o["arm"], o["y"], covariates=o[["age"]])
    assert est.learner_.select_ == "auto"


def test_screened_binary_final_model_refits_stay_linear_probability(tmp_path):
    """An explicit ``select="auto"`` on a narrow 0/1 design whose final model keeps every
    feature: its bootstrap refits are linear-probability ridges like it, not
    ridge-logistic models whose log-odds coefficients would be read with its
    identity link (a review found refits 5x the final model's coefficients)."""
    from brainmatch.selection.modelfile import load_model
    from brainmatch.validation.regimes import draw_regime

    b = draw_regime(300, 10, "dense", 2, outcome="binary", seed=0, effect=1.5)
    res = train(b.features, b.outcomes, treatment_column="arm", outcome_column="y",
                select="auto", out_dir=tmp_path / "m", n_repeats=1, n_permutations=0,
                learning_curve=False)  # fmt: skip
    assert res.metrics["feature_selection"]["final_k"] == 10  # every feature kept
    arrays, meta = load_model(tmp_path / "m" / "model.npz")
    assert meta["link"] == "identity-clipped"
    final = np.abs(arrays["coef"]).mean()
    boot = np.abs(arrays["boot_coef"]).mean()
    assert 0.5 < boot / final < 2.0
