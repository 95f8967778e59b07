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
just more columns.

Primal algebra: when the kernel has a factor ``K = F F'`` of rank ``r < n`` (the
features of a linear kernel), the eigendecomposition of the ``r x r`` Gram matrix
``(M F)' (M F)`` replaces that of the ``n x n`` kernel (cost ``O(n r^2 + r^3)``, linear in
``n``), the left singular vectors ``U = M F V s^-1/2`` give the same hat matrix, and the
solution is kept as primal weights ``w = F' c`` (``r`` per column), so predictions cost
``O(n_test r)`` instead of a test-by-train kernel.  Target columns are processed in chunks
of :data:`CHUNK` for the leave-one-out search, so memory stays ``O(n (r + CHUNK))``
whatever the number of permuted targets.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Penalties, relative to the mean eigenvalue of ``M K M``.
LAMBDA_GRID = np.logspace(-2, 4, 13)
#: Target columns per leave-one-out block (bounds the ``n x CHUNK`` residual arrays).
CHUNK = 256


class ArmBlockFactor:
    """The interaction kernel's factor ``F`` (``n x k p``) without forming it.

    Block ``b`` of row ``i`` is ``z_i (1(t_i = b) + c) / sqrt(p)``
    (:func:`brainmatch.selection.pipeline.interaction_factor`), so every row is a scaled
    copy of ``z_i``: ``F' F`` is a sum of ``k`` per-arm Gram matrices ``Z_a' Z_a`` (cost
    ``n p^2`` instead of ``n (k p)^2``) and ``F V`` costs ``n p r`` instead of ``n k p r``.
    """

    def __init__(self, Z: NDArray[np.float64], t: NDArray[np.intp], k: int) -> None:
        self.Z, self.t, self.k = Z, t, k
        self.n, self.p = Z.shape
        self.c = (np.sqrt(k + 1.0) - 1.0) / k
        # W[a, b]: weight of block b in the rows of arm a
        self.W = (np.eye(k) + self.c) / np.sqrt(self.p)
        self.rows = [np.flatnonzero(t == a) for a in range(k)]
        self.shape = (self.n, k * self.p)

    def gram(self) -> NDArray[np.float64]:
        """``F' F`` (``k p x k p``)."""
        k, p = self.k, self.p
        out = np.zeros((k * p, k * p))
        for a, rows in enumerate(self.rows):
            Za = self.Z[rows]
            G = Za.T @ Za
            w = self.W[a]
            for b in range(k):
                for b2 in range(k):
                    out[b * p : (b + 1) * p, b2 * p : (b2 + 1) * p] += w[b] * w[b2] * G
        return out

    def left(self, A: NDArray[np.float64]) -> NDArray[np.float64]:
        """``A F`` for ``A`` of shape ``(q, n)``."""
        k, p = self.k, self.p
        out = np.zeros((A.shape[0], k * p))
        for a, rows in enumerate(self.rows):
            AZ = A[:, rows] @ self.Z[rows]
            for b in range(k):
                out[:, b * p : (b + 1) * p] += self.W[a, b] * AZ
        return out

    def dot(self, V: NDArray[np.float64]) -> NDArray[np.float64]:
        """``F V`` for ``V`` of shape ``(k p, m)``."""
        k, p = self.k, self.p
        out = np.empty((self.n, V.shape[1]))
        blocks = V.reshape(k, p, -1)
        for a, rows in enumerate(self.rows):
            out[rows] = self.Z[rows] @ np.tensordot(self.W[a], blocks, axes=1)
        return out


class _DenseFactor:
    """A factor given as an array (same interface as :class:`ArmBlockFactor`)."""

    def __init__(self, F: NDArray[np.float64]) -> None:
        self.F = F
        self.shape = F.shape

    def gram(self) -> NDArray[np.float64]:
        return np.asarray(self.F.T @ self.F)

    def left(self, A: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(A @ self.F)

    def dot(self, V: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self.F @ V)


class KernelRidgeLOO:
    """Fit once per training set; solve many target columns; predict any test rows.

    Parameters
    ----------
    K : ndarray of shape (n, n), or None with ``factor``
        Training kernel.
    D : ndarray of shape (n, q)
        Unpenalised design (must include intercept column(s)).
    grid : ndarray, optional
        Relative penalty grid.
    factor : ndarray of shape (n, r), optional
        ``F`` with ``K = F F'``: the primal algebra (use it when ``r < n``).
    """

    def __init__(
        self,
        K: NDArray[np.float64] | None,
        D: NDArray[np.float64],
        grid: NDArray[np.float64] | None = None,
        factor: NDArray[np.float64] | ArmBlockFactor | None = None,
    ) -> None:
        n = D.shape[0]
        self.D = D
        self.D_pinv: NDArray[np.float64] = np.asarray(np.linalg.pinv(D), dtype=np.float64)
        self.F = factor
        self.M: NDArray[np.float64] | None
        self.V: NDArray[np.float64] | None = None
        if factor is not None:
            # primal algebra: M K M = (M F)(M F)'; eigenvectors V of the r x r Gram give the
            # left singular vectors U = M F V s^-1/2 (directions of numerically zero
            # spectrum carry no weight in any fit and are dropped)
            op = factor if isinstance(factor, ArmBlockFactor) else _DenseFactor(factor)
            self.op = op
            self.DpF = op.left(self.D_pinv)
            # (M F)'(M F) = F'F - (D'F)' D^+ F
            gram = op.gram() - op.left(D.T).T @ self.DpF
            gram = (gram + gram.T) / 2
            total = float(np.trace(gram))
            s, V = np.linalg.eigh(gram)
            smax = max(float(s[-1]) if s.size else 0.0, 0.0)
            keep = s > 10 * max(op.shape) * np.finfo(float).eps * smax
            s, V = s[keep], V[:, keep]
            U = (op.dot(V) - D @ (self.DpF @ V)) / np.sqrt(s)
            self.M = None
            self.V = V
        else:
            assert K is not None
            P = D @ self.D_pinv
            self.M = np.eye(n) - P
            S = self.M @ K @ self.M
            S = (S + S.T) / 2
            s, U = np.linalg.eigh(S)
            s = np.clip(s, 0.0, None)
            total = float(s.sum())
        self.s, self.U, self.K = s, U, K
        scale = total / max(1, n - np.linalg.matrix_rank(D)) if total > 0 else 1.0
        self.lambdas = (LAMBDA_GRID if grid is None else grid) * scale
        self.h_fixed = np.einsum("ij,ji->i", D, self.D_pinv)

    def _m(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """``M X``: residuals of ``X`` on the unpenalised design."""
        return np.asarray(X - self.D @ (self.D_pinv @ X))

    def _k(self, c: NDArray[np.float64]) -> NDArray[np.float64]:
        """``K c`` (through the factor when there is one)."""
        if self.F is not None:
            ct: NDArray[np.float64] = np.ascontiguousarray(c.T, dtype=np.float64)
            return np.asarray(self.op.dot(self.op.left(ct).T))
        assert self.K is not None
        return np.asarray(self.K @ c)

    def fit(self, Y: NDArray[np.float64]) -> KernelRidgeLOO:
        """Choose the penalty per column by leave-one-out MSE and store the solution."""
        Y = Y.reshape(Y.shape[0], -1)
        m = Y.shape[1]
        U, s = self.U, self.s
        shrink = s[None, :] / (s[None, :] + self.lambdas[:, None])  # (g, r)
        # leverages of every penalty: h = h_fixed + (U * U) @ shrink', one product
        lev = self.h_fixed[:, None] + (U * U) @ shrink.T  # (n, g)
        inv_1mh = 1.0 / np.maximum(1.0 - lev, 1e-8)
        E = self._m(Y)  # residuals on the fixed design: y - fixed fit
        B = U.T @ E  # (r, m): coordinates of M y in the eigenbasis
        best = np.full(m, np.inf)
        choice = np.zeros(m, dtype=int)
        for lo in range(0, m, CHUNK):
            hi = min(m, lo + CHUNK)
            Ec, Bc = E[:, lo:hi], B[:, lo:hi]
            for g in range(self.lambdas.size):
                loo = (Ec - U @ (shrink[g][:, None] * Bc)) * inv_1mh[:, g : g + 1]
                mse = np.einsum("ij,ij->j", loo, loo) / loo.shape[0]
                better = mse < best[lo:hi]
                best[lo:hi][better] = mse[better]
                choice[lo:hi][better] = g
        inv = 1.0 / (s[:, None] + self.lambdas[choice][None, :])
        self.choice = choice
        self.loo_mse = best
        if self.F is not None:
            assert self.V is not None
            # primal weights w = F' c = V s^1/2 (s + lam)^-1 U' M y
            self.w = self.V @ (np.sqrt(s)[:, None] * inv * B)
            self.alpha = self.D_pinv @ Y - self.DpF @ self.w
            self._c: NDArray[np.float64] | None = None
            self._inv_b = inv * B
        else:
            # dual coefficients c = M U (s + lam)^-1 U' M y, column by column's own lam
            self._c = self._m(U @ (inv * B))
            self.alpha = self.D_pinv @ (Y - self._k(self._c))
        return self

    def cross_hat(
        self,
        D_a: NDArray[np.float64],
        W_a: NDArray[np.float64],
        rows: NDArray[np.intp] | None = None,
    ) -> NDArray[np.float64]:
        """Weight of each training row's own outcome in a prediction for that row,
        ``(n, n_columns)`` at each column's chosen penalty.

        The prediction of row ``i`` made from another design (its features under another
        arm) is ``f_a = D_a D^+ y + W_a (s + lam)^-1 U' M y`` for the training rows, with
        ``W_a = (K_a - D_a D^+ K) M U`` (``K_a``: kernel between the rows so recoded and the
        training rows; on the primal path ``W_a = (F_a - D_a D^+ F) V s^1/2``).  Its
        diagonal ``h_a(i)`` gives the exact leave-one-out prediction ``f_a(i) - h_a(i) e_i /
        (1 - h_ii)`` (``e_i`` the full fit's residual): leaving row ``i`` out equals refitting
        with ``y_i`` replaced by its own leave-one-out prediction.  With ``D_a = D`` and
        ``W_a = M U s`` this is the leverage ``h_ii``.  ``rows``: only these training rows
        (``D_a`` and ``W_a`` then hold those rows only).
        """
        U = self.mu()
        Dp = self.D_pinv
        if rows is not None:
            U, Dp = U[rows], Dp[:, rows]
        hfix = np.einsum("ij,ji->i", D_a, Dp)
        inv = 1.0 / (self.s[None, :] + self.lambdas[:, None])  # (g, r)
        h = hfix[:, None] + (W_a * U) @ inv.T  # (n, g)
        return np.asarray(h[:, self.choice])

    def own_w(self) -> NDArray[np.float64]:
        """``W`` of :meth:`cross_hat` for the training rows' own design (``M U s``)."""
        return np.asarray(self.mu() * self.s[None, :])

    def cross_w(
        self,
        D_a: NDArray[np.float64],
        KU_a: NDArray[np.float64],
        KU: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """``W_a`` of :meth:`cross_hat`.

        Primal path: ``KU_a`` is ``F_a V`` (the recoded rows' factor times the
        eigenvectors).  Dual path: ``KU_a`` is ``K_a M U`` and ``KU`` is ``K M U``.
        """
        if self.F is not None:
            assert self.V is not None
            DpFV = self.DpF @ self.V
            return np.asarray((KU_a - D_a @ DpFV) * np.sqrt(self.s)[None, :])
        assert KU is not None
        return np.asarray(KU_a - D_a @ (self.D_pinv @ KU))

    def mu(self) -> NDArray[np.float64]:
        """``M U`` (dual path; on the primal path ``U`` is already in the range of ``M``)."""
        return self.U if self.F is not None else self._m(self.U)

    @property
    def c(self) -> NDArray[np.float64]:
        """Dual coefficients ``(n, n_columns)`` (computed on demand on the primal path)."""
        if self._c is None:
            self._c = self._m(self.U @ self._inv_b)
        return self._c

    def predict(
        self,
        K_test: NDArray[np.float64],
        D_test: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """Predictions ``(n_test, n_columns)`` from test-by-train kernel and test design."""
        return np.asarray(K_test @ self.c + D_test @ self.alpha)

    def predict_factor(
        self,
        F_test: NDArray[np.float64],
        D_test: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """Predictions ``(n_test, n_columns)`` from the test rows' factor (primal path)."""
        return np.asarray(F_test @ self.w + D_test @ self.alpha)
