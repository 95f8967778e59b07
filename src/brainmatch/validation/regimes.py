"""Simulated randomised trials with known potential outcomes, independent of ``simulate``.

Unlike :mod:`brainmatch.simulate` (BIDS data from a brain model), :func:`draw_regime` draws
feature tables directly, in the regimes a treatment-selection method must handle: few or
many patients, few or many (correlated) features, no / sparse linear / dense linear /
nonlinear (threshold, product) treatment-by-feature interactions, 2 to 4 arms, additive and
multiplicative site effects on the features, and missing feature values.  Every regime
keeps the prognostic (arm-independent) signal and the arm main effects, and returns the
true expected outcome under every arm (``mu``), so the oracle policy and the share of its
gain a learned policy recovers are known exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

INTERACTIONS = ("none", "sparse", "dense", "nonlinear")


@dataclass
class Regime:
    """A drawn trial: ``features`` / ``outcomes`` tables and the truth ``mu`` (n, k)."""

    features: pd.DataFrame
    outcomes: pd.DataFrame
    mu: NDArray[np.float64]
    arms: list[str]


def draw_regime(
    n: int = 400,
    p: int = 50,
    interaction: str = "sparse",
    n_arms: int = 2,
    *,
    sites: int = 1,
    missing: float = 0.0,
    effect: float = 1.0,
    noise: float = 1.0,
    rho: float = 0.3,
    seed: int = 0,
    outcome: str = "continuous",
) -> Regime:
    """Draw one trial.

    Parameters
    ----------
    n, p : int
        Patients and features.
    interaction : {"none", "sparse", "dense", "nonlinear"}
        ``sparse``: 3 features modify the arm effects; ``dense``: every feature does, with
        small weights (same total variance); ``nonlinear``: a threshold on one feature and
        a product of two; ``none``: the null (arm main effects and prognostic effects only).
    n_arms : int
    sites : int
        Sites with additive and multiplicative feature shifts (1 = none).
    missing : float
        Share of feature values set missing at random.
    effect : float
        SD of the treatment-effect heterogeneity (in outcome-noise units).
    noise : float
        Outcome noise SD.
    rho : float
        Correlation of neighbouring features (AR(1) along the column order).
    seed : int
    outcome : {"continuous", "binary"}
        ``binary``: the expected outcome above is a log-odds; ``y`` is 0/1 (1 = the good
        outcome) drawn with probability ``mu`` (the probabilities are returned as ``mu``),
        and ``noise`` is not used.  The features, arms and log-odds are those of the
        continuous draw with the same seed (sites and missing values too).
    """
    if interaction not in INTERACTIONS:
        raise ValueError(f"interaction {interaction!r}: expected one of {INTERACTIONS}")
    if outcome not in ("continuous", "binary"):
        raise ValueError(f"outcome {outcome!r}: expected continuous or binary")
    rng = np.random.default_rng([seed, 2027])
    # AR(1)-correlated features
    X = np.empty((n, p))
    X[:, 0] = rng.normal(size=n)
    for j in range(1, p):
        X[:, j] = rho * X[:, j - 1] + np.sqrt(1 - rho**2) * rng.normal(size=n)
    arms = [f"arm{a + 1}" for a in range(n_arms)]
    t = rng.permutation(np.arange(n) % n_arms)
    prog_idx = rng.choice(p, size=min(5, p), replace=False)
    prognostic = X[:, prog_idx] @ rng.normal(0, 0.5, prog_idx.size)
    main = np.linspace(0, 0.3, n_arms)  # small arm main effects
    h = np.zeros((n, n_arms))
    signal_idx = rng.choice(p, size=min(4, p), replace=False)
    for a in range(n_arms):
        if interaction == "sparse":
            w = np.zeros(p)
            w[signal_idx[:3]] = rng.normal(0, 1, 3)
            h[:, a] = X @ w
        elif interaction == "dense":
            h[:, a] = X @ rng.normal(0, 1, p)
        elif interaction == "nonlinear":
            s = 1 if a % 2 == 0 else -1
            h[:, a] = s * (
                2.0 * (X[:, signal_idx[0]] > 0.3)
                + X[:, signal_idx[1]] * X[:, signal_idx[min(2, p - 1)]] * (a + 1) / n_arms
            )
    if interaction != "none":
        h -= h.mean(axis=1, keepdims=True)
        h *= effect / max(float(h.std()), 1e-12)
    mu = prognostic[:, None] + main[None, :] + h
    y = mu[np.arange(n), t] + rng.normal(0, noise, n)
    if outcome == "binary":  # its own stream: sites and missing values as the continuous draw
        mu = 1.0 / (1.0 + np.exp(-mu))
        y = (np.random.default_rng([seed, 2027, 1]).random(n) < mu[np.arange(n), t]) * 1.0
    site = rng.integers(0, sites, n) if sites > 1 else np.zeros(n, dtype=int)
    Xm = X.copy()
    if sites > 1:
        shift = rng.normal(0, 0.5, (sites, p))
        scale = np.exp(rng.normal(0, 0.2, (sites, p)))
        Xm = Xm * scale[site] + shift[site]
    if missing > 0:
        Xm[rng.random(Xm.shape) < missing] = np.nan
    ids = [f"sub-{i:05d}" for i in range(n)]
    features = pd.DataFrame(Xm, columns=[f"f{j:04d}" for j in range(p)])
    features.insert(0, "participant_id", ids)
    outcomes = pd.DataFrame(
        {
            "participant_id": ids,
            "arm": np.array(arms)[t],
            "site": [f"site{s + 1}" for s in site],
            "y": y,
        }
    )
    return Regime(features=features, outcomes=outcomes, mu=mu, arms=arms)


def oracle_share(mu: NDArray[np.float64], rec: NDArray[np.intp], sign: float = 1.0) -> float:
    """Share of the oracle's gain over the best single arm that policy ``rec`` recovers.

    NaN when the oracle gains nothing (no treatment-by-feature interaction): the gap is
    computed row by row against the best arm, so it is exactly 0 then, not a rounding
    error to divide by.
    """
    u = sign * mu
    rows = np.arange(u.shape[0])
    best_arm = int(u.mean(axis=0).argmax())
    gap = float(np.mean(u.max(axis=1) - u[:, best_arm]))
    if gap <= 1e-12 * max(1.0, float(np.abs(u).max())):
        return float("nan")
    return float(np.mean(u[rows, rec] - u[:, best_arm]) / gap)
