"""Kernel ridge with unpenalised fixed effects, penalty chosen by exact leave-one-out.

Solves, for every column ``y`` of a target matrix ``Y`` at once::

    min ||y - D a - f||^2 + lam ||f||_K^2

where ``D`` holds unpenalised effects (arm intercepts, baseline score, covariates) and
``K`` is a linear kernel over standardised features (possibly structured by arm, see
:func:`arm_kernel`).  By Frisch-Waugh the penalised part is a ridge on ``M K M`` with
``M = I - D D^+``; one eigendecomposition of ``M K M`` gives, for every ``lam`` on the
grid, the hat matrix ``H = D D^+ + M K M (M K M + lam I)^-1`` and so the exact
leave-one-out residuals ``(y - H y) / (1 - diag H)`` of every column.  The inner CV for the
penalty therefore costs one matrix product per grid value, and permuted targets are
just more columns.  When the kernel has a factor ``K = F F'`` of rank ``r < n`` (the
features of a linear kernel), a thin SVD of ``M F`` replaces the eigendecomposition: the
same solution at ``O(n r^2)`` instead of ``O(n^3)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Penalties, relative to the mean eigenvalue of ``M K M``.
LAMBDA_GRID = np.logspace(-2, 4, 13)


class KernelRidgeLOO:
    """Fit once per training set; solve many target columns; predict any test rows.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Training kernel.
    D : ndarray of shape (n, q)
        Unpenalised design (must include intercept column(s)).
    grid : ndarray, optional
        Relative penalty grid.
    """

    def __init__(
        self,
        K: NDArray[np.float64] | None,
        D: NDArray[np.float64],
        grid: NDArray[np.float64] | None = None,
        factor: NDArray[np.float64] | None = None,
    ) -> None:
        n = D.shape[0]
        self.D = D
        self.D_pinv = np.linalg.pinv(D)
        self.F = factor
        if factor is not None:
            # primal algebra (rank r < n): K = F F', M K M = (M F)(M F)'; a thin SVD of
            # M F (n x r) replaces the n x n eigendecomposition (cost n r^2, linear in n)
            U, sv, _ = np.linalg.svd(self._m(factor), full_matrices=False)
            s = sv**2
            self.M = None
        else:
            assert K is not None
            P = D @ self.D_pinv
            self.M = np.eye(n) - P
            S = self.M @ K @ self.M
            S = (S + S.T) / 2
            s, U = np.linalg.eigh(S)
            s = np.clip(s, 0.0, None)
        self.s, self.U, self.K = s, U, K
        scale = s.sum() / max(1, n - np.linalg.matrix_rank(D)) if s.sum() > 0 else 1.0
        self.lambdas = (LAMBDA_GRID if grid is None else grid) * scale
        self.h_fixed = np.einsum("ij,ji->i", D, self.D_pinv)

    def _m(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """``M X``: residuals of ``X`` on the unpenalised design."""
        return np.asarray(X - self.D @ (self.D_pinv @ X))

    def _k(self, c: NDArray[np.float64]) -> NDArray[np.float64]:
        """``K c`` (through the factor when there is one)."""
        if self.F is not None:
            return np.asarray(self.F @ (self.F.T @ c))
        assert self.K is not None
        return np.asarray(self.K @ c)

    def fit(self, Y: NDArray[np.float64]) -> KernelRidgeLOO:
        """Choose the penalty per column by leave-one-out MSE and store the dual solution."""
        Y = Y.reshape(Y.shape[0], -1)
        UtY = self.U.T @ Y
        fixed = self.D @ (self.D_pinv @ Y)
        best = np.full(Y.shape[1], np.inf)
        choice = np.zeros(Y.shape[1], dtype=int)
        for g, lam in enumerate(self.lambdas):
            shrink = self.s / (self.s + lam)
            fitted = fixed + self.U @ (shrink[:, None] * UtY)
            h = self.h_fixed + (self.U**2) @ shrink
            loo = (Y - fitted) / np.maximum(1.0 - h, 1e-8)[:, None]
            mse = (loo**2).mean(axis=0)
            better = mse < best
            best[better] = mse[better]
            choice[better] = g
        # dual coefficients c = M U (s + lam)^-1 U' M y, column by column's own lam
        inv = 1.0 / (self.s[:, None] + self.lambdas[choice][None, :])
        UtMY = self.U.T @ self._m(Y)
        self.c = self._m(self.U @ (inv * UtMY))
        self.alpha = self.D_pinv @ (Y - self._k(self.c))
        self.choice = choice
        self.loo_mse = best
        return self

    def predict(
        self,
        K_test: NDArray[np.float64],
        D_test: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """Predictions ``(n_test, n_columns)`` from test-by-train kernel and test design."""
        return np.asarray(K_test @ self.c + D_test @ self.alpha)
