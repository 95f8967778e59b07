"""Prediction metrics, calibration, effect sizes and bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import balanced_accuracy_score, roc_auc_score


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def calibration(observed: ArrayLike, predicted: ArrayLike) -> tuple[float | None, float | None]:
    """Calibration slope and intercept: OLS of observed on predicted (1 and 0 when perfect).

    Returns ``(None, None)`` when the predictions are constant.
    """
    y = np.asarray(observed, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if y.size < 3 or np.ptp(p) == 0:
        return None, None
    slope, intercept = np.polyfit(p, y, 1)
    return _finite(slope), _finite(intercept)


def _logistic_calibration(
    y: NDArray[np.float64],
    p: NDArray[np.float64],
) -> tuple[float | None, float | None]:
    """Logistic recalibration: logit P(y) = a + b logit(p) by Newton's method."""
    pc = np.clip(p, 1e-4, 1 - 1e-4)
    z = np.log(pc / (1 - pc))
    if np.ptp(z) == 0 or y.min() == y.max():
        return None, None
    A = np.column_stack([np.ones_like(z), z])
    beta = np.zeros(2)
    for _ in range(50):
        mu = 1 / (1 + np.exp(-(A @ beta)))
        w = mu * (1 - mu) + 1e-12
        step = np.linalg.lstsq(A.T @ (A * w[:, None]), A.T @ (y - mu), rcond=None)[0]
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return _finite(beta[1]), _finite(beta[0])


def regression_metrics(observed: ArrayLike, predicted: ArrayLike) -> dict[str, Any]:
    """R² (1 - SS_res / SS_tot, can be negative), MAE, RMSE, Pearson r and calibration.

    Parameters
    ----------
    observed, predicted : array-like of shape (n,)

    Returns
    -------
    dict
        ``n``, ``r2``, ``mae``, ``rmse``, ``r``, ``calibration_slope``,
        ``calibration_intercept`` (``None`` where undefined).
    """
    y = np.asarray(observed, dtype=float)
    p = np.asarray(predicted, dtype=float)
    ss_tot = float(((y - y.mean()) ** 2).sum()) if y.size else 0.0
    ss_res = float(((y - p) ** 2).sum())
    slope, intercept = calibration(y, p)
    r = float(np.corrcoef(y, p)[0, 1]) if y.size > 2 and np.ptp(p) > 0 and np.ptp(y) > 0 else None
    return {
        "n": int(y.size),
        "r2": _finite(1 - ss_res / ss_tot) if ss_tot > 0 else None,
        "mae": _finite(float(np.abs(y - p).mean())) if y.size else None,
        "rmse": _finite(float(np.sqrt(((y - p) ** 2).mean()))) if y.size else None,
        "r": r,
        "calibration_slope": slope,
        "calibration_intercept": intercept,
    }


def binary_metrics(observed: ArrayLike, probability: ArrayLike) -> dict[str, Any]:
    """AUC, balanced accuracy (threshold 0.5), Brier score and logistic calibration.

    Returns
    -------
    dict
        ``n``, ``auc``, ``balanced_accuracy``, ``brier``, ``calibration_slope``,
        ``calibration_intercept``, ``prevalence``.
    """
    y = np.asarray(observed, dtype=float)
    p = np.clip(np.asarray(probability, dtype=float), 0.0, 1.0)
    both = y.size > 0 and 0 < y.mean() < 1
    slope, intercept = _logistic_calibration(y, p) if both else (None, None)
    return {
        "n": int(y.size),
        "auc": _finite(roc_auc_score(y, p)) if both else None,
        "balanced_accuracy": _finite(balanced_accuracy_score(y, p >= 0.5)) if both else None,
        "brier": _finite(float(((p - y) ** 2).mean())) if y.size else None,
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "prevalence": _finite(float(y.mean())) if y.size else None,
    }


def cohens_d(a: ArrayLike, b: ArrayLike) -> float:
    """Cohen's d of ``mean(a) - mean(b)`` over the pooled SD (ddof 1); NaN if undefined."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return float("nan")
    pooled = ((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2)
    if pooled <= 0:
        return float("nan")
    return float((x.mean() - y.mean()) / np.sqrt(pooled))


def bootstrap_ci(
    statistic: Callable[[NDArray[np.intp]], float],
    n: int,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[float | None]:
    """Percentile bootstrap interval of ``statistic(indices)`` over resampled patients.

    Parameters
    ----------
    statistic : callable
        Takes an index array (a resample of ``range(n)``) and returns a float (NaN allowed).
    n : int
    n_boot : int
    seed : int
    level : float

    Returns
    -------
    list
        ``[low, high]`` (``None`` when fewer than half of the resamples gave a value).
    """
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)])
    values = values[np.isfinite(values)]
    if values.size < n_boot / 2:
        return [None, None]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]
