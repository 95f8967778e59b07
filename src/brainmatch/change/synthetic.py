"""Synthetic pre/post feature tables with known truth, for tests and benchmarks.

Fast tabular draws of what ``brainmatch extract`` gives for a two-session trial: every
feature is a participant's stable trait (random intercept, intra-class correlation
``icc``) plus a site offset, a common time effect (e.g. scanner drift or regression to the
mean, the same in every arm) and session noise; features are correlated through a few
latent factors, as neighbouring regions and edges are.  ``effects`` adds a true
arm-specific change to chosen features; without it there is no arm-by-time interaction
anywhere (the null of the family-wise error check).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def synthetic_change_data(
    *,
    n_subjects: int = 80,
    n_features: int = 200,
    arms: tuple[str, ...] = ("CBT", "SSRI"),
    n_sites: int = 2,
    icc: float = 0.7,
    n_factors: int = 5,
    factor_share: float = 0.4,
    dropout: float = 0.15,
    time_effect: float = 0.2,
    effects: dict[str, dict[str, float]] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw a long feature table and a participants table.

    Parameters
    ----------
    n_subjects, n_features : int
    arms : tuple of str
        Randomised in permuted blocks within site.
    n_sites : int
    icc : float
        Share of a feature's variance that is a stable participant trait.
    n_factors : int
        Latent factors correlating the session noise of features.
    factor_share : float
        Share of the session noise that comes from the factors.
    dropout : float
        Share of participants without a follow-up scan.
    time_effect : float
        Common change of every feature from pre to post (same in every arm), in SD units.
    effects : dict, optional
        ``{feature: {arm: change in SD units}}``: the true arm-specific changes.
    seed : int

    Returns
    -------
    features : DataFrame
        ``participant_id``, ``session`` (``pre`` / ``post``), ``amp__r001`` ...
    participants : DataFrame
        ``participant_id``, ``arm``, ``site``, ``age``.
    """
    rng = np.random.default_rng(seed)
    ids = [f"sub-{i + 1:03d}" for i in range(n_subjects)]
    site = np.sort(np.arange(n_subjects) % n_sites)
    arm = np.empty(n_subjects, dtype=int)
    for s in range(n_sites):
        idx = np.flatnonzero(site == s)
        seq = np.concatenate([rng.permutation(len(arms)) for _ in range(-(-idx.size // len(arms)))])
        arm[idx] = seq[: idx.size]
    names = [f"amp__r{j + 1:03d}" for j in range(n_features)]
    trait = rng.standard_normal((n_subjects, n_features)) * np.sqrt(icc)
    site_off = rng.normal(0, 0.5, (n_sites, n_features))
    loadings = rng.standard_normal((n_factors, n_features)) / np.sqrt(n_factors)
    noise_sd = np.sqrt(1 - icc)

    def session_noise() -> np.ndarray:
        common = rng.standard_normal((n_subjects, n_factors)) @ loadings
        own = rng.standard_normal((n_subjects, n_features))
        return noise_sd * (np.sqrt(factor_share) * common + np.sqrt(1 - factor_share) * own)

    pre = trait + site_off[site] + session_noise()
    post = trait + site_off[site] + session_noise() + time_effect
    arm_names = np.array(arms)
    for feat, per_arm in (effects or {}).items():
        j = names.index(feat)
        for a, delta in per_arm.items():
            post[arm_names[arm] == a, j] += delta
    followed = rng.random(n_subjects) >= dropout
    base = 10.0 + np.arange(n_features) % 7  # positive, unit-bearing levels
    rows = pd.DataFrame(pre + base, columns=names)
    rows.insert(0, "session", "pre")
    rows.insert(0, "participant_id", ids)
    post_rows = pd.DataFrame(post[followed] + base, columns=names)
    post_rows.insert(0, "session", "post")
    post_rows.insert(0, "participant_id", np.array(ids)[followed])
    features = (
        pd.concat([rows, post_rows], ignore_index=True)
        .sort_values(["participant_id", "session"], ascending=[True, False])
        .reset_index(drop=True)
    )
    participants = pd.DataFrame(
        {
            "participant_id": ids,
            "arm": arm_names[arm],
            "site": [f"site{s + 1:02d}" for s in site],
            "age": rng.integers(18, 66, n_subjects),
        }
    )
    return features, participants
