"""An exact, vectorised random-intercept linear mixed model for thousands of outcomes.

The model of :class:`statsmodels.regression.mixed_linear_model.MixedLM` with a random
intercept per group, fitted to every column of ``Y`` at once::

    y_ij = x_ij' beta + u_i + e_ij,   u_i ~ N(0, tau2),   e_ij ~ N(0, sigma2)

With ``gamma = tau2 / sigma2`` the covariance of group ``i`` (``n_i`` rows) is
``sigma2 (I + gamma 1 1')`` and its inverse is ``(I - w_i 1 1') / sigma2`` with
``w_i = gamma / (1 + n_i gamma)``.  Every quantity of the (restricted) likelihood is then a
sum over *group sizes* of cross-products that do not depend on ``gamma``::

    X'V^-1 X = X'X - sum_k w_k M_k,     M_k = sum_{i: n_i = k} s_i s_i'
    X'V^-1 y = X'y - sum_k w_k C_k,     C_k = sum_{i: n_i = k} s_i t_i
    y'V^-1 y = y'y - sum_k w_k Q_k,     Q_k = sum_{i: n_i = k} t_i^2

(``s_i``, ``t_i``: the group's sums of ``x`` and ``y``), so one evaluation of the profiled
log-likelihood of every outcome costs one batch of ``p x p`` solves.  ``sigma2`` and
``beta`` are profiled out in closed form and ``gamma`` is found per outcome by a grid over
``log gamma`` (plus the boundary ``gamma = 0``) refined by golden-section search, to a
relative precision of about 1e-10 in ``gamma`` -- well inside statsmodels' own optimiser
tolerance.  The fixed effects, log-likelihood (same constants, REML or ML), scale and
group variance equal statsmodels' ``MixedLMResults`` (``fe_params``, ``llf``, ``scale``,
``cov_re``).  The fixed-effect covariance is lme4's ``vcov``, ``scale (X'V^-1 X)^-1``
(equal to lme4's standard errors pinned in statsmodels' tests for ``dietox``);
statsmodels' ``bse_fe`` instead inverts the observed information including the
fixed-effect/variance cross terms and differs from it by up to about 1 % on small
samples.  Tested in ``tests/test_change_mixed.py``; speed in ``benchmarks/bench_change.py``.

Rows with a missing outcome are dropped for that outcome only (statsmodels'
``missing="drop"`` applied column by column): outcomes sharing a pattern of missing rows
are fitted together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError

_LOG_GRID = np.linspace(np.log(1e-6), np.log(1e5), 45)
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
_LOG2PI = float(np.log(2.0 * np.pi))


@dataclass
class RandomInterceptFit:
    """Estimates of a random-intercept model for ``F`` outcomes (one column each).

    Attributes
    ----------
    params : ndarray of shape (F, p)
        Fixed effects (NaN for an outcome that could not be fitted).
    cov_params : ndarray of shape (F, p, p)
        Covariance of the fixed effects, ``scale (X'V^-1 X)^-1`` (lme4's ``vcov``).
    scale : ndarray of shape (F,)
        Residual variance ``sigma2``.
    cov_re : ndarray of shape (F,)
        Random-intercept variance ``tau2``.
    llf : ndarray of shape (F,)
        Log-likelihood (restricted when ``reml``), as statsmodels' ``llf``.
    n_obs, n_groups : ndarray of shape (F,)
        Rows and groups used per outcome.
    reml : bool
    """

    params: NDArray[np.float64]
    cov_params: NDArray[np.float64]
    scale: NDArray[np.float64]
    cov_re: NDArray[np.float64]
    llf: NDArray[np.float64]
    n_obs: NDArray[np.int64]
    n_groups: NDArray[np.int64]
    reml: bool

    @property
    def bse(self) -> NDArray[np.float64]:
        """Standard errors of the fixed effects, shape (F, p)."""
        return np.sqrt(np.einsum("fii->fi", self.cov_params))

    @property
    def gamma(self) -> NDArray[np.float64]:
        """Variance ratio ``tau2 / sigma2``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.cov_re / self.scale

    def contrast(self, c: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Estimate and standard error of ``c' beta`` for every outcome."""
        c = np.asarray(c, dtype=float)
        est = self.params @ c
        var = np.einsum("i,fij,j->f", c, self.cov_params, c)
        return est, np.sqrt(np.maximum(var, 0.0))

    def wald(self, L: NDArray[np.float64]) -> NDArray[np.float64]:
        """Wald chi-square of ``L beta = 0`` (rows of ``L`` are contrasts) per outcome."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        est = self.params @ L.T  # (F, q)
        cov = np.einsum("qi,fij,rj->fqr", L, self.cov_params, L)
        out = np.full(est.shape[0], np.nan)
        ok = np.all(np.isfinite(est), axis=1)
        if ok.any():
            sol = np.linalg.solve(cov[ok], est[ok][..., None])[..., 0]
            out[ok] = np.einsum("fq,fq->f", est[ok], sol)
        return out


def _forward(R: NDArray[np.float64], B: NDArray[np.float64]) -> NDArray[np.float64]:
    """Solve ``R X = B`` for a batch of lower-triangular ``R`` (F, p, p), ``B`` (F, p, m).

    A loop over the ``p`` rows of vector operations over the batch: for the small designs
    here (p ~ 10) this is several times faster than a batched LU solve.
    """
    X = np.empty(np.broadcast_shapes(B.shape, (R.shape[0], R.shape[1], B.shape[-1])))
    for i in range(R.shape[1]):
        acc = B[:, i, :]
        if i:
            acc = acc - np.einsum("fj,fjm->fm", R[:, i, :i], X[:, :i, :])
        X[:, i, :] = acc / R[:, i, i, None]
    return X


class _YPart:
    """The outcome-only sums of a complete-data problem (reused across designs)."""

    def __init__(self, Y: NDArray[np.float64], codes: NDArray[np.intp]) -> None:
        n_groups = int(codes.max()) + 1
        self.codes = codes
        self.sizes = np.bincount(codes, minlength=n_groups)
        self.k = np.unique(self.sizes)
        self.count = np.array([(self.sizes == k).sum() for k in self.k], dtype=float)
        self.Y = Y
        T = np.zeros((n_groups, Y.shape[1]))
        np.add.at(T, codes, Y)
        self.T = [T[self.sizes == k] for k in self.k]
        self.yty = np.einsum("nf,nf->f", Y, Y)
        self.Q = np.stack([np.einsum("gf,gf->f", t, t) for t in self.T])


class _Cross:
    """The gamma-free cross-products of one complete-data problem."""

    def __init__(self, X: NDArray[np.float64], ypart: _YPart) -> None:
        y = ypart
        S = np.zeros((y.sizes.size, X.shape[1]))
        np.add.at(S, y.codes, X)
        self.N, self.p = X.shape
        self.G = int(y.sizes.size)
        self.k, self.count = y.k, y.count
        self.XtX = X.T @ X
        self.XtY = X.T @ y.Y  # (p, F)
        self.yty = y.yty
        Ss = [S[y.sizes == k] for k in y.k]
        self.M = np.stack([s.T @ s for s in Ss])  # (K, p, p)
        self.C = np.stack([s.T @ t for s, t in zip(Ss, y.T, strict=True)])  # (K, p, F)
        self.Q = y.Q

    def weights(self, gamma: NDArray[np.float64]) -> NDArray[np.float64]:
        """``w_k = gamma / (1 + k gamma)`` for every outcome, shape (F, K)."""
        return gamma[:, None] / (1.0 + gamma[:, None] * self.k[None, :])

    def solve(self, gamma: NDArray[np.float64], reml: bool) -> tuple[NDArray[np.float64], ...]:
        """Profiled objective (-2 llf), beta, (X'V^-1X)^-1 and qf at ``gamma`` (one per outcome)."""
        w = self.weights(gamma)  # (F, K)
        A = self.XtX[None] - np.einsum("fk,kij->fij", w, self.M)
        b = self.XtY.T - np.einsum("fk,kif->fi", w, self.C)
        yvy = self.yty - np.einsum("fk,kf->f", w, self.Q)
        chol = np.linalg.cholesky(A)
        z = _forward(chol, b[..., None])[..., 0]
        qf = np.maximum(yvy - np.einsum("fi,fi->f", z, z), 1e-300)
        logdet_v = np.log1p(gamma[:, None] * self.k[None, :]) @ self.count
        if reml:
            dof = self.N - self.p
            logdet_a = 2.0 * np.log(np.einsum("fii->fi", chol)).sum(axis=1)
            obj = logdet_v + logdet_a + dof * (_LOG2PI + np.log(qf / dof) + 1.0)
        else:
            obj = logdet_v + self.N * (_LOG2PI + np.log(qf / self.N) + 1.0)
        return obj, A, b, qf

    def objective(self, gamma: NDArray[np.float64], reml: bool) -> NDArray[np.float64]:
        return self.solve(gamma, reml)[0]


def _optimise(cross: _Cross, n_out: int, reml: bool) -> NDArray[np.float64]:
    """Per outcome, the gamma >= 0 minimising -2 llf (grid, then golden section in log gamma)."""
    grid = np.exp(_LOG_GRID)
    values = np.stack(
        [cross.objective(np.full(n_out, g), reml) for g in grid], axis=1
    )  # (F, n_grid)
    zero = cross.objective(np.zeros(n_out), reml)
    best = np.argmin(values, axis=1)
    lo = _LOG_GRID[np.maximum(best - 1, 0)]
    hi = _LOG_GRID[np.minimum(best + 1, _LOG_GRID.size - 1)]
    # at the lower edge, search down towards the boundary gamma -> 0 as well
    lo = np.where(best == 0, np.log(1e-12), lo)
    a, b = lo.copy(), hi.copy()
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    fc = cross.objective(np.exp(c), reml)
    fd = cross.objective(np.exp(d), reml)
    for _ in range(70):
        left = fc < fd  # the minimum is in [a, d]: drop (d, b]; else drop [a, c)
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        new_c = np.where(left, b - _GOLDEN * (b - a), d)
        new_d = np.where(left, c, a + _GOLDEN * (b - a))
        probe = np.where(left, new_c, new_d)
        fp = cross.objective(np.exp(probe), reml)
        fc, fd = np.where(left, fp, fd), np.where(left, fc, fp)
        c, d = new_c, new_d
        if np.all(b - a < 1e-11):
            break
    theta = 0.5 * (a + b)
    gamma = np.exp(theta)
    f_opt = cross.objective(gamma, reml)
    at_zero = zero <= f_opt
    return np.where(at_zero, 0.0, gamma)


def _fit_complete(
    X: NDArray[np.float64], Y: NDArray[np.float64], codes: NDArray[np.intp], reml: bool
) -> tuple[Any, ...]:
    cross = _Cross(X, _YPart(Y, codes))
    gamma = _optimise(cross, Y.shape[1], reml)
    obj, A, b, qf = cross.solve(gamma, reml)
    dof = cross.N - cross.p if reml else cross.N
    scale = qf / dof
    a_inv = np.linalg.inv(A)
    params = np.einsum("fij,fj->fi", a_inv, b)
    cov = scale[:, None, None] * a_inv
    return params, cov, scale, gamma * scale, -0.5 * obj, cross.N, cross.G


def fit_random_intercept(
    X: NDArray[np.float64],
    Y: NDArray[np.float64],
    groups: NDArray[np.generic] | list[object],
    *,
    reml: bool = True,
) -> RandomInterceptFit:
    """Fit ``y = X beta + u_group + e`` (random intercept) to every column of ``Y``.

    Parameters
    ----------
    X : ndarray of shape (N, p)
        Fixed-effects design (include the intercept yourself, as in statsmodels).
    Y : ndarray of shape (N, F) or (N,)
        Outcomes; NaN marks a missing value (that row is dropped for that outcome only).
    groups : array-like of shape (N,)
        Group label of each row (e.g. the participant).
    reml : bool
        Restricted maximum likelihood (statsmodels' and lme4's default) or maximum
        likelihood.

    Returns
    -------
    RandomInterceptFit
        Outcomes whose rows leave the design rank-deficient, or that have no
        within-group replication, get NaN estimates.

    Raises
    ------
    BrainmatchInputError
        If shapes disagree or ``X`` has missing values.
    """
    X = np.asarray(X, dtype=float)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise BrainmatchInputError(
            f"X: expected (N, p) and Y (N, F) with the same N, got {X.shape} and {Y.shape}"
        )
    if not np.all(np.isfinite(X)):
        raise BrainmatchInputError("X: the design has missing or infinite values")
    groups = np.asarray(groups)
    if groups.shape != (X.shape[0],):
        raise BrainmatchInputError(f"groups: expected {X.shape[0]} labels, got {groups.shape}")
    _, codes_all = np.unique(groups, return_inverse=True)
    n_out, p = Y.shape[1], X.shape[1]
    params = np.full((n_out, p), np.nan)
    cov = np.full((n_out, p, p), np.nan)
    scale = np.full(n_out, np.nan)
    cov_re = np.full(n_out, np.nan)
    llf = np.full(n_out, np.nan)
    n_obs = np.zeros(n_out, dtype=np.int64)
    n_groups = np.zeros(n_out, dtype=np.int64)
    for rows, cols in missing_patterns(Y):
        Xk = X[rows]
        if rows.sum() <= p or np.linalg.matrix_rank(Xk) < p:
            continue
        _, codes = np.unique(codes_all[rows], return_inverse=True)
        if np.bincount(codes).max() < 2:
            continue  # no group has two rows: the random intercept is not identified
        out = _fit_complete(Xk, Y[np.ix_(rows, cols)], codes, reml)
        params[cols], cov[cols], scale[cols], cov_re[cols], llf[cols] = out[:5]
        n_obs[cols], n_groups[cols] = out[5], out[6]
    return RandomInterceptFit(
        params=params,
        cov_params=cov,
        scale=scale,
        cov_re=cov_re,
        llf=llf,
        n_obs=n_obs,
        n_groups=n_groups,
        reml=reml,
    )


def wald_at(
    X: NDArray[np.float64], ypart: _YPart, gamma: NDArray[np.float64], L: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Wald chi-square of ``L beta = 0`` by GLS at a given variance ratio per outcome.

    Used by the permutation test, where ``gamma`` is fixed at its estimate under the
    null model (which does not depend on the permuted labels).  With ``A = X'V^-1X = R R'``
    (Cholesky), ``z = R^-1 X'V^-1y`` and ``U = R^-1 L'``: ``L beta = U'z`` and
    ``L A^-1 L' = U'U``, so one batched triangular-system solve gives the statistic; the
    scale is REML's ``(y'V^-1y - z'z) / (N - p)``.  Complete data only.

    Returns
    -------
    ndarray of shape (F,)
    """
    cross = _Cross(X, ypart)
    w = cross.weights(gamma)
    A = cross.XtX[None] - np.einsum("fk,kij->fij", w, cross.M)
    b = cross.XtY.T - np.einsum("fk,kif->fi", w, cross.C)
    yvy = cross.yty - np.einsum("fk,kf->f", w, cross.Q)
    R = np.linalg.cholesky(A)
    q = L.shape[0]
    rhs = np.concatenate([b[..., None], np.broadcast_to(L.T, (b.shape[0], *L.T.shape))], axis=2)
    sol = _forward(R, rhs)
    z, U = sol[..., 0], sol[..., 1:]
    scale = (yvy - np.einsum("fi,fi->f", z, z)) / (cross.N - cross.p)
    Lb = np.einsum("fiq,fi->fq", U, z)
    if q == 1:
        M = np.einsum("fi,fi->f", U[..., 0], U[..., 0])
        return Lb[:, 0] ** 2 / M / scale
    M = np.einsum("fiq,fir->fqr", U, U)
    return np.einsum("fq,fq->f", Lb, np.linalg.solve(M, Lb[..., None])[..., 0]) / scale


def missing_patterns(Y: NDArray[np.float64]) -> list[tuple[NDArray[np.bool_], NDArray[np.intp]]]:
    """Groups of outcome columns sharing the same present rows: (rows, columns) pairs."""
    finite = np.isfinite(Y)
    packed = np.packbits(finite, axis=0)
    _, pattern = np.unique(packed.T, axis=0, return_inverse=True)
    out = []
    for k in np.unique(pattern):
        cols = np.flatnonzero(pattern.ravel() == k)
        out.append((finite[:, cols[0]], cols))
    return out
