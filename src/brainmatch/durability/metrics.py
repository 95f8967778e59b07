"""Survival metrics for out-of-fold validation: concordance, time-dependent AUC, Brier
score, calibration at a horizon and restricted mean survival time (RMST).

Inverse-probability-of-censoring weights use the Kaplan-Meier estimate of the censoring
distribution ``G`` (Uno et al. 2011 for the concordance, Uno et al. 2007 / Hung & Chiang
2010 for the cumulative/dynamic AUC, Graf et al. 1999 for the Brier score).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


def kaplan_meier(time: Array, event: Array, weights: Array | None = None) -> tuple[Array, Array]:
    """(Weighted) Kaplan-Meier estimate: event times and survival just after each.

    Returns
    -------
    times : ndarray
        Distinct event times, increasing.
    surv : ndarray
        ``S(t)`` at those times (right-continuous).
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    w = np.ones_like(time) if weights is None else np.asarray(weights, dtype=float)
    order = np.argsort(time, kind="stable")
    t, d, w = time[order], event[order], w[order]
    uniq, first = np.unique(t, return_index=True)
    at_risk = np.cumsum(w[::-1])[::-1][first]
    deaths = np.add.reduceat(w * d, first)
    keep = deaths > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(at_risk > 0, 1.0 - deaths / at_risk, 1.0)
    surv = np.cumprod(factor)
    return uniq[keep].astype(float), surv[keep].astype(float)


def step_at(times: Array, values: Array, at: Array, *, left: bool = False) -> Array:
    """Evaluate a right-continuous step function (1 before the first step) at ``at``.

    ``left=True`` gives the left limit ``f(t-)``.
    """
    at = np.asarray(at, dtype=float)
    if len(times) == 0:
        return np.ones_like(at)
    idx = np.searchsorted(times, at, side="left" if left else "right") - 1
    out = np.where(idx >= 0, values[np.maximum(idx, 0)], 1.0)
    return out


def censoring_survival(time: Array, event: Array) -> tuple[Array, Array]:
    """Kaplan-Meier estimate of the censoring distribution ``G``."""
    return kaplan_meier(time, 1.0 - np.asarray(event, dtype=float))


def harrell_c(time: Array, event: Array, risk: Array) -> float:
    """Harrell's concordance of a risk score (higher = earlier event), as lifelines'
    ``concordance_index(time, -risk, event)``."""
    from brainmatch.durability.selector import _lifelines

    concordance_index = _lifelines().utils.concordance_index
    return float(concordance_index(time, -np.asarray(risk, dtype=float), event))


def uno_c(time: Array, event: Array, risk: Array, tau: float | None = None) -> float:
    """Uno's IPCW concordance truncated at ``tau`` (Uno et al. 2011, Stat Med)."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    risk = np.asarray(risk, dtype=float)
    tau = float(np.max(time)) if tau is None else float(tau)
    gt, gs = censoring_survival(time, event)
    g = step_at(gt, gs, time, left=True)
    use = (event == 1) & (time < tau) & (g > 0)
    num = den = 0.0
    for i in np.flatnonzero(use):
        later = time > time[i]
        w = 1.0 / g[i] ** 2
        den += w * later.sum()
        num += w * ((risk[i] > risk[later]).sum() + 0.5 * (risk[i] == risk[later]).sum())
    return num / den if den > 0 else float("nan")


def time_auc(time: Array, event: Array, risk: Array, t: float) -> float:
    """Cumulative/dynamic AUC at ``t`` with IPCW.

    Cases: an event by ``t``; controls: event-free after ``t``.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    risk = np.asarray(risk, dtype=float)
    gt, gs = censoring_survival(time, event)
    cases = (time <= t) & (event == 1)
    controls = time > t
    if not cases.any() or not controls.any():
        return float("nan")
    w = 1.0 / np.maximum(step_at(gt, gs, time[cases], left=True), 1e-12)
    rc = risk[controls]
    conc = np.array([(r > rc).mean() + 0.5 * (r == rc).mean() for r in risk[cases]])
    return float(np.sum(w * conc) / np.sum(w))


def brier(time: Array, event: Array, surv_at_t: Array, t: float) -> float:
    """IPCW Brier score of predicted survival probabilities at ``t`` (Graf et al. 1999)."""
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    s = np.asarray(surv_at_t, dtype=float)
    gt, gs = censoring_survival(time, event)
    died = (time <= t) & (event == 1)
    alive = time > t
    g_i = np.maximum(step_at(gt, gs, time, left=True), 1e-12)
    g_t = max(float(step_at(gt, gs, np.array([t]))[0]), 1e-12)
    score = np.where(died, s**2 / g_i, 0.0) + np.where(alive, (1 - s) ** 2 / g_t, 0.0)
    return float(np.mean(score))


def rmst(time: Array, event: Array, tau: float, weights: Array | None = None) -> float:
    """Restricted mean survival time to ``tau``: the area under the (weighted) KM curve."""
    t, s = kaplan_meier(time, event, weights)
    keep = t < tau
    knots = np.concatenate([[0.0], t[keep], [tau]])
    heights = np.concatenate([[1.0], s[keep]])
    return float(np.sum(np.diff(knots) * heights))


def calibration_at(
    time: Array, event: Array, surv_at_t: Array, t: float, groups: int = 5
) -> list[dict[str, float]]:
    """Predicted vs Kaplan-Meier observed survival at ``t`` in quantile groups of prediction."""
    s = np.asarray(surv_at_t, dtype=float)
    edges = np.quantile(s, np.linspace(0, 1, groups + 1))
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, groups - 1)
    out = []
    for g in range(groups):
        m = idx == g
        if m.sum() < 2:
            continue
        kt, ks = kaplan_meier(np.asarray(time)[m], np.asarray(event)[m])
        out.append(
            {
                "group": g + 1,
                "n": int(m.sum()),
                "predicted": float(s[m].mean()),
                "observed": float(step_at(kt, ks, np.array([t]))[0]),
            }
        )
    return out


def pseudo_survival(time: Array, event: Array, times: Array) -> Array:
    """Jackknife pseudo-observations of the Kaplan-Meier survival at ``times``.

    ``n S(t) - (n - 1) S_{-i}(t)`` for every patient ``i`` (Andersen & Perme 2010, Stat
    Methods Med Res): under independent censoring their conditional mean given covariates
    is the patient's survival probability, so they can be regressed on covariates with any
    regression learner.  Shape (n, len(times)).
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    times = np.atleast_1d(np.asarray(times, dtype=float))
    n = time.size
    kt, ks = kaplan_meier(time, event)
    full = step_at(kt, ks, times)
    out = np.empty((n, times.size))
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        keep[i] = False
        lt, ls = kaplan_meier(time[keep], event[keep])
        out[i] = n * full - (n - 1) * step_at(lt, ls, times)
        keep[i] = True
    return out
