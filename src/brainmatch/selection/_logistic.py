"""Ridge-penalised logistic interaction model, batched over target columns.

The binary-outcome counterpart of :class:`brainmatch.selection.pipeline.ArmModels`
(``"interaction"``): the same design (arm intercepts, baseline score and covariates
unpenalised; treatment-by-feature interactions, the factor
:func:`~brainmatch.selection.pipeline.interaction_factor`, penalised), with a logit link.
Every target column ``y`` (observed and permuted) minimises its own::

    sum_i [log(1 + exp(eta_i)) - y_i eta_i] + lam / 2 * ||beta_penalised||^2

by Newton's method (IRLS) on all columns at once: the ``(columns, r, r)`` Hessians are
stacked and solved by one batched ``np.linalg.solve`` per iteration (``r`` = design
width), with step halving on columns whose objective would rise.  The penalty is chosen
per column from a grid by approximate leave-one-out (ALO, Rad & Maleki 2018, JRSS-B
82:965): ``eta_loo_i = eta_i + (mu_i - y_i) / w_i * h_i / (1 - h_i)`` with ``h`` the
diagonal of the IRLS hat matrix ``W^1/2 X (X' W X + lam P)^-1 X' W^1/2``, scoring the
binomial deviance of ``sigmoid(eta_loo)``.  The grid runs from the largest penalty down,
each fit warm-started from the previous one.  Targets outside ``[0, 1]`` (Freedman-Lane
permuted targets, fitted value plus a permuted residual) are clipped to ``[0, 1]`` and
fitted as quasi-binomial responses.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Penalties relative to ``0.25 * trace(F'F) / n`` (the logistic Hessian's scale at p = 1/2).
LOGIT_GRID = np.logspace(-2, 4, 9)
#: Widest design fitted by the batched Newton solver (wider designs fall back to ridge).
MAX_WIDTH = 300
#: A tiny penalty on "unpenalised" columns keeps arm intercepts finite under separation.
EPS_PENALTY = 1e-8
#: Floats per column chunk of the ``(columns, n, r)`` work arrays.
_WORK = 2.0e7


def _loss(eta: NDArray[np.float64], Y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-column negative log-likelihood ``(m,)`` of ``eta`` ``(n, m)``."""
    return np.asarray((np.logaddexp(0.0, eta) - Y * eta).sum(axis=0))


def _gram(X: NDArray[np.float64], w: NDArray[np.float64]) -> NDArray[np.float64]:
    """Stacked weighted Gram matrices ``X' diag(w[:, j]) X`` ``(m, r, r)``."""
    XW = X.T[None, :, :] * w.T[:, None, :]  # (m, r, n)
    return np.asarray(XW @ X)


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)))


def newton_logistic(
    X: NDArray[np.float64],
    Y: NDArray[np.float64],
    lam: NDArray[np.float64] | float,
    pen: NDArray[np.float64],
    beta0: NDArray[np.float64] | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> NDArray[np.float64]:
    """Penalised logistic coefficients ``(m, r)`` of every column of ``Y`` ``(n, m)``.

    Minimises ``sum(log(1 + e^eta) - y eta) + lam_j / 2 * sum(pen * beta^2)`` per column
    ``j`` (``lam`` scalar or ``(m,)``; ``pen`` ``(r,)`` of 0/1 weights; zero weights get
    :data:`EPS_PENALTY`).
    """
    r = X.shape[1]
    m = Y.shape[1]
    lam_v = np.broadcast_to(np.asarray(lam, dtype=float), (m,))
    P = lam_v[:, None] * np.where(pen > 0, pen, 0.0)[None, :] + EPS_PENALTY  # (m, r)
    beta = np.zeros((m, r)) if beta0 is None else beta0.copy()
    active = np.ones(m, dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        B = beta[idx]
        Yi = Y[:, idx]
        eta = X @ B.T
        mu = _sigmoid(eta)
        w = np.maximum(mu * (1.0 - mu), 1e-12)
        grad = (mu - Yi).T @ X + P[idx] * B  # (a, r)
        H = _gram(X, w)
        H[:, np.arange(r), np.arange(r)] += P[idx]
        step = np.linalg.solve(H, grad[:, :, None])[:, :, 0]
        obj = _loss(eta, Yi) + 0.5 * (P[idx] * B * B).sum(axis=1)
        t = np.ones(idx.size)
        for _half in range(30):
            Bn = B - t[:, None] * step
            new = _loss(X @ Bn.T, Yi) + 0.5 * (P[idx] * Bn * Bn).sum(axis=1)
            worse = new > obj + 1e-12 * np.abs(obj)
            if not worse.any():
                break
            t[worse] *= 0.5
        beta[idx] = B - t[:, None] * step
        done = np.abs(t[:, None] * step).max(axis=1) < tol * (1.0 + np.abs(B).max(axis=1))
        active[idx[done]] = False
    return beta


def alo_deviance(
    X: NDArray[np.float64],
    Y: NDArray[np.float64],
    beta: NDArray[np.float64],
    lam: float,
    pen: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Approximate leave-one-out deviance ``(m,)`` of fits ``beta`` ``(m, r)``."""
    r = X.shape[1]
    eta = X @ beta.T
    mu = _sigmoid(eta)
    w = np.maximum(mu * (1.0 - mu), 1e-12)
    H = _gram(X, w)
    H[:, np.arange(r), np.arange(r)] += lam * pen + EPS_PENALTY
    q = ((X[None, :, :] @ np.linalg.inv(H)) * X[None, :, :]).sum(axis=2).T  # x_i' H^-1 x_i
    h = np.clip(w * q, 0.0, 1.0 - 1e-8)
    eta_loo = eta + (mu - Y) / w * h / (1.0 - h)
    return 2.0 * _loss(eta_loo, Y)


class LogisticInteractionLOO:
    """Batched ridge-logistic fits with a per-column ALO-chosen penalty.

    Parameters
    ----------
    X : ndarray of shape (n, r)
        Design: unpenalised columns first, then penalised ones.
    n_fixed : int
        Number of leading unpenalised columns.
    grid : ndarray, optional
        Relative penalty grid (default :data:`LOGIT_GRID`).
    """

    def __init__(
        self, X: NDArray[np.float64], n_fixed: int, grid: NDArray[np.float64] | None = None
    ) -> None:
        self.X = X
        n, r = X.shape
        self.pen = np.r_[np.zeros(n_fixed), np.ones(r - n_fixed)]
        F = X[:, n_fixed:]
        scale = 0.25 * float((F * F).sum()) / n if F.size else 1.0
        self.lambdas = (LOGIT_GRID if grid is None else grid) * (scale if scale > 0 else 1.0)

    def fit(self, Y: NDArray[np.float64]) -> LogisticInteractionLOO:
        """Choose each column's penalty by ALO deviance and store its coefficients."""
        Y = np.clip(Y.reshape(Y.shape[0], -1), 0.0, 1.0)
        n, r = self.X.shape
        m = Y.shape[1]
        self.coef = np.zeros((m, r))
        self.choice = np.zeros(m, dtype=int)
        self.alo = np.full(m, np.inf)
        chunk = max(1, int(_WORK // max(1, n * r)))
        for lo in range(0, m, chunk):
            hi = min(m, lo + chunk)
            Yc = Y[:, lo:hi]
            beta: NDArray[np.float64] | None = None
            for g in range(self.lambdas.size - 1, -1, -1):
                lam = float(self.lambdas[g])
                beta = newton_logistic(self.X, Yc, lam, self.pen, beta0=beta)
                dev = alo_deviance(self.X, Yc, beta, lam, self.pen)
                better = dev < self.alo[lo:hi]
                self.alo[lo:hi][better] = dev[better]
                self.choice[lo:hi][better] = g
                self.coef[lo:hi][better] = beta[better]
        return self
