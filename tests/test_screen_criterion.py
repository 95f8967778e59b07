"""Choosing all features or a screen by the treatment-effect error: exact leave-one-out
predictions under every arm, and the doubly robust criterion against ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from brainmatch.selection import screen
from brainmatch.selection.pipeline import ArmModels, interaction_factor
from brainmatch.selection.screen import ScreenedArmModels


def _ridge(X, y, pen, lam):
    """Brute-force ridge: ``min ||y - X b||^2 + lam ||b[pen]||^2``."""
    P = np.diag(pen.astype(float)) * lam
    return np.linalg.lstsq(X.T @ X + P, X.T @ y, rcond=None)[0]


@pytest.mark.parametrize(
    ("model", "n", "p", "k"),
    [
        ("interaction", 60, 8, 2),  # primal: k p < n
        ("interaction", 30, 40, 3),  # dual: k p >= n
        ("per-arm", 60, 8, 2),  # primal per arm
        ("per-arm", 36, 40, 2),  # dual per arm
    ],
)
def test_loo_predict_equals_refitting_without_each_row(model, n, p, k):
    rng = np.random.default_rng(4)
    t = rng.permutation(np.arange(n) % k)
    Z = rng.normal(size=(n, p))
    C = rng.normal(size=(n, 2))
    Y = np.column_stack([Z[:, 0] * (t == 0) + C[:, 0] + rng.normal(size=n), rng.normal(size=n)])
    fit = ArmModels(model).fit(Z, C, t, k, Y)
    got = fit.loo_predict(Y)
    assert got.shape == (n, k, 2)
    for col in range(2):
        for i in range(n):
            keep = np.arange(n) != i
            for a in range(k):
                if model == "interaction":
                    lam = fit.solvers_[0].lambdas[fit.solvers_[0].choice[col]]
                    X = np.column_stack(
                        [np.eye(k)[t[keep]], C[keep], interaction_factor(Z[keep], t[keep], k)]
                    )
                    pen = np.r_[np.zeros(k + 2), np.ones(k * p)]
                    b = _ridge(X, Y[keep, col], pen, lam)
                    x = np.r_[
                        np.eye(k)[a], C[i], interaction_factor(Z[i : i + 1], np.array([a]), k)[0]
                    ]
                else:
                    s = fit.solvers_[a]
                    lam = s.lambdas[s.choice[col]]
                    rows = np.flatnonzero(keep & (t == a))
                    X = np.column_stack([np.ones(rows.size), C[rows], Z[rows] / np.sqrt(p)])
                    pen = np.r_[np.zeros(3), np.ones(p)]
                    b = _ridge(X, Y[rows, col], pen, lam)
                    x = np.r_[1.0, C[i], Z[i] / np.sqrt(p)]
                assert got[i, a, col] == pytest.approx(x @ b, rel=1e-6, abs=1e-8)
    # the own arm's leave-one-out error is the one the penalty was chosen by
    own = got[np.arange(n), t]
    assert ((Y - own) ** 2).sum(axis=0) == pytest.approx(fit.loo_sse(), rel=1e-8)


def _trial(seed, n, p, prognostic, beta_sd, n_interacting):
    rng = np.random.default_rng(seed)
    t = rng.permutation(np.arange(n) % 2)
    Z = rng.normal(size=(n, p))
    beta = np.zeros(p)
    beta[:n_interacting] = rng.normal(size=n_interacting) * beta_sd
    tau = Z @ beta
    y = prognostic * Z[:, :3].sum(axis=1) + tau * (t - 0.5) + rng.normal(size=n)
    return Z, t, y, tau


def _effect_error(criterion, Z, t, y, tau, monkeypatch):
    monkeypatch.setattr(screen, "CRITERION", criterion)
    # the linear candidates' criterion (the hinge family's rule: tests/test_hinge.py)
    monkeypatch.setattr(screen, "HINGE_MAX_P", 0)
    C = np.zeros((t.size, 0))
    sm = ScreenedArmModels("interaction", "auto").fit(Z, C, t, 2, y[:, None])
    P = sm.predict(Z, C)[:, :, 0]
    assert sm.criterion_ == (criterion if screen.K_GRID else "none")
    return int(sm.k_[0]), float(np.mean((P[:, 1] - P[:, 0] - tau) ** 2))


def test_dense_effects_keep_all_features_under_the_effect_criterion(monkeypatch):
    """Strong prognostic features and many weak treatment-by-feature effects: the outcome's
    error prefers the 5 prognostic features, the doubly robust effect error all features,
    which halves the error of the predicted effects (ground truth known)."""
    got = {
        c: [_effect_error(c, *_trial(s, 300, 120, 3.0, 0.2, 120), monkeypatch) for s in range(4)]
        for c in ("mse", "dr")
    }
    assert all(k == 5 for k, _ in got["mse"])
    assert sum(k == 120 for k, _ in got["dr"]) >= 3
    assert np.mean([e for _, e in got["dr"]]) < 0.7 * np.mean([e for _, e in got["mse"]])


def test_sparse_effects_still_screened_under_the_effect_criterion(monkeypatch):
    """Three interacting features among 200: the effect criterion keeps a screen, and its
    effect error is far below the all-features ridge's."""
    for seed in range(3):
        Z, t, y, tau = _trial(seed, 300, 200, 1.0, 1.5, 3)
        k, err = _effect_error("dr", Z, t, y, tau, monkeypatch)
        monkeypatch.setattr(screen, "K_GRID", ())  # all features only
        _, err_all = _effect_error("mse", Z, t, y, tau, monkeypatch)
        monkeypatch.undo()
        assert k < 200 and err < 0.5 * err_all


@pytest.mark.parametrize("model", ["interaction", "per-arm"])
def test_outcome_error_from_own_arm_equals_all_arm_predictions(model, monkeypatch):
    """The outcome-error criterion's cheap path (own-arm inner-CV error, the full ridge's
    leave-one-out error) scores every candidate exactly as the all-arm predictions do."""
    monkeypatch.setattr(screen, "CRITERION", "mse")
    rng = np.random.default_rng(3)
    n, p, k = 160, 60, 3
    t = rng.permutation(np.arange(n) % k)
    Z = rng.normal(size=(n, p))
    C = rng.normal(size=(n, 2))
    Y = Z[:, :4] @ rng.normal(size=(4, 5)) + rng.normal(size=(n, 5))
    Y[:, 0] += 2.0 * Z[:, 7] * (t == 1)
    sm = ScreenedArmModels(model, "auto")
    sm.full_ = ArmModels(model).fit(Z, C, t, k, Y)
    small = [kk for kk in screen.k_candidates("auto", p) if kk < p]
    cheap = sm._inner_cv(Z, C, t, k, Y, small, own_arm=True)
    full = sm._inner_cv(Z, C, t, k, Y, small).astype(np.float64)
    own = full[:, np.arange(n), t, :]
    np.testing.assert_allclose(cheap, ((Y[None] - own) ** 2).sum(axis=1), rtol=1e-5)
    loo = sm.full_.loo_predict(Y)[np.arange(n), t]
    np.testing.assert_allclose(sm.full_.loo_sse(), ((Y - loo) ** 2).sum(axis=0), rtol=1e-8)
    chosen = sm._choose(Z, C, t, k, Y, screen.k_candidates("auto", p))
    sse = np.vstack([((Y - loo) ** 2).sum(axis=0), cheap])
    order = [p, *small]
    want = [screen.k_candidates("auto", p).index(order[i]) for i in np.argmin(sse, axis=0)]
    np.testing.assert_array_equal(chosen, want)


def test_a_screen_must_beat_the_all_features_ridge_by_one_standard_error(monkeypatch):
    """Outcomes of pure noise, 150 x 200: the lowest inner-CV criterion alone picks one of
    the five screens for about a quarter of them (a minimum over six noisy estimates); with
    the one-standard-error rule (the default) the all-features ridge, whose shrinkage suits
    noise, is kept for nearly all of them, while the sparse truth above is still screened
    (``test_sparse_effects_still_screened_under_the_effect_criterion``)."""
    rng = np.random.default_rng(0)
    n, p, m = 150, 200, 60
    t = rng.permutation(np.arange(n) % 2)
    Z = rng.normal(size=(n, p))
    C = np.zeros((n, 0))
    Y = rng.normal(size=(n, m))
    monkeypatch.setattr(screen, "HINGE_MAX_P", 0)
    monkeypatch.setattr(screen, "PRODUCT_MAX_P", 0)
    assert screen.SCREEN_SE == 1.0  # the default
    kept = {}
    for se in (0.0, 1.0):
        monkeypatch.setattr(screen, "SCREEN_SE", se)
        sm = ScreenedArmModels("interaction", "auto").fit(Z, C, t, 2, Y)
        kept[se] = float(np.mean(sm.k_ == p))
    assert kept[1.0] >= 0.9
    assert kept[0.0] <= kept[1.0] - 0.1
