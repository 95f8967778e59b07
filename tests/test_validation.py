"""Validation primitives against references: scikit-learn, brute-force LOO, hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import KFold, permutation_test_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection._ridge import KernelRidgeLOO
from brainmatch.validation import (
    binary_metrics,
    cohens_d,
    dr_scores,
    outer_splits,
    policy_gain,
    regression_metrics,
    ridge_permutation_test_score,
    selection_benefit,
)


def test_permutation_scores_identical_to_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 80))
    y = X[:, 0] + rng.normal(size=40)
    cv = KFold(5, shuffle=True, random_state=3)
    ref = permutation_test_score(
        make_pipeline(StandardScaler(), Ridge(alpha=2.0)),
        X,
        y,
        cv=cv,
        n_permutations=25,
        random_state=7,
    )
    got = ridge_permutation_test_score(X, y, alpha=2.0, cv=cv, n_permutations=25, random_state=7)
    assert abs(got[0] - ref[0]) <= 1e-9
    assert np.abs(got[1] - ref[1]).max() <= 1e-9
    assert got[2] == ref[2]


def test_kernel_ridge_loo_is_exact():
    rng = np.random.default_rng(1)
    n, p = 30, 12
    Z = rng.normal(size=(n, p))
    D = np.column_stack([np.ones(n), rng.normal(size=n)])
    y = Z[:, 0] + D[:, 1] + rng.normal(size=n)
    K = Z @ Z.T / p
    grid = np.array([0.1, 1.0, 10.0])
    solver = KernelRidgeLOO(K, D, grid=grid).fit(y[:, None])
    lam = solver.lambdas[solver.choice[0]]
    # brute force: refit without each patient with the same absolute penalty.  With
    # K = Z Z' / p, the kernel ridge is a ridge on Z with penalty lam * p (D unpenalised).
    pen = np.diag([0.0] * D.shape[1] + [lam * p] * p)
    A = np.column_stack([D, Z])
    errors = []
    for i in range(n):
        keep = np.arange(n) != i
        coef = np.linalg.solve(A[keep].T @ A[keep] + pen, A[keep].T @ y[keep])
        errors.append(y[i] - A[i] @ coef)
    assert abs(np.mean(np.square(errors)) - solver.loo_mse[0]) < 1e-8
    # and predictions equal the primal ridge fitted on all patients
    coef = np.linalg.solve(A.T @ A + pen, A.T @ y)
    np.testing.assert_allclose(solver.predict(K, D)[:, 0], A @ coef, atol=1e-8)


def test_metrics_against_references():
    rng = np.random.default_rng(2)
    y = rng.normal(size=50)
    p = y + rng.normal(size=50)
    m = regression_metrics(y, p)
    assert m["r2"] == pytest.approx(r2_score(y, p))
    assert m["mae"] == pytest.approx(np.abs(y - p).mean())
    yb = (rng.random(80) < 0.4).astype(float)
    pb = np.clip(0.4 + 0.3 * (yb - 0.4) + rng.normal(0, 0.2, 80), 0, 1)
    b = binary_metrics(yb, pb)
    assert b["auc"] == pytest.approx(roc_auc_score(yb, pb))
    assert b["brier"] == pytest.approx(np.mean((pb - yb) ** 2))
    # Cohen's d of two samples with known means and SDs
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert cohens_d(a + 1.0, a) == pytest.approx(1.0 / np.std(a, ddof=1))


def test_selection_benefit_and_policy_gain_by_hand():
    # 4 patients, lower is better; recommendation matched for patients 0 and 3
    y = np.array([5.0, 10.0, 12.0, 7.0])
    received = np.array(["A", "B", "A", "B"])
    recommended = np.array(["A", "A", "B", "B"])
    diff, _ = selection_benefit(y, received, recommended, sign=-1.0)
    assert diff == pytest.approx((10 + 12) / 2 - (5 + 7) / 2)
    pred = np.array([[6.0, 9.0], [8.0, 9.0], [10.0, 9.0], [9.0, 8.0]])
    e = np.full((4, 2), 0.5)
    gamma = dr_scores(y, received, pred, ["A", "B"], e)
    assert gamma[0, 0] == pytest.approx(6 + 2 * (5 - 6))
    assert gamma[0, 1] == pytest.approx(9.0)
    policy = np.array([0, 0, 1, 1])
    value = np.mean([gamma[0, 0], gamma[1, 0], gamma[2, 1], gamma[3, 1]])
    best = gamma.mean(axis=0).min()
    assert policy_gain(gamma, policy, sign=-1.0) == pytest.approx(best - value)


def test_outer_splits():
    t = np.repeat(["A", "B"], 20)
    sites = np.tile(["s1", "s2", "s3", "s4"], 10)
    splits = outer_splits(t, n_splits=5, n_repeats=3, sites=sites)
    assert len(splits) == 15
    for _, train, test in splits:
        assert set(t[train]) == {"A", "B"} and not set(train) & set(test)
    lso = outer_splits(t, scheme="leave-site-out", sites=sites)
    assert [len(np.unique(sites[test])) for _, _, test in lso] == [1, 1, 1, 1]
    with pytest.raises(BrainmatchInputError, match="needs site_column"):
        outer_splits(t, scheme="leave-site-out")
    with pytest.raises(BrainmatchInputError, match="expected one of"):
        outer_splits(t, scheme="loo")


def test_cross_validated_policy_gain_by_hand():
    """Two splits written out: comparator from the training rows, DR scores, Nadeau-Bengio."""
    from scipy import stats

    from brainmatch.validation.policy import cross_validated_policy_gain

    y = np.array([5.0, 10.0, 12.0, 7.0, 6.0, 9.0])
    t = np.array([0, 1, 0, 1, 0, 1])
    pred = np.array(
        [[[6.0, 9.0], [8.0, 9.0], [10.0, 9.0], [9.0, 8.0], [7.0, 7.5], [9.0, 8.0]]]
    )  # one repeat
    splits = [
        (0, np.array([0, 1, 2]), np.array([3, 4, 5])),
        (0, np.array([3, 4, 5]), np.array([0, 1, 2])),
    ]
    e = np.full((6, 2), 0.5)
    got = cross_validated_policy_gain(y, t, pred, splits, e, sign=-1.0)
    u = -pred[0]
    gamma = u + np.eye(2)[t] / 0.5 * (-y[:, None] - u)
    d = np.zeros(6)
    means = []
    for _, train, test in splits:
        comp = int(np.argmax([(-y[train][t[train] == a]).mean() for a in (0, 1)]))
        pol = np.argmax(u[test], axis=1)
        d[test] = gamma[test, pol] - gamma[test, comp]
        means.append(d[test].mean())
    assert got["estimate"] == pytest.approx(d.mean())
    se = np.sqrt((1 / 2 + 3 / 3) * np.var(means, ddof=1))
    q = stats.t.ppf(0.975, 1)
    assert got["ci"] == pytest.approx([d.mean() - q * se, d.mean() + q * se])


def test_kernel_ridge_primal_factor_equals_the_kernel_path():
    """K = F F' with rank r < n: the thin-SVD (primal) path gives the same penalty choice,
    dual coefficients, fixed effects and LOO errors as the n x n eigendecomposition."""
    rng = np.random.default_rng(3)
    n, r = 90, 20
    F = rng.normal(size=(n, r))
    D = np.column_stack([np.ones(n), rng.normal(size=n)])
    Y = (F[:, :2] @ [1.0, -0.5])[:, None] + rng.normal(size=(n, 4)) * np.array([1, 2, 3, 0.1])
    a = KernelRidgeLOO(F @ F.T, D).fit(Y)
    b = KernelRidgeLOO(None, D, factor=F).fit(Y)
    np.testing.assert_array_equal(a.choice, b.choice)
    np.testing.assert_allclose(a.loo_mse, b.loo_mse, rtol=1e-9)
    np.testing.assert_allclose(F.T @ a.c, F.T @ b.c, atol=1e-9)
    np.testing.assert_allclose(a.alpha, b.alpha, atol=1e-9)
