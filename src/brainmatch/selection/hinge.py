"""The additive non-linear candidate of the default model over many features: hinges.

Over more than :data:`~brainmatch.selection.screen.RBF_MAX_P` features an isotropic RBF
kernel learns nothing (a threshold in one of 200 features is a tiny part of the distance
between two patients), so the default offers instead a per-feature basis: every
standardised feature ``z_j`` together with three hinge functions of it::

    h_jr(z) = max(0, z_j - c_r),   c_r in KNOTS (the quartiles of N(0, 1))

standardised on the training rows.  The ``4 p`` columns go through the same screened
ridges as the features themselves (:class:`~brainmatch.selection.screen.ScreenedArmModels`,
kernel off): the screen keeps the few columns whose effect differs between arms, so a
threshold effect in one feature among hundreds costs a handful of columns, not a kernel.
A model over hinges is additive and piecewise linear in each feature.

The knots are fixed (the features are standardised on the training rows, so ``c_r`` are
about their quartiles) and use no outcome: every fold, permutation and bootstrap refit
shares one basis, which the model file stores once as ``3 p`` hinge components
(:func:`~brainmatch.selection.trees.export_hinges`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch.selection.trees import Components, export_hinges

#: Knots of the hinge functions on the standardised scale: the quartiles of N(0, 1).
KNOTS = (-0.6744897501960817, 0.0, 0.6744897501960817)


def hinge_columns(Z: NDArray[np.float64]) -> NDArray[np.float64]:
    """Raw hinge columns ``(n, 3 p)``: column ``3 j + r`` is ``max(0, z_j - KNOTS[r])``."""
    knots = np.asarray(KNOTS)
    return np.maximum(0.0, Z[:, :, None] - knots[None, None, :]).reshape(Z.shape[0], -1)


def feature_of(column: NDArray[np.intp], p: int) -> NDArray[np.intp]:
    """The feature behind each column of the expanded matrix ``[Z, hinges]``."""
    column = np.asarray(column)
    return np.asarray(np.where(column < p, column, (column - p) // len(KNOTS)))


class HingeBasis:
    """The expanded matrix ``[Z, standardised hinges of Z]`` of one training set.

    Attributes
    ----------
    p_ : int
        Number of features.
    mean_, sd_ : ndarray (3 p,)
        Training mean and SD of the hinge columns.
    """

    def fit(self, Z: NDArray[np.float64]) -> HingeBasis:
        """Learn the hinge columns' standardisation from the training rows."""
        self.p_ = Z.shape[1]
        H = hinge_columns(Z)
        self.mean_ = H.mean(axis=0)
        sd = H.std(axis=0)
        self.sd_ = np.where(sd > 1e-8, sd, 1.0)
        return self

    def transform(self, Z: NDArray[np.float64]) -> NDArray[np.float64]:
        """``[Z, (hinges - mean) / sd]`` of shape ``(n, 4 p)``."""
        return np.hstack([Z, (hinge_columns(Z) - self.mean_) / self.sd_])

    def export(self, primal: dict[str, Any]) -> dict[str, Any]:
        """A model on the expanded matrix as a linear part on ``Z`` plus hinge components.

        ``primal``: ``coef`` (k, 4 p), ``intercept`` (k,), ``cov_coef`` (k, q) of a ridge
        on :meth:`transform`'s columns.  The standardisation is folded into the hinge
        weights and the intercepts; the components are all ``3 p`` hinges (weight 0 where
        the model does not use one), so every model of a trial shares one pool.
        """
        p = self.p_
        q = np.asarray(primal["cov_coef"]).shape[1]
        coef = np.asarray(primal["coef"], dtype=float)
        weight = coef[:, p:] / self.sd_[None, :]
        intercept = np.asarray(primal["intercept"], dtype=float) - weight @ self.mean_
        comps: Components = export_hinges(p, np.asarray(KNOTS), p + q)
        return {
            "coef": coef[:, :p].copy(),
            "intercept": intercept,
            "cov_coef": np.asarray(primal["cov_coef"], dtype=float).copy(),
            "components": comps,
            "weight": weight,
        }
