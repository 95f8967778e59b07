"""How much a recommendation policy helps: selection benefit and doubly robust policy value.

Outcomes are *oriented* by ``sign`` (+1 when higher is better, -1 when lower is better) so
that every gain reported is positive when the recommendation helps.
"""

from __future__ import annotations

from typing import Any

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


def cross_validated_policy_gain(
    observed: ArrayLike,
    arm_index: ArrayLike,
    predictions: NDArray[np.float64],
    splits: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]],
    propensity: NDArray[np.float64],
    sign: float,
    level: float = 0.95,
) -> dict[str, Any]:
    """Gain of the cross-validated policy over the cross-validated best single arm, with an
    interval whose variance accounts for the overlap of the training sets.

    For every split ``(repeat, train, test)`` the policy recommends, to each test patient,
    the arm with the best out-of-fold prediction (``predictions[repeat]``), and the
    comparator is the single arm with the best mean outcome among the *training* patients;
    per patient, ``D_i = Gamma[i, policy] - Gamma[i, comparator]`` (oriented doubly robust
    scores from the same out-of-fold predictions; propensities known in a trial).  The
    estimate is the mean of ``D`` over patients and repeats; its variance is the corrected
    resampled variance of Nadeau & Bengio (2003), ``(1/J + n_test/n_train) s^2`` over the
    ``J`` split means (a t interval with ``J - 1`` degrees of freedom), which accounts for
    the fold-to-fold variability and the dependence between overlapping training sets.
    Both sides of the comparison are learned out of fold, so on a trial without
    treatment-by-feature interaction the estimate is not biased upward by choosing the
    comparator on the test patients.

    Parameters
    ----------
    observed : array-like (n,)
    arm_index : array-like of int (n,)
    predictions : ndarray (n_repeats, n, k)
        Out-of-fold predictions of every repeat.
    splits : list of (repeat, train, test)
    propensity : ndarray (n, k)
    sign : float
        +1 when higher outcomes are better, -1 when lower.
    level : float

    Returns
    -------
    dict
        ``estimate``, ``ci``, ``se``, ``n_splits``, ``per_patient`` (mean ``D`` per patient).
    """
    from scipy import stats

    y = sign * np.asarray(observed, dtype=float)
    t = np.asarray(arm_index, dtype=int)
    n, k = predictions.shape[1], predictions.shape[2]
    onehot = np.eye(k)[t]
    total = np.zeros(n)
    count = np.zeros(n)
    split_means, ratios = [], []
    for r, train, test in splits:
        u = sign * predictions[r]
        gamma = u[test] + onehot[test] / propensity[test] * (y[test, None] - u[test])
        means = np.array([y[train][t[train] == a].mean() for a in range(k)])
        comparator = int(np.argmax(means))
        policy = np.argmax(u[test], axis=1)
        d = gamma[np.arange(test.size), policy] - gamma[:, comparator]
        total[test] += d
        count[test] += 1
        split_means.append(float(d.mean()))
        ratios.append(test.size / max(1, train.size))
    per_patient = total / np.maximum(count, 1)
    estimate = float(per_patient.mean())
    J = len(split_means)
    if J < 2:
        return {
            "estimate": estimate,
            "ci": [None, None],
            "se": None,
            "n_splits": J,
            "per_patient": per_patient,
        }
    s2 = float(np.var(split_means, ddof=1))
    se = float(np.sqrt((1.0 / J + float(np.mean(ratios))) * s2))
    q = float(stats.t.ppf(0.5 + level / 2, J - 1))
    return {
        "estimate": estimate,
        "ci": [estimate - q * se, estimate + q * se],
        "se": se,
        "n_splits": J,
        "per_patient": per_patient,
    }
