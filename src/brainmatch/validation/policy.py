"""How much a recommendation policy helps: selection benefit and doubly robust policy value.

Outcomes are *oriented* by ``sign`` (+1 when higher is better, -1 when lower is better) so
that every gain reported is positive when the recommendation helps.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from brainmatch.validation.metrics import cohens_d


def selection_benefit(
    observed: ArrayLike, received: ArrayLike, recommended: ArrayLike, sign: float
) -> tuple[float, float]:
    """Mean oriented outcome of patients who received their recommended arm minus the others.

    Returns
    -------
    difference : float
        In outcome units, positive = the matched patients did better.
    d : float
        Cohen's d of the same comparison (NaN when a group has fewer than 2 patients).
    """
    y = sign * np.asarray(observed, dtype=float)
    match = np.asarray(received).astype(str) == np.asarray(recommended).astype(str)
    if match.sum() == 0 or (~match).sum() == 0:
        return float("nan"), float("nan")
    return float(y[match].mean() - y[~match].mean()), cohens_d(y[match], y[~match])


def propensities(
    received: ArrayLike,
    arms: list[str],
    sites: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Probability of each arm per patient: arm shares (within site when sites are given)."""
    t = np.asarray(received).astype(str)
    groups = (
        np.zeros(t.size, dtype=int)
        if sites is None
        else np.unique(np.asarray(sites).astype(str), return_inverse=True)[1]
    )
    e = np.zeros((t.size, len(arms)))
    for g in np.unique(groups):
        rows = groups == g
        for j, a in enumerate(arms):
            e[rows, j] = (t[rows] == a).mean()
    overall = np.array([(t == a).mean() for a in arms])
    bad = e <= 0  # an arm absent from a site: fall back to the overall share
    e[bad] = np.broadcast_to(overall, e.shape)[bad]
    return e


def dr_scores(
    observed: ArrayLike,
    received: ArrayLike,
    predicted: NDArray[np.float64],
    arms: list[str],
    propensity: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Augmented inverse-probability-weighted (doubly robust) scores per patient and arm.

    ``Gamma[i, a] = mu_a(x_i) + 1[T_i = a] / e_a(x_i) * (Y_i - mu_a(x_i))``; the mean of
    ``Gamma[i, pi(x_i)]`` estimates the value of policy ``pi``.  ``predicted`` must be
    out-of-fold (cross-fitted) predictions.
    """
    y = np.asarray(observed, dtype=float)
    t = np.asarray(received).astype(str)
    onehot = np.column_stack([t == a for a in arms]).astype(float)
    return np.asarray(predicted + onehot / propensity * (y[:, None] - predicted))


def policy_gain(gamma: NDArray[np.float64], policy: NDArray[np.intp], sign: float) -> float:
    """Value of ``policy`` (arm index per patient) minus that of the best single arm, oriented."""
    g = sign * gamma
    value = g[np.arange(g.shape[0]), policy].mean()
    return float(value - g.mean(axis=0).max())
