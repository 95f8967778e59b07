"""Random- and fixed-effects meta-analysis and meta-regression, as R metafor's ``rma.uni``.

The estimators follow metafor's definitions step for step so that the numbers agree
with ``rma()`` to far better than 1e-6 (the tests check every estimator and test
against pinned metafor output):

- ``FE``: inverse-variance weights ``1/v_i``.
- ``DL``: DerSimonian-Laird, ``(Q - (k-p)) / tr(P)`` with ``P`` at ``tau^2 = 0``.
- ``HE``: Hedges, ``(RSS_OLS - tr(P_OLS V)) / (k-p)``.
- ``PM``: Paule-Mandel, the root of ``Q(tau^2) = k - p`` (solved to machine
  precision; metafor's default ``uniroot`` tolerance is 1.2e-4, so compare with
  ``control=list(tol=1e-9)`` as statsmodels' reference values do).
- ``ML`` / ``REML``: Fisher scoring from the HE estimate, step halving at the
  boundary, convergence when the step is below 1e-5, and metafor's check that the
  likelihood at ``tau^2 = 0`` is not larger: the same iterations metafor runs.
- ``test="knha"``: Knapp-Hartung: the covariance of the coefficients is scaled by
  ``RSS / (k - p)`` and tests/intervals use ``t(k - p)``.
- ``I^2`` and ``H^2``: ``100 tau^2 / (tau^2 + v~)`` and ``tau^2 / v~ + 1`` with the
  typical variance ``v~ = (k-p) / tr(P)`` (Q-based for ``FE``), as metafor reports.
- the ``tau^2`` confidence interval is the Q-profile interval (Viechtbauer 2007).
- the prediction interval is ``b ± crit * sqrt(SE^2 + tau^2)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

from brainmatch.errors import BrainmatchInputError

FloatArray = NDArray[np.float64]

METHODS = ("FE", "REML", "ML", "DL", "PM", "HE")
TESTS = ("z", "knha", "adhoc")

#: Fisher-scoring convergence threshold and iteration cap (metafor's defaults).
THRESHOLD = 1e-5
MAXITER = 100
#: Tolerance of metafor's log-likelihood check at tau^2 = 0 (``.Machine$double.eps^0.25``).
LL_TOL = np.finfo(float).eps ** 0.25
#: Plausibility limits of the input: beyond them weights and sums of squares lose all
#: precision in double arithmetic (e.g. SE = 1e-12 next to SE = 0.1, effects of 1e300).
MAX_ABS_EFFECT = 1e12
MAX_VARIANCE = 1e100
MAX_VARIANCE_RATIO = 1e12


@dataclass
class MetaResult:
    """Result of :func:`rma` (names as metafor's ``rma.uni`` object).

    Attributes
    ----------
    k, p : int
        Number of studies and of coefficients.
    method, test : str
        tau^2 estimator and inference (``"z"`` or ``"knha"``).
    beta, se, zval, pval, ci_lb, ci_ub : ndarray
        Coefficients (intercept first) with SEs, test statistics (z or t), p-values
        and confidence bounds.
    coef_names : list of str
        Names of the coefficients.
    vb : ndarray
        Covariance matrix of the coefficients.
    tau2, se_tau2 : float
        Between-study variance and its standard error.
    tau2_ci_lb, tau2_ci_ub : float or None
        Q-profile confidence interval of tau^2 (None for ``FE``).
    I2, H2 : float
        Heterogeneity statistics (percent and ratio).
    QE, QEp : float
        Test of residual heterogeneity and its p-value.
    QM, QMp : float
        Omnibus test of the moderators (of the intercept for intercept-only models).
    ddf : int or None
        Degrees of freedom of the t tests (``knha``).
    pi_lb, pi_ub : float or None
        Prediction interval (intercept-only models).
    yi, vi : ndarray
        Effects and sampling variances used.
    weights : ndarray
        Relative weights in percent.
    labels : list of str
        Study labels.
    level : float
        Confidence level.
    """

    k: int
    p: int
    method: str
    test: str
    beta: FloatArray
    se: FloatArray
    zval: FloatArray
    pval: FloatArray
    ci_lb: FloatArray
    ci_ub: FloatArray
    coef_names: list[str]
    vb: FloatArray
    tau2: float
    se_tau2: float | None
    tau2_ci_lb: float | None
    tau2_ci_ub: float | None
    I2: float
    H2: float
    QE: float
    QEp: float
    QM: float
    QMp: float
    ddf: int | None
    pi_lb: float | None
    pi_ub: float | None
    yi: FloatArray
    vi: FloatArray
    X: FloatArray
    weights: FloatArray
    labels: list[str]
    level: float = 0.95
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def estimate(self) -> float:
        """The pooled effect (the intercept)."""
        return float(self.beta[0])

    def summary(self) -> dict[str, Any]:
        """The metafor-named summary written to ``results.json``.

        Returns
        -------
        dict
            ``k``, ``estimate``, ``se``, ``ci_lb``, ``ci_ub``, ``pi_lb``, ``pi_ub``,
            ``tau2``, ``I2``, ``H2``, ``QE``, ``QEp`` and the rest of the fit.
        """
        out: dict[str, Any] = {
            "k": self.k,
            "method": self.method,
            "test": self.test,
            "level": self.level,
            "estimate": float(self.beta[0]),
            "se": float(self.se[0]),
            "zval": float(self.zval[0]),
            "pval": float(self.pval[0]),
            "ci_lb": float(self.ci_lb[0]),
            "ci_ub": float(self.ci_ub[0]),
            "pi_lb": self.pi_lb,
            "pi_ub": self.pi_ub,
            "tau2": self.tau2,
            "se_tau2": self.se_tau2,
            "tau2_ci_lb": self.tau2_ci_lb,
            "tau2_ci_ub": self.tau2_ci_ub,
            "I2": self.I2,
            "H2": self.H2,
            "QE": self.QE,
            "QEp": self.QEp,
            "QM": self.QM,
            "QMp": self.QMp,
            "ddf": self.ddf,
        }
        if self.p > 1:
            out["coefficients"] = [
                {
                    "name": n,
                    "estimate": float(b),
                    "se": float(s),
                    "zval": float(z),
                    "pval": float(pv),
                    "ci_lb": float(lo),
                    "ci_ub": float(hi),
                }
                for n, b, s, z, pv, lo, hi in zip(
                    self.coef_names,
                    self.beta,
                    self.se,
                    self.zval,
                    self.pval,
                    self.ci_lb,
                    self.ci_ub,
                    strict=True,
                )
            ]
        out.update(self.extras)
        return out


# --------------------------------------------------------------------------- helpers


def _validate(
    yi: ArrayLike, vi: ArrayLike, X: ArrayLike | None, min_k: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    try:
        y = np.asarray(yi, dtype=float).ravel()
        v = np.asarray(vi, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise BrainmatchInputError("effects and variances must be numeric") from exc
    if y.shape != v.shape:
        raise BrainmatchInputError(f"{y.size} effects but {v.size} variances")
    if not np.all(np.isfinite(y)):
        raise BrainmatchInputError("effects contain missing or infinite values")
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
        raise BrainmatchInputError(
            "sampling variances must be positive and finite; row(s) "
            + ", ".join(str(i + 1) for i in bad[:5])
            + " are not"
        )
    big = np.flatnonzero(np.abs(y) > MAX_ABS_EFFECT)
    if big.size:
        raise BrainmatchInputError(
            "effect(s) of implausible size in row(s) "
            + ", ".join(f"{i + 1} ({y[i]:.3g})" for i in big[:5])
            + f": no effect size exceeds {MAX_ABS_EFFECT:.0e} in magnitude; check the column"
        )
    vmax = float(v.max()) if v.size else 1.0
    if v.size and (vmax > MAX_VARIANCE or vmax / float(v.min()) > MAX_VARIANCE_RATIO):
        tiny = np.flatnonzero(v < vmax / MAX_VARIANCE_RATIO)
        rows = tiny if tiny.size else np.flatnonzero(v > MAX_VARIANCE)
        raise BrainmatchInputError(
            "implausible standard error(s) in row(s) "
            + ", ".join(f"{i + 1} (SE {math.sqrt(v[i]):.3g})" for i in rows[:5])
            + f": the variances span more than {MAX_VARIANCE_RATIO:.0e}-fold (or exceed "
            f"{MAX_VARIANCE:.0e}), so inverse-variance weights would be dominated by rounding; "
            "check the rows"
        )
    if y.size < min_k:
        raise BrainmatchInputError(f"need at least {min_k} studies, got k = {y.size}")
    Xm = np.ones((y.size, 1)) if X is None else np.asarray(X, dtype=float)
    if Xm.ndim == 1:
        Xm = Xm[:, None]
    if Xm.shape[0] != y.size:
        raise BrainmatchInputError("moderator matrix has the wrong number of rows")
    if not np.all(np.isfinite(Xm)):
        raise BrainmatchInputError("moderators contain missing or non-numeric values")
    if np.linalg.matrix_rank(Xm) < Xm.shape[1]:
        raise BrainmatchInputError("moderator matrix is not of full rank (redundant moderators)")
    if y.size <= Xm.shape[1]:
        raise BrainmatchInputError(
            f"k = {y.size} studies cannot estimate {Xm.shape[1]} coefficients"
        )
    return y, v, Xm


# Products with the k x p design go through einsum, not BLAS: for p of 1-10 columns and
# k up to 10^5 rows they are memory-bound, and a threaded BLAS under load is 100x slower.
def _dot(a: FloatArray, b: FloatArray) -> float:
    return float(np.einsum("i,i->", a, b))


def _xtwx(X: FloatArray, w: FloatArray) -> Any:
    return np.einsum("ki,k,kj->ij", X, w, X)


def _xtwy(X: FloatArray, w: FloatArray, y: FloatArray) -> Any:
    return np.einsum("ki,k,k->i", X, w, y)


def _xb(X: FloatArray, b: Any) -> Any:
    return np.einsum("ki,i->k", X, b)


def _pmat(X: FloatArray, w: FloatArray) -> FloatArray:
    """``P = W - W X (X'WX)^-1 X'W`` for diagonal weights ``w``."""
    WX = X * w[:, None]
    return np.diag(w) - WX @ np.linalg.solve(X.T @ WX, WX.T)


def _pstats(X: FloatArray, w: FloatArray, y: FloatArray) -> tuple[FloatArray, float, float]:
    """``P y``, ``tr(P)`` and ``tr(P P)`` without forming the k x k matrix ``P``.

    With ``A = (X'WX)^-1``: ``Py = w (y - X A X'W y)``,
    ``tr P = sum w - tr(A X'W^2 X)`` and
    ``tr PP = sum w^2 - 2 tr(A X'W^3 X) + tr((A X'W^2 X)^2)``.
    """
    if X.shape[1] == 1 and bool(np.all(X == 1.0)):  # intercept only: plain sums, O(k)
        sw, sw2, sw3 = float(w.sum()), _dot(w, w), float(np.sum(w**3))
        Py1 = w * (y - _dot(w, y) / sw)
        return Py1, sw - sw2 / sw, sw2 - 2 * sw3 / sw + (sw2 / sw) ** 2
    A = np.linalg.inv(_xtwx(X, w))
    b = A @ _xtwy(X, w, y)
    Py = w * (y - _xb(X, b))
    B2 = A @ _xtwx(X, w**2)
    B3 = A @ _xtwx(X, w**3)
    tr_p = float(w.sum() - np.trace(B2))
    tr_pp = float(np.sum(w**2) - 2 * np.trace(B3) + np.trace(B2 @ B2))
    return Py, tr_p, tr_pp


def qgen(tau2: float, y: FloatArray, v: FloatArray, X: FloatArray) -> float:
    """Generalised Q statistic: weighted RSS with weights ``1/(v + tau2)``.

    Computed as ``sum w (y - X b)^2`` with the weighted least-squares ``b`` (equal to
    ``y'Py`` without forming the k x k matrix ``P``).
    """
    w = 1.0 / (v + tau2)
    if X.shape[1] == 1 and bool(np.all(X == 1.0)):
        r1 = y - _dot(w, y) / float(w.sum())
        return _dot(w, r1 * r1)
    b = np.linalg.solve(_xtwx(X, w), _xtwy(X, w, y))
    r = y - _xb(X, b)
    return float(np.sum(w * r * r))


def _tau2_upper(func: Any, target: float, start: float) -> float:
    hi = max(start, 1.0)
    for _ in range(200):
        if func(hi) < target:
            return hi
        hi *= 2
    raise BrainmatchInputError("could not bracket tau^2 (effects too dispersed)")


def tau2_estimate(
    y: FloatArray, v: FloatArray, X: FloatArray, method: str
) -> tuple[float, dict[str, Any]]:
    """Estimate tau^2 with one of metafor's estimators.

    Parameters
    ----------
    y, v : ndarray
        Effects and sampling variances.
    X : ndarray
        Design matrix (intercept included).
    method : {"FE", "REML", "ML", "DL", "PM", "HE"}
        Estimator.

    Returns
    -------
    tau2 : float
        The estimate (0 for ``FE``).
    info : dict
        ``iterations`` for the iterative estimators, and ``converged``.
    """
    k, p = X.shape
    info: dict[str, Any] = {}
    if method == "FE":
        return 0.0, info
    if method == "DL":
        _, tr_p, _ = _pstats(X, 1.0 / v, y)
        return max(0.0, (qgen(0.0, y, v, X) - (k - p)) / tr_p), info
    # HE (also the starting value of ML / REML)
    ones = np.ones(k)
    XtX_inv = np.linalg.inv(_xtwx(X, ones))
    lev = np.einsum("ij,jk,ik->i", X, XtX_inv, X)  # OLS leverages
    r_ols = y - _xb(X, XtX_inv @ _xtwy(X, ones, y))
    he = (_dot(r_ols, r_ols) - float(np.sum((1 - lev) * v))) / (k - p)
    if method == "HE":
        return max(0.0, he), info
    if method == "PM":

        def q_minus(t: float) -> float:
            return qgen(t, y, v, X) - (k - p)

        if q_minus(0.0) < 0:
            return 0.0, info
        hi = _tau2_upper(lambda t: qgen(t, y, v, X), k - p, 100.0)
        root = optimize.brentq(
            q_minus, 0.0, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500
        )
        return float(root), info
    if method not in ("ML", "REML"):
        raise BrainmatchInputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    tau2, it = _fisher_scoring(y, v, X, method, max(0.0, he), stepadj=1.0, maxiter=MAXITER)
    if tau2 is None:
        # metafor's documented remedy: smaller steps and more iterations
        tau2, it = _fisher_scoring(y, v, X, method, max(0.0, he), stepadj=0.5, maxiter=1000)
        info["stepadj"] = 0.5
        if tau2 is None:
            raise BrainmatchInputError(
                f"{method} Fisher scoring did not converge (also with step adjustment 0.5 "
                "and 1000 iterations); try --method DL or PM"
            )
    info["iterations"] = it
    # metafor's check: is the likelihood at tau^2 = 0 larger?
    if tau2 > THRESHOLD and _loglik(0.0, y, v, X, method) - _loglik(tau2, y, v, X, method) > LL_TOL:
        info["stuck_at_local_maximum"] = True
        tau2 = 0.0
    return max(0.0, tau2), info


def _fisher_scoring(
    y: FloatArray,
    v: FloatArray,
    X: FloatArray,
    method: str,
    start: float,
    stepadj: float,
    maxiter: int,
) -> tuple[float | None, int]:
    """metafor's Fisher scoring for ML / REML tau^2; ``None`` when it does not converge."""
    tau2 = start
    change = THRESHOLD + 1
    it = 0
    while change > THRESHOLD:
        it += 1
        old = tau2
        w = 1.0 / (v + tau2)
        Py, tr_p, tr_pp = _pstats(X, w, y)
        if method == "ML":
            adj = (_dot(Py, Py) - float(w.sum())) / float(np.sum(w**2))
        else:
            adj = (_dot(Py, Py) - tr_p) / tr_pp
        adj *= stepadj
        while tau2 + adj < 0:
            adj /= 2
        tau2 = tau2 + adj
        change = abs(old - tau2)
        if it > maxiter:
            return None, it
    return tau2, it


def _loglik(tau2: float, y: FloatArray, v: FloatArray, X: FloatArray, method: str) -> float:
    k, p = X.shape
    w = 1.0 / (v + tau2)
    xtwx = _xtwx(X, w)
    b = np.linalg.solve(xtwx, _xtwy(X, w, y))
    rss = float(np.sum(w * (y - _xb(X, b)) ** 2))
    if method == "ML":
        return -0.5 * k * math.log(2 * math.pi) - 0.5 * float(np.sum(np.log(v + tau2))) - 0.5 * rss
    logdet = float(np.linalg.slogdet(xtwx)[1])
    return (
        -0.5 * (k - p) * math.log(2 * math.pi)
        - 0.5 * float(np.sum(np.log(v + tau2)))
        - 0.5 * logdet
        - 0.5 * rss
    )


def _se_tau2(method: str, tau2: float, y: FloatArray, v: FloatArray, X: FloatArray) -> float | None:
    k, p = X.shape
    t = max(tau2, 0.0)
    if method == "FE":
        return None
    if method == "DL":
        _, trP, trPP = _pstats(X, 1.0 / v, y)
        return math.sqrt((2 * (k - p) + 4 * t * trP + 2 * t**2 * trPP) / trP**2)
    if method == "HE":
        # with the OLS hat matrix H = X A X' (A = (X'X)^-1) and Po = I - H, V = diag(v):
        # tr(Po V Po V) = tr(V^2) - 2 tr(A X'V^2 X) + tr((A X'VX)^2) and
        # tr(Po V) = tr(V) - tr(A X'VX): O(k p^2), never the k x k matrix Po
        A = np.linalg.inv(_xtwx(X, np.ones(k)))
        AV = A @ _xtwx(X, v)
        AV2 = A @ _xtwx(X, v**2)
        tr_pvpv = float(np.sum(v**2) - 2 * np.trace(AV2) + np.trace(AV @ AV))
        tr_pv = float(np.sum(v) - np.trace(AV))
        return math.sqrt((2 * tr_pvpv + 4 * t * tr_pv + 2 * t**2 * (k - p)) / (k - p) ** 2)
    w = 1.0 / (v + tau2)
    if method == "ML":
        return math.sqrt(2 / float(np.sum(w**2)))
    if method == "REML":
        return math.sqrt(2 / _pstats(X, w, y)[2])
    # PM
    return math.sqrt(2 * k**2 / (k - p) / float(w.sum()) ** 2)


def tau2_qprofile(
    y: FloatArray, v: FloatArray, X: FloatArray, level: float = 0.95
) -> tuple[float, float]:
    """Q-profile confidence interval of tau^2 (Viechtbauer 2007), as metafor's ``confint``.

    Parameters
    ----------
    y, v, X : ndarray
        Effects, sampling variances and design matrix.
    level : float
        Confidence level.

    Returns
    -------
    lb, ub : float
        Bounds (truncated at 0).
    """
    k, p = X.shape
    df = k - p
    alpha = 1 - level
    crit_lo = stats.chi2.ppf(1 - alpha / 2, df)  # lower bound solves Q = upper quantile
    crit_hi = stats.chi2.ppf(alpha / 2, df)

    def q(t: float) -> float:
        return qgen(t, y, v, X)

    q0 = q(0.0)
    if q0 < crit_lo:
        lb = 0.0
    else:
        hi = _tau2_upper(q, crit_lo, 100.0)
        lb = optimize.brentq(
            lambda t: q(t) - crit_lo, 0.0, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500
        )
    if q0 < crit_hi:
        ub = 0.0
    else:
        hi = _tau2_upper(q, crit_hi, 100.0)
        ub = optimize.brentq(
            lambda t: q(t) - crit_hi, 0.0, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500
        )
    return float(lb), float(ub)


# --------------------------------------------------------------------------- main fit


def rma(
    yi: ArrayLike,
    vi: ArrayLike,
    *,
    mods: ArrayLike | None = None,
    mod_names: list[str] | None = None,
    method: str = "REML",
    test: str = "z",
    level: float = 0.95,
    labels: list[str] | None = None,
    tau2: float | None = None,
    tau2_ci: bool = True,
) -> MetaResult:
    """Fit a fixed-, random- or mixed-effects meta-analysis (metafor's ``rma.uni``).

    Parameters
    ----------
    yi, vi : array-like
        Observed effects and their sampling variances (all positive).
    mods : array-like, optional
        Moderator matrix without the intercept (``k x m``); an intercept is added.
    mod_names : list of str, optional
        Names of the moderator columns.
    method : {"REML", "FE", "ML", "DL", "PM", "HE"}
        tau^2 estimator (metafor's codes); ``FE`` is the fixed-effect model.
    test : {"z", "knha", "adhoc"}
        Normal-theory tests, the Knapp-Hartung adjustment with t tests, or
        Knapp-Hartung with the scale factor floored at 1 (metafor's ``"adhoc"``).
    level : float
        Confidence level of the intervals.
    labels : list of str, optional
        Study labels (for plots and leave-one-out).
    tau2 : float, optional
        Fix tau^2 at this value instead of estimating it.
    tau2_ci : bool
        Compute the Q-profile interval of tau^2 (skipped in leave-one-out refits).

    Returns
    -------
    MetaResult
        The fit, with metafor's names.
    """
    method = method.upper()
    if method not in METHODS:
        raise BrainmatchInputError(f"unknown --method {method!r}; use one of {', '.join(METHODS)}")
    test = test.lower()
    if test not in TESTS:
        raise BrainmatchInputError(f"unknown --test {test!r}; use z, knha or adhoc")
    if not 0 < level < 1:
        raise BrainmatchInputError(f"level must lie in (0, 1), got {level}")
    n = np.asarray(yi).size
    Xfull = np.ones((n, 1))
    names = ["intrcpt"]
    if mods is not None:
        M = np.asarray(mods, dtype=float)
        if M.ndim == 1:
            M = M[:, None]
        Xfull = np.column_stack([Xfull, M])
        names += list(mod_names) if mod_names else [f"mod{i + 1}" for i in range(M.shape[1])]
    min_k = 2 if method == "FE" else 3 if mods is None else 2
    y, v, X = _validate(yi, vi, Xfull, min_k=min_k)
    k, p = X.shape
    if method != "FE" and k - p < 1:
        raise BrainmatchInputError(f"random-effects {method} needs k > p, got k = {k}")
    # centre y for the tau^2 computations (P annihilates the intercept)
    ymc = y - y.mean()
    info: dict[str, Any] = {}
    if tau2 is not None:
        t2 = float(tau2)
    else:
        t2, info = tau2_estimate(ymc, v, X, method)
    w = 1.0 / (v + t2)
    vb: FloatArray = np.asarray(np.linalg.inv(_xtwx(X, w)), dtype=np.float64)
    beta = vb @ _xtwy(X, w, y)
    ddf: int | None = None
    if test in ("knha", "adhoc"):
        rss = float(np.sum(w * (y - _xb(X, beta)) ** 2))
        s2w = 0.0 if rss <= np.finfo(float).eps else rss / (k - p)
        if test == "adhoc":
            s2w = max(s2w, 1.0)
        vb = s2w * vb
        ddf = k - p
        if method == "FE":
            warnings.warn("the Knapp-Hartung adjustment is not meant for FE models", stacklevel=2)
    se = np.sqrt(np.diag(vb))
    zval = beta / se
    alpha = 1 - level
    if ddf is not None:
        crit = stats.t.ppf(1 - alpha / 2, ddf)
        pval = 2 * stats.t.sf(np.abs(zval), ddf)
    else:
        crit = stats.norm.ppf(1 - alpha / 2)
        pval = 2 * stats.norm.sf(np.abs(zval))
    btt = np.arange(1, p) if p > 1 else np.arange(1)
    QM = float(beta[btt] @ np.linalg.solve(vb[np.ix_(btt, btt)], beta[btt]))
    if ddf is not None:
        QM /= len(btt)
        QMp = float(stats.f.sf(QM, len(btt), ddf))
    else:
        QMp = float(stats.chi2.sf(QM, len(btt)))
    # heterogeneity
    QE = max(0.0, qgen(0.0, ymc, v, X))
    QEp = float(stats.chi2.sf(QE, k - p))
    vt = (k - p) / _pstats(X, 1.0 / v, ymc)[1]
    if method == "FE":
        I2 = max(0.0, 100 * (QE - (k - p)) / QE) if QE > 0 else 0.0
        H2 = QE / (k - p)
    else:
        I2 = 100 * t2 / (vt + t2)
        H2 = t2 / vt + 1
    tau_lb = tau_ub = None
    if method != "FE" and tau2_ci:
        tau_lb, tau_ub = tau2_qprofile(ymc, v, X, level)
    pi_lb = pi_ub = None
    if p == 1:
        sd_pred = math.sqrt(float(se[0]) ** 2 + t2)
        pi_lb = float(beta[0] - crit * sd_pred)
        pi_ub = float(beta[0] + crit * sd_pred)
    weights = 100 * w / w.sum()
    labs = list(labels) if labels is not None else list(map(str, range(1, k + 1)))
    return MetaResult(
        k=k,
        p=p,
        method=method,
        test=test,
        beta=beta,
        se=se,
        zval=zval,
        pval=pval,
        ci_lb=beta - crit * se,
        ci_ub=beta + crit * se,
        coef_names=names,
        vb=vb,
        tau2=t2,
        se_tau2=_se_tau2(method, t2, ymc, v, X),
        tau2_ci_lb=tau_lb,
        tau2_ci_ub=tau_ub,
        I2=float(I2),
        H2=float(H2),
        QE=QE,
        QEp=QEp,
        QM=QM,
        QMp=QMp,
        ddf=ddf,
        pi_lb=pi_lb,
        pi_ub=pi_ub,
        yi=y,
        vi=v,
        X=X,
        weights=weights,
        labels=labs,
        level=level,
        extras={"fit_info": info} if info else {},
    )


# --------------------------------------------------------------------------- extras


@dataclass
class SubgroupResult:
    """Per-subgroup pooled effects and the tests of subgroup differences.

    Every subgroup is reported, with the model used for it (``models``): the requested
    random-effects model (own tau^2) when it has three or more studies, a fixed-effect
    model when it has two (too few to estimate tau^2), and the study's own effect and
    standard error when it has one.

    Attributes
    ----------
    groups : dict of str to MetaResult
        Fit in each subgroup.
    models : dict of str to str
        The model used in each subgroup, in words.
    Q_between, df_between, p_between : float, int, float
        Test that the subgroup estimates are equal (fixed-effect Q of the subgroup
        estimates with their SEs, every subgroup included, as R meta's
        ``test.subgroup``).
    moderator_test : dict or None
        Mixed-effects meta-regression on subgroup dummies with a common tau^2
        (metafor ``rma(yi, vi, mods = ~ factor(group))``): ``QM``, ``df``, ``QMp``;
        None (with ``moderator_test_note``) when there are too few studies for it.
    """

    groups: dict[str, MetaResult]
    Q_between: float
    df_between: int
    p_between: float
    moderator_test: dict[str, Any] | None
    models: dict[str, str] = field(default_factory=dict)
    moderator_test_note: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "groups": {
                g: {**r.summary(), "model": self.models.get(g, r.method)}
                for g, r in self.groups.items()
            },
            "Q_between": self.Q_between,
            "df_between": self.df_between,
            "p_between": self.p_between,
            "moderator_test": self.moderator_test,
            "moderator_test_note": self.moderator_test_note,
        }


def single_study(y: float, v: float, *, level: float = 0.95, label: str = "1") -> MetaResult:
    """A "pooled" result of one study: its own effect, standard error and z interval."""
    se = math.sqrt(v)
    crit = float(stats.norm.ppf(0.5 + level / 2))
    z = y / se
    pv = float(2 * stats.norm.sf(abs(z)))
    return MetaResult(
        k=1,
        p=1,
        method="FE",
        test="z",
        beta=np.array([y]),
        se=np.array([se]),
        zval=np.array([z]),
        pval=np.array([pv]),
        ci_lb=np.array([y - crit * se]),
        ci_ub=np.array([y + crit * se]),
        coef_names=["intrcpt"],
        vb=np.array([[v]]),
        tau2=0.0,
        se_tau2=None,
        tau2_ci_lb=None,
        tau2_ci_ub=None,
        I2=float("nan"),
        H2=float("nan"),
        QE=0.0,
        QEp=float("nan"),
        QM=z * z,
        QMp=pv,
        ddf=None,
        pi_lb=None,
        pi_ub=None,
        yi=np.array([y]),
        vi=np.array([v]),
        X=np.ones((1, 1)),
        weights=np.array([100.0]),
        labels=[label],
        level=level,
        extras={"single_study": True},
    )


def subgroup_analysis(
    yi: ArrayLike,
    vi: ArrayLike,
    groups: ArrayLike,
    *,
    method: str = "REML",
    test: str = "z",
    level: float = 0.95,
    labels: list[str] | None = None,
) -> SubgroupResult:
    """Pool within each subgroup and test whether the subgroups differ.

    Parameters
    ----------
    yi, vi : array-like
        Effects and variances.
    groups : array-like
        Subgroup of each study.
    method, test, level : see :func:`rma`.
    labels : list of str, optional
        Study labels.

    Returns
    -------
    SubgroupResult
    """
    y = np.asarray(yi, dtype=float)
    v = np.asarray(vi, dtype=float)
    g = np.asarray(groups).astype(str)
    labs = np.asarray(labels if labels is not None else [str(i + 1) for i in range(y.size)])
    levels = sorted(set(g.tolist()), key=lambda s: (-int(np.sum(g == s)), s))
    if len(levels) < 2:
        raise BrainmatchInputError("subgroup column has fewer than two distinct values")
    method = method.upper()
    fits: dict[str, MetaResult] = {}
    models: dict[str, str] = {}
    for lev in levels:
        m = g == lev
        n = int(m.sum())
        if n == 1:
            i = int(np.flatnonzero(m)[0])
            fits[lev] = single_study(float(y[i]), float(v[i]), level=level, label=str(labs[i]))
            models[lev] = "single study (k = 1): its own effect and standard error"
            continue
        meth = method if n >= 3 or method == "FE" else "FE"
        fits[lev] = rma(y[m], v[m], method=meth, test=test, level=level, labels=labs[m].tolist())
        if method == "FE":
            models[lev] = "fixed effect"
        elif meth == "FE":
            models[lev] = "fixed effect (k = 2: too few studies to estimate tau²)"
        else:
            models[lev] = f"random effects ({method}), own tau²"
    est = np.array([r.estimate for r in fits.values()])
    var = np.array([float(r.se[0]) ** 2 for r in fits.values()])
    wq = 1 / var
    mu = float(np.sum(wq * est) / wq.sum())
    qb = float(np.sum(wq * (est - mu) ** 2))
    names = list(fits)
    dummies = np.column_stack([(g == lev).astype(float) for lev in names[1:]])
    moderator: dict[str, Any] | None = None
    note = None
    try:
        mr = rma(
            y,
            v,
            mods=dummies,
            mod_names=[f"group[{lev}]" for lev in names[1:]],
            method=method,
            test=test,
            level=level,
            tau2_ci=False,
        )
        moderator = {
            "QM": mr.QM,
            "df": len(fits) - 1,
            "QMp": mr.QMp,
            "tau2": mr.tau2,
            "reference": names[0],
        }
    except BrainmatchInputError as exc:
        note = f"not fitted: {exc.reason}"
    return SubgroupResult(
        groups=fits,
        Q_between=qb,
        df_between=len(fits) - 1,
        p_between=float(stats.chi2.sf(qb, len(fits) - 1)),
        moderator_test=moderator,
        models=models,
        moderator_test_note=note,
    )


def leave_one_out(res: MetaResult) -> list[dict[str, Any]]:
    """Refit leaving out each study in turn (metafor ``leave1out``).

    Parameters
    ----------
    res : MetaResult
        An intercept-only fit.

    Returns
    -------
    list of dict
        For each omitted study: ``study``, ``estimate``, ``se``, ``ci_lb``, ``ci_ub``,
        ``tau2``, ``I2``, ``QE``, ``QEp``.
    """
    if res.p != 1:
        raise BrainmatchInputError("leave-one-out is defined here for models without moderators")
    out = []
    for i in range(res.k):
        keep = np.arange(res.k) != i
        if keep.sum() < (2 if res.method == "FE" else 3):
            break
        r = rma(
            res.yi[keep],
            res.vi[keep],
            method=res.method,
            test=res.test,
            level=res.level,
            tau2_ci=False,
        )
        out.append(
            {
                "study": res.labels[i],
                "estimate": r.estimate,
                "se": float(r.se[0]),
                "ci_lb": float(r.ci_lb[0]),
                "ci_ub": float(r.ci_ub[0]),
                "tau2": r.tau2,
                "I2": r.I2,
                "QE": r.QE,
                "QEp": r.QEp,
            }
        )
    return out


def egger_test(res: MetaResult) -> dict[str, Any]:
    """Regression test for funnel-plot asymmetry (metafor ``regtest`` default).

    Fits the same model with the standard error as moderator and tests its slope.

    Parameters
    ----------
    res : MetaResult
        An intercept-only fit with at least 3 studies.

    Returns
    -------
    dict
        ``zval`` (t with ``knha``), ``pval``, ``ddf``, slope ``beta_sei`` and the
        ``limit_estimate`` (the intercept: the effect as SE -> 0).
    """
    if res.k < 3:
        raise BrainmatchInputError("Egger's test needs at least 3 studies")
    r = rma(
        res.yi,
        res.vi,
        mods=np.sqrt(res.vi),
        mod_names=["sei"],
        method=res.method,
        test=res.test,
        level=res.level,
        tau2_ci=False,
    )
    return {
        "zval": float(r.zval[1]),
        "pval": float(r.pval[1]),
        "ddf": r.ddf,
        "beta_sei": float(r.beta[1]),
        "limit_estimate": float(r.beta[0]),
        "limit_ci_lb": float(r.ci_lb[0]),
        "limit_ci_ub": float(r.ci_ub[0]),
    }


def trim_and_fill(res: MetaResult, side: str | None = None) -> dict[str, Any]:
    """Duval & Tweedie trim-and-fill with the L0 estimator (metafor ``trimfill``).

    Parameters
    ----------
    res : MetaResult
        An intercept-only fit.
    side : {"left", "right"}, optional
        Side on which studies are missing; by default chosen from the sign of the
        Egger-type slope (negative slope: missing on the right), as metafor does.

    Returns
    -------
    dict
        ``k0`` (number of filled studies) and its standard error ``se_k0``, ``side``, the
        filled ``yi_fill`` / ``vi_fill``,
        and the adjusted ``estimate``, ``se``, ``ci_lb``, ``ci_ub``, ``tau2``.
    """
    if res.p != 1:
        raise BrainmatchInputError("trim-and-fill needs a model without moderators")
    y0, v0 = res.yi.copy(), res.vi.copy()
    k = y0.size
    if side is None:
        r = rma(y0, v0, mods=np.sqrt(v0), method=res.method, tau2_ci=False)
        side = "right" if r.beta[1] < 0 else "left"
    if side not in ("left", "right"):
        raise BrainmatchInputError("side must be 'left' or 'right'")
    sign = -1.0 if side == "right" else 1.0
    y = sign * y0
    order = np.argsort(y, kind="stable")
    y, v = y[order], v0[order]
    k0, k0_prev, it = 0, -1, 0
    beta = 0.0
    k0_raw = 0.0
    while k0 != k0_prev:
        k0_prev = k0
        it += 1
        fit = rma(y[: k - k0], v[: k - k0], method=res.method, tau2_ci=False)
        beta = fit.estimate
        yc = y - beta
        ranks = stats.rankdata(np.abs(yc), method="ordinal")
        sr = float(np.sum(ranks[yc > 0]))
        k0_raw = (4 * sr - k * (k + 1)) / (2 * k - 1)
        k0 = max(0, round(k0_raw))
        k0 = min(k0, k - 1)
        if it > 100:
            break
    # standard error of L0 from the variance of the rank sum (Duval & Tweedie 2000b),
    # at the unrounded estimate, as metafor prints it
    g = k0_raw
    var_sr = (
        k * (k + 1) * (2 * k + 1)
        + 10 * g**3
        + 27 * g**2
        + 17 * g
        - 18 * k * g**2
        - 18 * k * g
        + 6 * k**2 * g
    ) / 24
    se_k0 = 4 * math.sqrt(max(var_sr, 0.0)) / (2 * k - 1)
    out: dict[str, Any] = {"k0": int(k0), "se_k0": se_k0, "side": side, "iterations": it}
    if k0 > 0:
        y_fill = 2 * beta - y[k - k0 :]
        v_fill = v[k - k0 :]
        y_all = np.concatenate([y, y_fill]) * sign
        v_all = np.concatenate([v, v_fill])
        adj = rma(y_all, v_all, method=res.method, test=res.test, level=res.level)
        out.update(yi_fill=(sign * y_fill).tolist(), vi_fill=v_fill.tolist())
    else:
        adj = res
        out.update(yi_fill=[], vi_fill=[])
    out.update(
        estimate=adj.estimate,
        se=float(adj.se[0]),
        ci_lb=float(adj.ci_lb[0]),
        ci_ub=float(adj.ci_ub[0]),
        tau2=adj.tau2,
    )
    return out
