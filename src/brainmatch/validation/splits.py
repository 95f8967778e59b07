"""Outer cross-validation splits: repeated stratified k-fold, or leave one site out."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.model_selection import StratifiedKFold

from brainmatch.errors import BrainmatchInputError

CV_SCHEMES = ("repeated-kfold", "leave-site-out")


def outer_splits(
    treatment: ArrayLike,
    *,
    scheme: str = "repeated-kfold",
    n_splits: int = 5,
    n_repeats: int = 10,
    sites: ArrayLike | None = None,
    seed: int = 0,
) -> list[tuple[int, NDArray[np.intp], NDArray[np.intp]]]:
    """Outer splits as ``(repeat, train_index, test_index)`` triples.

    Parameters
    ----------
    treatment : array-like of shape (n_samples,)
        Arm received; k-fold splits are stratified by arm (and site when given), so every
        training fold holds every arm.
    scheme : {"repeated-kfold", "leave-site-out"}
    n_splits, n_repeats : int
        Folds and repetitions of k-fold (ignored for leave-site-out).
    sites : array-like, optional
        Site labels (required for leave-site-out).
    seed : int
        Seed of the fold assignment.

    Returns
    -------
    list of tuple
    """
    t = np.asarray(treatment).astype(str)
    if scheme == "leave-site-out":
        if sites is None:
            raise BrainmatchInputError("cv='leave-site-out' needs site_column")
        s = np.asarray(sites).astype(str)
        labels = np.unique(s)
        if labels.size < 3:
            raise BrainmatchInputError(
                f"cv='leave-site-out' needs at least 3 sites, found {labels.size}"
            )
        out = []
        for lab in labels:
            test = np.flatnonzero(s == lab)
            train = np.flatnonzero(s != lab)
            missing = sorted(set(t.tolist()) - set(t[train].tolist()))
            if missing:
                raise BrainmatchInputError(
                    f"cv='leave-site-out': without site {lab!r} no patient received "
                    f"{', '.join(missing)}; use cv='repeated-kfold'"
                )
            out.append((0, train, test))
        return out
    if scheme != "repeated-kfold":
        raise BrainmatchInputError(f"cv={scheme!r}: expected one of {', '.join(CV_SCHEMES)}")
    strata = t if sites is None else np.char.add(np.char.add(t, "|"), np.asarray(sites).astype(str))
    # fall back to arm-only strata when an arm-site cell is smaller than the fold count
    _, counts = np.unique(strata, return_counts=True)
    if counts.min() < n_splits:
        strata = t
    _, counts = np.unique(strata, return_counts=True)
    if counts.min() < n_splits:
        raise BrainmatchInputError(
            f"an arm has only {counts.min()} patients, fewer than the {n_splits} CV folds"
        )
    out = []
    for r in range(n_repeats):
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed + r)
        for train, test in skf.split(np.zeros(t.size), strata):
            out.append((r, train, test))
    return out
