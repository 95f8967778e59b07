"""The joint non-linear candidate of the default model: pairwise products of features.

An effect modifier that acts through two features together (``x_1 x_2``: the arm effect
reverses when both are high or both low) is invisible to each feature alone, to its
hinges (:mod:`brainmatch.selection.hinge`) and to an isotropic kernel over hundreds of
features.  The default therefore also offers a basis of every standardised feature ``z_j``
and every pairwise product of two of them::

    z_i z_j,   i < j    (p (p - 1) / 2 columns)

standardised on the training rows.  The ``p + p (p - 1) / 2`` columns go through the same
screened ridges as the features (:class:`~brainmatch.selection.screen.ScreenedArmModels`,
kernel off): the screen scores every column's within-arm association with the outcome, so
one product among thousands costs one column, not a kernel.  A model over the basis is
quadratic in the features (no squares ``z_j^2``: curvature in one feature is the hinges'
and the RBF ridge's part).

The basis uses no outcome, but each fitted model keeps only the few products its screen
chose, and each bootstrap refit screens its own.  The model file stores a product as two
squares, ``z_i z_j = ((z_i + z_j)^2 - (z_i - z_j)^2) / 4`` (:func:`export_products`), so a
product is two tree-less components with the square as their output; equal components of
the final model and its refits are stored once (:func:`brainmatch.selection.learners.
export_arrays`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch.selection.trees import Components, export_products


def pairs(p: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Feature indices ``(i, j)``, ``i < j``, of the product columns, in basis order."""
    i, j = np.triu_indices(p, 1)
    return np.asarray(i, dtype=np.intp), np.asarray(j, dtype=np.intp)


def n_columns(p: int) -> int:
    """Columns of the basis of ``p`` features: the features and their products."""
    return p + p * (p - 1) // 2


def feature_pairs(column: NDArray[np.intp], p: int) -> list[tuple[int, ...]]:
    """The feature (``(j,)``) or the pair (``(i, j)``) behind each basis column."""
    i, j = pairs(p)
    return [(int(c),) if c < p else (int(i[c - p]), int(j[c - p])) for c in np.asarray(column)]


class ProductBasis:
    """The expanded matrix ``[Z, standardised pairwise products of Z]`` of one training set.

    Attributes
    ----------
    p_ : int
        Number of features.
    mean_, sd_ : ndarray (p (p - 1) / 2,)
        Training mean and SD of the product columns.
    """

    def fit(self, Z: NDArray[np.float64]) -> ProductBasis:
        """Learn the product columns' standardisation from the training rows.

        From two ``p x p`` moment matrices (``Z'Z`` and ``(Z^2)'(Z^2)``), not from the
        ``n x p (p - 1) / 2`` products themselves."""
        n, self.p_ = Z.shape
        i, j = pairs(self.p_)
        self.mean_ = (Z.T @ Z)[i, j] / n
        Z2 = Z * Z
        var = (Z2.T @ Z2)[i, j] / n - self.mean_**2
        sd = np.sqrt(np.maximum(var, 0.0))
        self.sd_ = np.where(sd > 1e-8, sd, 1.0)
        return self

    def transform(self, Z: NDArray[np.float64]) -> NDArray[np.float64]:
        """``[Z, (products - mean) / sd]`` of shape ``(n, p + p (p - 1) / 2)``."""
        p = self.p_
        out = np.empty((Z.shape[0], n_columns(p)))
        out[:, :p] = Z
        at = p
        for a in range(p - 1):  # the products of feature a with the features after it
            np.multiply(Z[:, a : a + 1], Z[:, a + 1 :], out=out[:, at : at + p - 1 - a])
            at += p - 1 - a
        P = out[:, p:]
        P -= self.mean_
        P /= self.sd_
        return out

    def export(self, primal: dict[str, Any]) -> dict[str, Any]:
        """A model on the expanded matrix as a linear part on ``Z`` plus square components.

        ``primal``: ``coef`` (k, p + p (p - 1) / 2), ``intercept`` (k,), ``cov_coef``
        (k, q) of a ridge on :meth:`transform`'s columns.  Each product the model uses
        (a non-zero weight under some arm) becomes the squares ``(z_i + z_j)^2`` and
        ``(z_i - z_j)^2`` with weights ``+- w / (4 sd)``; the standardisation's mean goes
        into the intercepts.  A model without products has no components (``None``).
        """
        p = self.p_
        q = np.asarray(primal["cov_coef"]).shape[1]
        coef = np.asarray(primal["coef"], dtype=float)
        w = coef[:, p:] / self.sd_[None, :]
        intercept = np.asarray(primal["intercept"], dtype=float) - w @ self.mean_
        used = np.flatnonzero((w != 0).any(axis=0))
        comps: Components | None = None
        weight: NDArray[np.float64] | None = None
        if used.size:
            i, j = pairs(p)
            comps = export_products(i[used], j[used], p + q)
            weight = np.repeat(w[:, used] / 4.0, 2, axis=1)
            weight[:, 1::2] *= -1.0
        return {
            "coef": coef[:, :p].copy(),
            "intercept": intercept,
            "cov_coef": np.asarray(primal["cov_coef"], dtype=float).copy(),
            "components": comps,
            "weight": weight,
        }
