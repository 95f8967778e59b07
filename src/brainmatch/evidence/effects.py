"""Effect sizes and their sampling variances, as R metafor's ``escalc`` computes them.

Every function takes array-likes (one value per study) and returns ``(yi, vi)`` as
float arrays.  The formulas are metafor's defaults (Viechtbauer 2010), so the values
equal ``escalc(measure=...)`` output; the tests check them against pinned metafor
numbers shipped with PyMARE and statsmodels.

- ``smd``: Hedges' g, the standardised mean difference with the exact small-sample
  correction ``c(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2))``, ``m = n1 + n2 - 2``,
  and the large-sample variance ``1/n1 + 1/n2 + g^2 / (2 (n1 + n2))`` (metafor
  ``measure="SMD"``, ``vtype="LS"``).  Change scores are the same computation on
  mean changes and SDs of change (``smd_change``).
- ``mean_difference``: raw mean difference (``measure="MD"``).
- ``log_odds_ratio`` / ``log_risk_ratio``: from 2x2 counts, adding 1/2 to every
  cell of a study that has a zero cell (metafor's ``add=1/2, to="only0"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

from brainmatch.errors import BrainmatchInputError

FloatArray = NDArray[np.float64]


def _arr(x: ArrayLike, name: str) -> FloatArray:
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise BrainmatchInputError(f"{name} holds non-numeric values") from exc
    return np.atleast_1d(a)


def small_sample_correction(df: ArrayLike) -> FloatArray:
    """Hedges' exact correction factor ``c(m)`` for ``m`` degrees of freedom.

    Parameters
    ----------
    df : array-like
        Degrees of freedom ``m`` (``n1 + n2 - 2`` for two groups).

    Returns
    -------
    ndarray
        ``Gamma(m/2) / (sqrt(m/2) * Gamma((m-1)/2))``, which is below 1 and tends to 1.
    """
    m = _arr(df, "degrees of freedom")
    return np.exp(gammaln(m / 2) - 0.5 * np.log(m / 2) - gammaln((m - 1) / 2))


def _check_positive(values: dict[str, FloatArray], strict: bool = True) -> None:
    for name, a in values.items():
        bad = ~np.isfinite(a) | ((a <= 0) if strict else (a < 0))
        if np.any(bad):
            rows = ", ".join(str(i + 1) for i in np.flatnonzero(bad)[:5])
            need = "positive" if strict else "non-negative"
            raise BrainmatchInputError(f"{name} must be {need} and finite (row(s) {rows})")


def smd(
    m1: ArrayLike, sd1: ArrayLike, n1: ArrayLike, m2: ArrayLike, sd2: ArrayLike, n2: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Hedges' g of group 1 minus group 2 and its sampling variance.

    Parameters
    ----------
    m1, sd1, n1 : array-like
        Mean, standard deviation and size of group 1 (e.g. the treated arm).
    m2, sd2, n2 : array-like
        The same for group 2 (e.g. the control arm).

    Returns
    -------
    yi, vi : ndarray
        Bias-corrected standardised mean difference and its variance (metafor
        ``escalc(measure="SMD")``).
    """
    a = {
        k: _arr(v, k)
        for k, v in {"m1": m1, "sd1": sd1, "n1": n1, "m2": m2, "sd2": sd2, "n2": n2}.items()
    }
    _check_positive({"sd1": a["sd1"], "sd2": a["sd2"], "n1": a["n1"], "n2": a["n2"]})
    n1_, n2_ = a["n1"], a["n2"]
    if np.any(n1_ + n2_ <= 3):
        raise BrainmatchInputError("n1 + n2 must exceed 3 for Hedges' g")
    df = n1_ + n2_ - 2
    sdp = np.sqrt(((n1_ - 1) * a["sd1"] ** 2 + (n2_ - 1) * a["sd2"] ** 2) / df)
    yi = small_sample_correction(df) * (a["m1"] - a["m2"]) / sdp
    vi = 1 / n1_ + 1 / n2_ + yi**2 / (2 * (n1_ + n2_))
    return yi, vi


def smd_change(
    change1: ArrayLike,
    sd_change1: ArrayLike,
    n1: ArrayLike,
    change2: ArrayLike,
    sd_change2: ArrayLike,
    n2: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """Hedges' g from change scores (mean change and SD of change in each group).

    Parameters
    ----------
    change1, sd_change1, n1 : array-like
        Mean change from baseline, its SD, and the group size in group 1.
    change2, sd_change2, n2 : array-like
        The same for group 2.

    Returns
    -------
    yi, vi : ndarray
        As :func:`smd` applied to the change scores (the standardiser is the pooled
        SD of change, as metafor's ``SMD`` on change data).
    """
    return smd(change1, sd_change1, n1, change2, sd_change2, n2)


def mean_difference(
    m1: ArrayLike, sd1: ArrayLike, n1: ArrayLike, m2: ArrayLike, sd2: ArrayLike, n2: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Raw mean difference and its (heteroscedastic) variance, metafor ``measure="MD"``.

    Parameters
    ----------
    m1, sd1, n1, m2, sd2, n2 : array-like
        Means, SDs and sizes of the two groups.

    Returns
    -------
    yi, vi : ndarray
        ``m1 - m2`` and ``sd1^2/n1 + sd2^2/n2``.
    """
    a = {
        k: _arr(v, k)
        for k, v in {"m1": m1, "sd1": sd1, "n1": n1, "m2": m2, "sd2": sd2, "n2": n2}.items()
    }
    _check_positive({"sd1": a["sd1"], "sd2": a["sd2"], "n1": a["n1"], "n2": a["n2"]})
    return a["m1"] - a["m2"], a["sd1"] ** 2 / a["n1"] + a["sd2"] ** 2 / a["n2"]


def _two_by_two(
    events1: ArrayLike, n1: ArrayLike, events2: ArrayLike, n2: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    ai, n1_, ci, n2_ = (
        _arr(events1, "events1"),
        _arr(n1, "n1"),
        _arr(events2, "events2"),
        _arr(n2, "n2"),
    )
    _check_positive({"n1": n1_, "n2": n2_})
    _check_positive({"events1": ai, "events2": ci}, strict=False)
    if np.any(ai > n1_) or np.any(ci > n2_):
        raise BrainmatchInputError("event counts cannot exceed group sizes")
    bi, di = n1_ - ai, n2_ - ci
    zero = (ai == 0) | (bi == 0) | (ci == 0) | (di == 0)
    add = np.where(zero, 0.5, 0.0)
    return ai + add, bi + add, ci + add, di + add


def log_odds_ratio(
    events1: ArrayLike, n1: ArrayLike, events2: ArrayLike, n2: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Log odds ratio of group 1 versus group 2 from event counts (metafor ``"OR"``).

    Parameters
    ----------
    events1, n1 : array-like
        Events and total size in group 1.
    events2, n2 : array-like
        Events and total size in group 2.

    Returns
    -------
    yi, vi : ndarray
        ``log(a d / (b c))`` and ``1/a + 1/b + 1/c + 1/d`` (1/2 added to every cell of a
        study with a zero cell).
    """
    a, b, c, d = _two_by_two(events1, n1, events2, n2)
    return np.log(a * d / (b * c)), 1 / a + 1 / b + 1 / c + 1 / d


def log_risk_ratio(
    events1: ArrayLike, n1: ArrayLike, events2: ArrayLike, n2: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Log risk ratio of group 1 versus group 2 from event counts (metafor ``"RR"``).

    Parameters
    ----------
    events1, n1 : array-like
        Events and total size in group 1.
    events2, n2 : array-like
        Events and total size in group 2.

    Returns
    -------
    yi, vi : ndarray
        ``log((a/n1) / (c/n2))`` and ``1/a - 1/n1 + 1/c - 1/n2`` (with the 1/2 addition
        for studies with a zero cell).
    """
    a, b, c, d = _two_by_two(events1, n1, events2, n2)
    n1a, n2a = a + b, c + d
    return np.log((a / n1a) / (c / n2a)), 1 / a - 1 / n1a + 1 / c - 1 / n2a


def aggregate_dependent(yi: ArrayLike, vi: ArrayLike, rho: float = 0.5) -> tuple[float, float]:
    """Combine dependent effects of one study (e.g. several instruments) into one.

    Assumes a compound-symmetric correlation ``rho`` between the sampling errors
    (as metafor's ``aggregate.escalc(struct="CS")``) and returns the GLS estimate.

    Parameters
    ----------
    yi, vi : array-like
        Effects and sampling variances measured on the same participants.
    rho : float
        Assumed correlation between the sampling errors, in [0, 1].

    Returns
    -------
    y, v : float
        The combined effect and its variance.
    """
    y = _arr(yi, "effects")
    v = _arr(vi, "variances")
    if not 0 <= rho <= 1:
        raise BrainmatchInputError(f"rho must lie in [0, 1], got {rho}")
    if y.size == 1:
        return float(y[0]), float(v[0])
    s = np.sqrt(v)
    cov = rho * np.outer(s, s)
    np.fill_diagonal(cov, v)
    w = np.linalg.solve(cov, np.ones_like(y))
    var = 1.0 / float(w.sum())
    return float(var * w @ y), var


MEASURES: dict[str, Any] = {
    "SMD": smd,
    "SMDC": smd_change,
    "MD": mean_difference,
    "OR": log_odds_ratio,
    "RR": log_risk_ratio,
}
