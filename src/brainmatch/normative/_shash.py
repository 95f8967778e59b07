"""Sinh-arcsinh (SHASH) distributions of standardised residuals, for skewed measures.

Jones & Pewsey (2009, Biometrika 96:761): if ``s ~ N(0, 1)`` then
``x = sinh((asinh(s) + eps) / delta)`` is SHASH with skew ``eps`` and tail weight ``delta``;
with location ``xi`` and scale ``omega``, ``r = xi + omega * x``.  Inversely, the deviation
of a residual ``r`` is ``z = sinh(delta * asinh((r - xi) / omega) - eps)``, exactly N(0, 1)
when ``r`` follows the fitted SHASH: a quantile-matched z for skewed or heavy-tailed
measures (the role of PCNtoolkit's SHASH likelihoods and sinh-arcsinh warps).

brainmatch fits it in two stages: the heteroskedastic BLR gives each person's predictive
mean and SD, then the standardised residuals of the controls get one SHASH per feature,
fitted by maximum likelihood (all features at once: the log-likelihood is a sum over
features, minimised by L-BFGS with the analytic gradient), with a weak N(0, 0.5^2) prior on
``eps`` and ``log delta`` that keeps a symmetric, normal-tailed feature at the identity.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

PRIOR_SD = 0.5
_LOG2PI = float(np.log(2 * np.pi))


def _unpack(theta: NDArray[np.float64], f: int) -> tuple[NDArray[np.float64], ...]:
    xi, log_omega, eps, log_delta = theta.reshape(4, f)
    return xi, log_omega, eps, log_delta


def negloglik(
    theta: NDArray[np.float64], r: NDArray[np.float64], mask: NDArray[np.bool_]
) -> tuple[float, NDArray[np.float64]]:
    """Penalised negative log-likelihood of every feature's SHASH and its gradient."""
    f = r.shape[1]
    xi, log_omega, eps, log_delta = _unpack(theta, f)
    omega, delta = np.exp(log_omega), np.exp(log_delta)
    x = (r - xi) / omega
    a = np.arcsinh(x)
    u = delta * a - eps
    s, c = np.sinh(u), np.cosh(u)
    one_x2 = 1.0 + x**2
    ll = log_delta + np.log(c) - log_omega - 0.5 * _LOG2PI - 0.5 * np.log(one_x2) - 0.5 * s**2
    ll = np.where(mask, ll, 0.0)
    g_u = np.where(mask, np.tanh(u) - s * c, 0.0)
    d_x = g_u * delta / np.sqrt(one_x2) - np.where(mask, x / one_x2, 0.0)
    n = mask.sum(axis=0)
    grad = np.concatenate(
        [
            -(d_x * (-1.0 / omega)).sum(axis=0),
            -(-n + (d_x * -x).sum(axis=0)),
            -(-g_u).sum(axis=0) + eps / PRIOR_SD**2,
            -(n + (g_u * a * delta).sum(axis=0)) + log_delta / PRIOR_SD**2,
        ]
    )
    penalty = 0.5 * ((eps**2).sum() + (log_delta**2).sum()) / PRIOR_SD**2
    return float(-ll.sum() + penalty), grad


def fit_shash(r: NDArray[np.float64], max_iter: int = 500) -> NDArray[np.float64]:
    """Fit one SHASH per column of standardised residuals ``r`` (NaN = missing).

    Returns
    -------
    ndarray, shape (F, 4)
        ``xi, log omega, eps, log delta`` per feature.
    """
    mask = ~np.isnan(r)
    rr = np.where(mask, r, 0.0)
    f = r.shape[1]
    theta0 = np.zeros(4 * f)
    res = optimize.minimize(
        negloglik,
        theta0,
        args=(rr, mask),
        jac=True,
        method="L-BFGS-B",
        bounds=[(None, None)] * (2 * f) + [(-5, 5)] * f + [(np.log(0.2), np.log(5.0))] * f,
        options={"maxiter": max_iter},
    )
    return np.stack(_unpack(res.x, f), axis=1)


def shash_z(r: NDArray[np.float64], params: NDArray[np.float64]) -> NDArray[np.float64]:
    """Quantile-matched deviations ``sinh(delta asinh((r - xi) / omega) - eps)``."""
    xi, log_omega, eps, log_delta = params.T
    return np.asarray(np.sinh(np.exp(log_delta) * np.arcsinh((r - xi) / np.exp(log_omega)) - eps))


def shash_logpdf(r: NDArray[np.float64], params: NDArray[np.float64]) -> NDArray[np.float64]:
    """Log density of the standardised residuals under each feature's SHASH."""
    xi, log_omega, eps, log_delta = params.T
    x = (r - xi) / np.exp(log_omega)
    u = np.exp(log_delta) * np.arcsinh(x) - eps
    return np.asarray(
        log_delta
        + np.log(np.cosh(u))
        - log_omega
        - 0.5 * _LOG2PI
        - 0.5 * np.log1p(x**2)
        - 0.5 * np.sinh(u) ** 2
    )
