"""The vectorised random-intercept solver against lme4 (via statsmodels' pinned values) and
statsmodels' MixedLM itself."""

from __future__ import annotations

import warnings
from importlib.resources import files

import numpy as np
import pandas as pd
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM, MixedLMParams

from brainmatch.change.mixed import fit_random_intercept
from brainmatch.errors import BrainmatchInputError


@pytest.fixture(scope="module")
def dietox() -> pd.DataFrame:
    path = files("statsmodels") / "regression/tests/results/dietox.csv"
    if not path.is_file():
        pytest.skip("statsmodels' test data (regression/tests/results/dietox.csv) not installed")
    return pd.read_csv(str(path))


def test_dietox_reml_equals_lme4(dietox: pd.DataFrame) -> None:
    # lme4 values pinned in statsmodels/regression/tests/test_lme.py (test_dietox)
    X = np.column_stack([np.ones(len(dietox)), dietox["Time"]])
    fit = fit_random_intercept(X, dietox["Weight"].to_numpy(), dietox["Pig"].to_numpy())
    np.testing.assert_allclose(fit.params[0], [15.723523, 6.942505], rtol=1e-6)
    np.testing.assert_allclose(fit.bse[0], [0.78805374, 0.03338727], rtol=1e-6)
    np.testing.assert_allclose(fit.scale[0], 11.36692, rtol=1e-6)
    np.testing.assert_allclose(fit.cov_re[0], 40.39395, rtol=1e-6)
    np.testing.assert_allclose(fit.llf[0], -2404.775, rtol=1e-6)


def test_dietox_ml_equals_lme4(dietox: pd.DataFrame) -> None:
    X = np.column_stack([np.ones(len(dietox)), dietox["Time"]])
    fit = fit_random_intercept(X, dietox["Weight"].to_numpy(), dietox["Pig"].to_numpy(), reml=False)
    np.testing.assert_allclose(fit.params[0], [15.723517, 6.942506], rtol=1e-6)
    np.testing.assert_allclose(fit.bse[0], [0.7829397, 0.0333661], rtol=1e-5)
    np.testing.assert_allclose(fit.scale[0], 11.35251, rtol=1e-6)
    # and statsmodels' own ML fit
    res = MixedLM(dietox["Weight"], X, dietox["Pig"]).fit(reml=False)
    np.testing.assert_allclose(fit.llf[0], res.llf, rtol=1e-10)
    np.testing.assert_allclose(fit.cov_re[0], float(res.cov_re.iloc[0, 0]), rtol=1e-5)


def _problem(seed: int, n: int = 40, n_out: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n)  # 1-3 sessions per participant (unbalanced)
    groups = np.repeat(np.arange(n), sizes)
    t = np.concatenate([np.arange(k) for k in sizes]).astype(float)
    arm = np.repeat(rng.integers(0, 2, n), sizes).astype(float)
    site = np.repeat(rng.integers(0, 3, n), sizes)
    X = np.column_stack([np.ones(groups.size), t, arm, arm * t, site == 1, site == 2]).astype(float)
    u = rng.normal(0, 1, (n, n_out)) * rng.uniform(0, 1.5, n_out)  # some near-zero tau2
    Y = (
        X @ rng.normal(0, 1, (X.shape[1], n_out))
        + u[groups]
        + rng.normal(0, 1, (groups.size, n_out))
    )
    return X, Y, groups


@pytest.mark.parametrize("reml", [True, False])
def test_equals_statsmodels_per_feature(reml: bool) -> None:
    X, Y, groups = _problem(3)
    Y[[2, 5], 4] = np.nan  # a feature with missing values: rows dropped for it only
    fit = fit_random_intercept(X, Y, groups, reml=reml)
    for j in range(Y.shape[1]):
        ok = np.isfinite(Y[:, j])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = MixedLM(Y[ok, j], X[ok], groups[ok]).fit(reml=reml)
        # the same objective: statsmodels' own log-likelihood at our estimates is our llf
        model = MixedLM(Y[ok, j], X[ok], groups[ok])
        model.reml, model.cov_pen, model.fe_pen, model._cov_sing = reml, None, None, 0
        ours = MixedLMParams.from_components(
            fe_params=fit.params[j], cov_re=np.array([[max(fit.gamma[j], 1e-14)]])
        )
        np.testing.assert_allclose(model.loglike(ours, profile_fe=False), fit.llf[j], rtol=1e-11)
        # and our optimum is never worse than statsmodels' (its optimiser stops a little
        # short at times: up to ~4e-6 in llf here), so the estimates agree to its tolerance
        assert fit.llf[j] >= res.llf - 1e-9
        assert fit.llf[j] - res.llf < 1e-4
        np.testing.assert_allclose(fit.params[j], res.fe_params, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(fit.scale[j], res.scale, rtol=1e-3)
        np.testing.assert_allclose(fit.cov_re[j], float(res.cov_re[0, 0]), rtol=1e-2, atol=1e-3)
        # covariance: lme4's scale (X'V^-1X)^-1 at statsmodels' own estimates
        gam = float(res.cov_re[0, 0]) / res.scale
        Xo, go = X[ok], groups[ok]
        V = np.eye(ok.sum()) + gam * (go[:, None] == go[None, :])
        cov = res.scale * np.linalg.inv(Xo.T @ np.linalg.solve(V, Xo))
        np.testing.assert_allclose(fit.bse[j], np.sqrt(np.diag(cov)), rtol=1e-3)
    assert fit.n_obs[4] == Y.shape[0] - 2


def test_boundary_zero_variance() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 2)
    X = np.column_stack([np.ones(60), np.tile([0.0, 1.0], 30)])
    # negative within-group correlation: the REML optimum is tau2 = 0 (OLS)
    e = rng.normal(0, 1, 60)
    e[1::2] = -e[::2] + rng.normal(0, 0.3, 30)
    fit = fit_random_intercept(X, e, groups)
    assert fit.cov_re[0] == 0.0
    beta, rss = np.linalg.lstsq(X, e, rcond=None)[:2]
    np.testing.assert_allclose(fit.params[0], beta, rtol=1e-10)
    np.testing.assert_allclose(fit.scale[0], rss[0] / (60 - 2), rtol=1e-10)


def test_unidentified_outcome_is_nan() -> None:
    X, Y, groups = _problem(1, n_out=3)
    Y[:, 1] = np.nan
    fit = fit_random_intercept(X, Y, groups)
    assert np.isnan(fit.params[1]).all() and np.isfinite(fit.params[[0, 2]]).all()


def test_bad_shapes() -> None:
    X, Y, groups = _problem(1, n_out=2)
    with pytest.raises(BrainmatchInputError, match="same N"):
        fit_random_intercept(X[:-1], Y, groups)
    with pytest.raises(BrainmatchInputError, match="groups: expected"):
        fit_random_intercept(X, Y, groups[:-1])
    Xn = X.copy()
    Xn[0, 1] = np.nan
    with pytest.raises(BrainmatchInputError, match="X: the design has missing"):
        fit_random_intercept(Xn, Y, groups)
