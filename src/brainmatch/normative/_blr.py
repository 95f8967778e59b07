"""Bayesian linear regression with heteroskedastic noise, for thousands of features at once.

For every feature ``y`` (standardised), with design rows ``phi_i`` (mean) and ``psi_i``
(log noise variance)::

    y_i = phi_i' w + e_i,   e_i ~ N(0, exp(psi_i' eta)),   w ~ N(0, alpha^-1 I)

``alpha`` is set by type-II maximum likelihood (MacKay's evidence fixed point,
Bishop 2006 s. 3.5.2, with the noise precision of each observation known given
``eta``); ``eta`` by penalised maximum likelihood given the posterior of ``w``
(expectation-maximisation: the expected squared residual ``r_i^2 + phi_i' S phi_i``
replaces ``r_i^2``), a few Fisher-scoring steps per outer iteration.  The Fisher
information of a Gaussian log-variance model is ``0.5 Psi' Psi`` whatever ``eta``, so
the variance step shares one factorised matrix across all features.  Without
heteroskedastic noise ``Psi`` is the intercept only, which is the classical BLR of
PCNtoolkit (Marquand et al. 2016) with one noise precision per feature.

All features share the design, so each step is a few matrix products over a chunk of
features: ``Phi' W Phi`` for every feature is one product of the ``(n, p^2)`` matrix of
pairwise column products with the ``(n, F)`` weights.  The predictive distribution of a
new row is ``N(phi' m, exp(psi' eta) + phi' S phi)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Ridge on the log-variance coefficients (a N(0, 1/LAMBDA) prior on the standardised scale).
VAR_RIDGE = 1.0
_LOG_VAR_CLIP = 30.0


@dataclass
class BLRFit:
    """Fitted parameters on the standardised scale (F features).

    Attributes
    ----------
    coef : ndarray, shape (F, p)
        Posterior mean of the mean weights.
    coef_cov : ndarray, shape (F, p, p)
        Posterior covariance of the mean weights.
    noise_coef : ndarray, shape (F, q)
        Log noise-variance weights.
    alpha : ndarray, shape (F,)
        Prior precision of the mean weights (type-II ML).
    n_iter : int
        Outer iterations used.
    """

    coef: NDArray[np.float64]
    coef_cov: NDArray[np.float64]
    noise_coef: NDArray[np.float64]
    alpha: NDArray[np.float64]
    n_iter: int


def _pairwise(design: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise outer products, flattened: shape (n, p*p)."""
    n, p = design.shape
    return (design[:, :, None] * design[:, None, :]).reshape(n, p * p)


def fit_blr(
    phi: NDArray[np.float64],
    psi: NDArray[np.float64],
    y: NDArray[np.float64],
    mask: NDArray[np.bool_] | None = None,
    *,
    max_iter: int = 30,
    tol: float = 1e-3,
    alpha_iter: int = 3,
    var_ridge: float = VAR_RIDGE,
    var_steps: int = 3,
) -> BLRFit:
    """Fit one heteroskedastic BLR per column of ``y`` (all columns share the designs).

    Parameters
    ----------
    phi : ndarray, shape (n, p)
        Mean design.
    psi : ndarray, shape (n, q)
        Log-variance design (the intercept alone for homoskedastic noise).
    y : ndarray, shape (n, F)
        Standardised responses (values where ``mask`` is False are ignored).
    mask : ndarray of bool, shape (n, F), optional
        Observed entries (default: all).  A missing value has zero weight in both the mean
        and the variance likelihood.
    max_iter, tol : int, float
        Outer iterations and the convergence tolerance on the log-variance weights.
    alpha_iter : int
        Evidence fixed-point updates of ``alpha`` per outer iteration.
    var_ridge : float
        Prior precision of the log-variance weights other than the intercept (0: plain
        type-II maximum likelihood, as PCNtoolkit's unpenalised BLR).
    var_steps : int
        Fisher-scoring steps of the log-variance weights per outer iteration.
    """
    n, p = phi.shape
    q = psi.shape[1]
    f = y.shape[1]
    pp = _pairwise(phi)
    eye = np.eye(p)
    obs = None if mask is None else mask.astype(float)
    if obs is not None:
        y = np.where(obs > 0, y, 0.0)
        n_obs = np.maximum(obs.sum(axis=0), 1.0)
    else:
        n_obs = np.full(f, float(n))
    eta = np.zeros((q, f))
    eta[0] = np.log(np.maximum((y**2).sum(axis=0) / n_obs, 1e-12))
    alpha = np.ones(f)
    # Fisher information of the log-variance model (per feature: missing rows drop out),
    # with the ridge on every coefficient but the overall noise level
    ridge = var_ridge * np.ones(q)
    ridge[0] = 0.0
    if obs is None:
        hess = np.broadcast_to(0.5 * psi.T @ psi + np.diag(ridge), (f, q, q))
    else:
        hess = (0.5 * (obs.T @ _pairwise(psi))).reshape(f, q, q) + np.diag(ridge)
    hess = hess + 1e-9 * np.eye(q)
    ridge_col = ridge[:, None]

    def precision(e: NDArray[np.float64], o: NDArray[np.float64] | None) -> NDArray[np.float64]:
        """exp(-log variance) of every observation, zero where missing (in-place ops)."""
        out = psi @ e
        np.clip(out, -_LOG_VAR_CLIP, _LOG_VAR_CLIP, out=out)
        np.negative(out, out=out)
        np.exp(out, out=out)
        if o is not None:
            out *= o
        return out

    it = 0
    coef = np.zeros((f, p))
    cov = np.zeros((f, p, p))
    # features still iterating (each feature's fit is independent: converged ones stop)
    active = np.arange(f)
    for it in range(1, max_iter + 1):
        ya = y[:, active]
        oa = None if obs is None else obs[:, active]
        ea = eta[:, active]
        al = alpha[active]
        w = precision(ea, oa)
        a0 = (w.T @ pp).reshape(active.size, p, p)  # Phi' W Phi of every feature
        b = (w * ya).T @ phi  # (F, p)
        for _ in range(alpha_iter):
            c = np.linalg.inv(a0 + al[:, None, None] * eye)
            m = np.einsum("fij,fj->fi", c, b)
            gamma = p - al * np.trace(c, axis1=1, axis2=2)
            al = np.clip(gamma / np.maximum((m**2).sum(axis=1), 1e-12), 1e-6, 1e6)
        c = np.linalg.inv(a0 + al[:, None, None] * eye)
        c = 0.5 * (c + c.transpose(0, 2, 1))
        m = np.einsum("fij,fj->fi", c, b)
        coef[active], cov[active], alpha[active] = m, c, al
        expected_sq = phi @ m.T
        np.subtract(ya, expected_sq, out=expected_sq)
        np.square(expected_sq, out=expected_sq)
        expected_sq += pp @ c.reshape(active.size, p * p).T
        if oa is not None:
            expected_sq *= oa
        before = ea.copy()
        if q == 1:
            # homoskedastic: the ML noise variance given the posterior is exact in one step
            ea[0] = np.log(np.maximum(expected_sq.sum(axis=0) / n_obs[active], 1e-12))
        else:
            # M-step for the log-variance weights: a few Fisher-scoring steps (cheap: no
            # p^2 products) with the expected squared residuals held fixed
            ha = hess[active]
            for _ in range(var_steps):
                resid = expected_sq * precision(ea, oa)
                resid -= 1.0 if oa is None else oa
                grad = 0.5 * (resid.T @ psi).T - ridge_col * ea
                step = np.linalg.solve(ha, grad.T[:, :, None])[:, :, 0].T
                ea = ea + step
                if np.max(np.abs(step)) < tol:
                    break
        eta[:, active] = ea
        moving = np.max(np.abs(ea - before), axis=0) >= tol
        if it > 1:
            active = active[moving]
        if active.size == 0:
            break
    return BLRFit(coef=coef, coef_cov=cov, noise_coef=eta.T.copy(), alpha=alpha, n_iter=it)


def predict_blr(
    fit_coef: NDArray[np.float64],
    fit_cov: NDArray[np.float64],
    noise_coef: NDArray[np.float64],
    phi: NDArray[np.float64],
    psi: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Predictive mean, noise variance and parameter variance (standardised scale).

    Returns
    -------
    mean, noise_var, param_var : ndarray, shape (n, F)
    """
    f, p = fit_coef.shape
    mean = phi @ fit_coef.T
    noise_var = np.exp(np.clip(psi @ noise_coef.T, -_LOG_VAR_CLIP, _LOG_VAR_CLIP))
    param_var = np.maximum(_pairwise(phi) @ fit_cov.reshape(f, p * p).T, 0.0)
    return mean, noise_var, param_var
