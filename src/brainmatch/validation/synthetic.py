"""Measured feature tables from a simulated trial, for validation with known truth.

:func:`measured_features` turns the true biomarkers of
:func:`brainmatch.simulate.draw_trial` into what a scanner would give: each true biomarker
measured with noise (reliability ``reliability``) and site effects (additive and
multiplicative, as scanners differ), plus ``n_noise`` distractor features that carry site
effects but no signal.  The truth stays in ``trial.truth`` (true outcome under every arm).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainmatch.simulate.model import Trial

#: Column names of the measured true biomarkers (named after atlas regions).
SIGNAL_FEATURES = {
    "insula_activity": "activity__ctx-rh-insula",
    "scc_connectivity": "conn__ctx-lh-rostralanteriorcingulate__ctx-lh-insula",
    "hippocampal_volume": "vol__Left-Hippocampus",
}


def measured_features(
    trial: Trial,
    *,
    n_noise: int = 50,
    reliability: float = 0.8,
    site_effect: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """A feature table (``participant_id`` + numeric columns) measured from ``trial``.

    Parameters
    ----------
    trial : Trial
    n_noise : int
        Distractor features (pure noise + site effects).
    reliability : float
        Share of a measured biomarker's variance (within site) that is the true value.
    site_effect : float
        SD of the per-site additive shift (in units of the feature SD); the per-site
        scale factor is ``exp(N(0, site_effect / 2))``.
    seed : int

    Returns
    -------
    DataFrame
    """
    rng = np.random.default_rng([seed, 11])
    truth = trial.truth
    n = len(truth)
    sites = truth["site"].to_numpy()
    labels, idx = np.unique(sites, return_inverse=True)
    columns: dict[str, np.ndarray] = {"participant_id": truth["participant_id"].to_numpy()}
    noise_sd = np.sqrt((1 - reliability) / reliability)
    signals = [(name, truth[bio].to_numpy(dtype=float)) for bio, name in SIGNAL_FEATURES.items()]
    signals += [(f"noise__{j + 1:04d}", np.zeros(n)) for j in range(n_noise)]
    for name, true in signals:
        shift = rng.normal(0, site_effect, labels.size)[idx]
        scale = np.exp(rng.normal(0, site_effect / 2, labels.size))[idx]
        base = true + rng.normal(0, noise_sd if true.any() else 1.0, n)
        columns[name] = np.round(scale * base + shift, 6)
    return pd.DataFrame(columns)


def outcome_table(trial: Trial) -> pd.DataFrame:
    """What a user has: participant, arm, site, age, sex, baseline and outcomes."""
    return trial.participants.merge(trial.outcomes, on="participant_id")
