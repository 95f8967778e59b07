"""All permutations of a cross-validated ridge model at once.

For a linear smoother the out-of-fold predictions are a fixed linear map of the training
targets: per fold, ``y_hat_test = A y_train`` with ``A`` built from one eigendecomposition
of the training Gram matrix.  Every permuted target is then one column of a matrix and all
permutations are solved together by one matrix product per fold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state


def _r2_columns(y_true: NDArray[np.float64], y_pred: NDArray[np.float64]) -> NDArray[np.float64]:
    ss_res = ((y_true - y_pred) ** 2).sum(axis=0)
    ss_tot = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(
            np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
        )


def fold_operator(
    X_train: NDArray[np.float64], X_test: NDArray[np.float64], alpha: float, scale: bool = True
) -> NDArray[np.float64]:
    """Matrix ``A`` with ``A @ y_train`` = predictions of ``[StandardScaler +] Ridge(alpha)``."""
    mean = X_train.mean(axis=0)
    if scale:
        sd = X_train.std(axis=0)
        sd[sd == 0] = 1.0
    else:
        sd = np.ones(X_train.shape[1])
    Xtr = (X_train - mean) / sd
    Xte = (X_test - mean) / sd
    n = Xtr.shape[0]
    K = Xtr @ Xtr.T
    K_te = Xte @ Xtr.T
    w, V = np.linalg.eigh(K)
    inv = (V / (w + alpha)) @ V.T
    center = np.eye(n) - 1.0 / n
    return np.asarray(K_te @ inv @ center + 1.0 / n)


def ridge_permutation_test_score(
    X: ArrayLike,
    y: ArrayLike,
    *,
    alpha: float = 1.0,
    cv: Any = 5,
    n_permutations: int = 100,
    random_state: int | None = 0,
    scale: bool = True,
) -> tuple[float, NDArray[np.float64], float]:
    """Permutation test of a cross-validated ridge regression's R², all permutations at once.

    Gives the same score, permutation scores and p-value as
    ``sklearn.model_selection.permutation_test_score(make_pipeline(StandardScaler(),
    Ridge(alpha)), X, y, cv=cv, n_permutations=..., random_state=...)`` (scoring R²), using
    the same permutations, with one eigendecomposition per fold instead of one fit per
    fold and permutation.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    alpha : float
        Ridge penalty.
    cv : int or splitter
        As in scikit-learn (an int gives unshuffled ``KFold``).
    n_permutations : int
    random_state : int or None
    scale : bool
        Standardise features in each training fold (``StandardScaler``).

    Returns
    -------
    score : float
        Mean R² over folds on the real targets.
    permutation_scores : ndarray of shape (n_permutations,)
    pvalue : float
        ``(1 + #{permutation score >= score}) / (n_permutations + 1)``.
    """
    Xa = np.asarray(X, dtype=float)
    ya = np.asarray(y, dtype=float)
    splitter = check_cv(cv)
    rng = check_random_state(random_state)
    perms = np.vstack(
        [np.arange(ya.size)] + [rng.permutation(ya.size) for _ in range(n_permutations)]
    )
    Y = ya[perms].T  # (n_samples, 1 + n_permutations); column 0 = real targets
    scores = []
    for train, test in splitter.split(Xa, ya):
        A = fold_operator(Xa[train], Xa[test], alpha, scale)
        scores.append(_r2_columns(Y[test], A @ Y[train]))
    mean = np.mean(scores, axis=0)
    score, perm_scores = float(mean[0]), mean[1:]
    pvalue = (1 + np.sum(perm_scores >= score)) / (n_permutations + 1)
    return score, perm_scores, float(pvalue)
