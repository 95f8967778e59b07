"""Supervised feature screening inside the cross-validation loop.

A screen scores every standardised feature by its association with the outcome *within
each arm*, after removing the unpenalised design (arm intercept, baseline score,
covariates) from the outcome: the score of feature ``j`` is the sum over arms of the
squared within-arm partial correlation of ``z_j`` with the outcome.  Features whose effect
differs between arms (treatment-by-feature interactions) score high under at least one
arm.  The top ``k`` features enter the ridge model; ``k`` is a hyper-parameter chosen, with
the penalty, by the exact leave-one-out MSE of the kernel ridge on the training rows
(over ``K_GRID`` plus "all features").

Everything here is fitted on the rows it is given, so in :func:`cross_validated_predictions
<brainmatch.selection.train.cross_validated_predictions>` it runs inside every outer
training fold.  Every target column (the real outcome and each permuted one) is screened
on its own, as the selected set depends on the outcome: the scores of all columns are one
matrix product, and the ridge fits of all columns at one ``k`` are batched
eigendecompositions (or thin SVDs when ``k`` is small).

Choosing ``k`` by leave-one-out on the rows that screened is optimistic for the inner
criterion (the screen saw the left-out row); that affects only which ``k`` is chosen.  The
outer CV, which tests on rows the screen never saw, stays unbiased.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection._ridge import LAMBDA_GRID
from brainmatch.selection.pipeline import ArmModels, LogisticArmModels

#: Candidate numbers of selected features (those below the number of features are used,
#: plus "all features").
K_GRID = (5, 10, 20, 50, 100)
#: Target columns solved together (bounds memory: chunk x n x n kernels).
CHUNK = 128
#: Folds of the inner CV that chooses ``k`` (screening redone in each).
INNER_FOLDS = 3
#: Default screening score (see :func:`screening_scores`).
SCORE = "sum"


def parse_select(select: str | int | None) -> str | int:
    """Normalise ``select``: ``"auto"``, ``"none"`` or a positive int."""
    if select is None:
        return "none"
    if isinstance(select, (int, np.integer)) and not isinstance(select, bool):
        if select < 1:
            raise BrainmatchInputError(f"select={select}: must be at least 1")
        return int(select)
    text = str(select).strip().lower()
    if text in ("auto", "none"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise BrainmatchInputError(
            f"select={select!r}: expected auto, none or a number of features"
        ) from None
    return parse_select(value)


def k_candidates(select: str | int, p: int) -> list[int]:
    """Numbers of features to try (``p`` means all features)."""
    if select == "auto":
        return [k for k in K_GRID if k < p] + [p]
    if select == "none":
        return [p]
    return [min(int(select), p)]


def _orth(A: NDArray[np.float64]) -> NDArray[np.float64]:
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    keep = s > max(A.shape) * np.finfo(float).eps * (s[0] if s.size else 0.0)
    return np.asarray(U[:, keep])


def screening_scores(
    Z: NDArray[np.float64],
    C: NDArray[np.float64],
    t: NDArray[np.intp],
    n_arms: int,
    Y: NDArray[np.float64],
    score: str | None = None,
) -> NDArray[np.float64]:
    """Screening score of every feature for every target column, ``(p, n_columns)``.

    Parameters
    ----------
    Z : ndarray (n, p)
        Standardised features.
    C : ndarray (n, q)
        Covariate design (baseline and covariates), removed within each arm together with
        the arm's intercept.
    t : ndarray (n,)
        Arm index of each row.
    n_arms : int
    Y : ndarray (n, m)
        Target columns.
    score : {"sum", "contrast"}, optional
        ``sum``: sum over arms of the squared within-arm partial correlations ``r_a`` of the
        feature with the outcome (prognostic and predictive features score high).
        ``contrast``: ``sum_a (r_a - mean(r))^2``, the spread of the correlation across
        arms (only treatment-by-feature interactions score high).  Default :data:`SCORE`.
    """
    score = SCORE if score is None else score
    p, m = Z.shape[1], Y.shape[1]
    r = np.zeros((n_arms, p, m))
    for a in range(n_arms):
        rows = np.flatnonzero(t == a)
        if rows.size < 3:
            continue
        Q = _orth(np.column_stack([np.ones(rows.size), C[rows]]))
        Ya = Y[rows]
        R = Ya - Q @ (Q.T @ Ya)
        Za = Z[rows]
        zz = (Za**2).sum(axis=0) - ((Q.T @ Za) ** 2).sum(axis=0)
        rr = (R**2).sum(axis=0)
        num = Za.T @ R
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = num / np.sqrt(zz[:, None] * rr[None, :])
        ok = (zz > 1e-10 * rows.size)[:, None] & (rr > 0)[None, :]
        r[a] = np.where(ok & np.isfinite(corr), corr, 0.0)
    if score == "sum":
        return np.asarray((r**2).sum(axis=0))
    if score == "contrast":
        return np.asarray(((r - r.mean(axis=0)) ** 2).sum(axis=0))
    raise BrainmatchInputError(f"screening score {score!r}: expected sum or contrast")


def _top(scores: NDArray[np.float64], kmax: int) -> NDArray[np.intp]:
    """Indices ``(n_columns, kmax)`` of the best features of each column, best first."""
    neg = -np.ascontiguousarray(scores.T)  # (m, p): partition along contiguous rows
    part = np.argpartition(neg, kmax - 1, axis=1)[:, :kmax]
    vals = np.take_along_axis(neg, part, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.asarray(np.take_along_axis(part, order, axis=1))


def _batched_ridge(
    Y: NDArray[np.float64],
    D: NDArray[np.float64],
    *,
    Phi: NDArray[np.float64] | None = None,
    K: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Ridge with unpenalised ``D``, one feature map per column, penalty by exact LOO.

    Column ``i`` of ``Y`` is regressed on ``Phi[i]`` (``(n, q)``, used when ``q < n``) or
    on kernel ``K[i]`` (``(n, n)``); the penalty grid is :data:`LAMBDA_GRID` relative to
    the mean eigenvalue of ``M K M``, as in :class:`~brainmatch.selection._ridge.KernelRidgeLOO`.

    Returns
    -------
    loo_mse : ndarray (m,)
        Leave-one-out MSE at the chosen penalty.
    c : ndarray (n, m)
        Dual coefficients (feature weights are ``Phi.T @ c``).
    alpha : ndarray (q_D, m)
        Coefficients of the unpenalised design.
    """
    n = D.shape[0]
    D_pinv = np.linalg.pinv(D)
    M = np.eye(n) - D @ D_pinv
    h_fixed = np.einsum("ij,ji->i", D, D_pinv)
    dof = max(1, n - np.linalg.matrix_rank(D))
    if Phi is not None:
        PhiM = M @ Phi
        s, V = np.linalg.eigh(np.swapaxes(PhiM, 1, 2) @ PhiM)  # (q, q): cheaper than SVD
        s = np.clip(s, 0.0, None)
        keep = s > 1e-10 * np.maximum(s.max(axis=1, keepdims=True), 1e-300)
        U = (PhiM @ V) / np.sqrt(np.where(keep, s, 1.0))[:, None, :]
        U = U * keep[:, None, :]
        s = np.where(keep, s, 0.0)
    else:
        assert K is not None
        S = M @ K @ M
        S = (S + np.swapaxes(S, 1, 2)) / 2
        s, U = np.linalg.eigh(S)
        s = np.clip(s, 0.0, None)
    total = s.sum(axis=1)
    scale = np.where(total > 0, total / dof, 1.0)
    MY = M @ Y
    # U' M y (directions of zero spectrum drop out), batched matrix products
    UtY = (np.swapaxes(U, 1, 2) @ MY.T[:, :, None])[:, :, 0]
    U2 = U**2
    # every penalty of the grid at once: (m, r, g) shrinkage, one batched product each
    lv = scale[:, None] * LAMBDA_GRID[None, :]  # (m, g)
    shrink = s[:, :, None] / (s[:, :, None] + lv[:, None, :])  # (m, r, g)
    fit = U @ (shrink * UtY[:, :, None])  # (m, n, g)
    h = h_fixed[None, :, None] + U2 @ shrink
    loo = (MY.T[:, :, None] - fit) / np.maximum(1.0 - h, 1e-8)
    mse = (loo**2).mean(axis=1)  # (m, g)
    g_best = np.argmin(mse, axis=1)  # first minimum, as the sequential rule
    cols = np.arange(mse.shape[0])
    best = mse[cols, g_best]
    lam = lv[cols, g_best]
    c = M @ (U @ (UtY / (s + lam[:, None]))[:, :, None])[:, :, 0].T
    if Phi is not None:
        w = np.swapaxes(Phi, 1, 2) @ c.T[:, :, None]
        Kc = (Phi @ w)[:, :, 0].T
    else:
        assert K is not None
        Kc = (K @ c.T[:, :, None])[:, :, 0].T
    alpha = D_pinv @ (Y - Kc)
    return best, c, alpha


def _fit_k(
    model: str,
    Z: NDArray[np.float64],
    C: NDArray[np.float64],
    t: NDArray[np.intp],
    k: int,
    Y: NDArray[np.float64],
    index: NDArray[np.intp],
) -> tuple[NDArray[np.float64], ...]:
    """LOO SSE ``(m,)`` and per-arm coefficients ``(m, k, kk)`` of every column on its
    own features ``index[column]`` (``(m, kk)``)."""
    kk = index.shape[1]
    n = Z.shape[0]
    m = Y.shape[1]
    sse = np.zeros(m)
    coef = np.zeros((m, k, kk))
    icpt = np.zeros((m, k))
    cov = np.zeros((m, k, C.shape[1]))
    onehot = np.eye(k)[t]
    for lo in range(0, m, CHUNK):
        cols = slice(lo, min(m, lo + CHUNK))
        idx = index[cols]  # (b, kk)
        Zs = np.transpose(Z[:, idx], (1, 0, 2))  # (b, n, kk)
        Yc = Y[:, cols]
        if model == "per-arm":
            for a in range(k):
                rows = np.flatnonzero(t == a)
                D = np.column_stack([np.ones(rows.size), C[rows]])
                Za = Zs[:, rows]
                if kk < rows.size:
                    mse, c, alpha = _batched_ridge(Yc[rows], D, Phi=Za / np.sqrt(kk))
                else:
                    G = Za @ np.swapaxes(Za, 1, 2) / kk
                    mse, c, alpha = _batched_ridge(Yc[rows], D, K=G)
                sse[cols] += rows.size * mse
                coef[cols, a] = np.einsum("bnk,nb->bk", Za, c) / kk
                icpt[cols, a] = alpha[0]
                cov[cols, a] = alpha[1:].T
        else:
            D = np.column_stack([onehot, C])
            if kk * (k + 1) < n:
                Phi = np.concatenate(
                    [Zs] + [Zs * onehot[None, :, a, None] for a in range(k)], axis=2
                ) / np.sqrt(kk)
                mse, c, alpha = _batched_ridge(Yc, D, Phi=Phi)
            else:
                G = Zs @ np.swapaxes(Zs, 1, 2) / kk
                same = (t[:, None] == t[None, :]).astype(float)
                mse, c, alpha = _batched_ridge(Yc, D, K=G * (1.0 + same)[None])
            sse[cols] = n * mse
            for a in range(k):
                w = c * (1.0 + (t == a))[:, None]
                coef[cols, a] = np.einsum("bnk,nb->bk", Zs, w) / kk
                icpt[cols, a] = alpha[a]
                cov[cols, a] = alpha[k:].T
    return sse, coef, icpt, cov


class ScreenedArmModels:
    """Screen features per target column, choose ``k`` by LOO, fit the arm models.

    Parameters
    ----------
    model : {"interaction", "per-arm"}
    select : "auto" or int
        ``auto``: ``k`` from :data:`K_GRID` (below the number of features) or all features,
        chosen per column by leave-one-out MSE; an int: always that many features.
    """

    def __init__(self, model: str = "interaction", select: str | int = "auto") -> None:
        self.model = model
        self.select = select

    def fit(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
    ) -> ScreenedArmModels:
        """Fit every column of ``Y`` (``(n, m)``) on standardised features ``Z``."""
        p = Z.shape[1]
        m = Y.shape[1]
        self.n_arms_, self.p_ = k, p
        cands = k_candidates(self.select, p)
        if len(cands) > 1:
            sse = self._inner_cv(Z, C, t, k, Y, cands)
            self.k_ = np.array(cands)[np.argmin(sse, axis=0)]
        else:
            self.k_ = np.full(m, cands[0])
        small = sorted({int(kk) for kk in self.k_ if kk < p})
        self.full_: ArmModels | None = None
        if (self.k_ == p).any():
            self.full_ = ArmModels(self.model).fit(Z, C, t, k, Y)
        kmax = max(small) if small else 0
        self.kmax_ = kmax
        self.coef_ = np.zeros((m, k, kmax))
        self.intercept_ = np.zeros((m, k))
        self.cov_coef_ = np.zeros((m, k, C.shape[1]))
        self.index_ = np.zeros((m, kmax), dtype=np.intp)
        self.scores_: NDArray[np.float64] | None = None
        if small:
            scores = screening_scores(Z, C, t, k, Y)
            self.index_ = _top(scores, kmax)
            if m == 1:
                self.scores_ = scores[:, 0]
            for kk in small:
                cols = np.flatnonzero(self.k_ == kk)
                _, coef, icpt, cov = _fit_k(
                    self.model, Z, C, t, k, Y[:, cols], self.index_[cols, :kk]
                )
                self.coef_[cols, :, :kk] = coef
                self.intercept_[cols] = icpt
                self.cov_coef_[cols] = cov
        return self

    def _inner_cv(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        cands: list[int],
    ) -> NDArray[np.float64]:
        """Inner-CV squared error ``(len(cands), m)`` of each ``k``, screening redone per fold.

        Leave-one-out after screening on the same rows would favour large ``k`` (the screen
        saw the left-out row and keeps noise features that happen to fit it), so ``k`` is
        chosen by an inner stratified k-fold whose training rows alone are screened; the
        penalty within it is still chosen by exact leave-one-out.
        """
        p = Z.shape[1]
        small = [kk for kk in cands if kk < p]
        kmax = max(small) if small else 0
        sse = np.zeros((len(cands), Y.shape[1]))
        rng = np.random.default_rng(12345)
        fold = np.zeros(t.size, dtype=int)
        for a in range(k):
            rows = np.flatnonzero(t == a)
            fold[rows[rng.permutation(rows.size)]] = np.arange(rows.size) % INNER_FOLDS
        for f in range(INNER_FOLDS):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            Ztr, Ctr, ttr, Ytr = Z[tr], C[tr], t[tr], Y[tr]
            Zte, Cte, tte = Z[te], C[te], t[te]
            if p in cands:
                P = ArmModels(self.model).fit(Ztr, Ctr, ttr, k, Ytr).predict(Zte, Cte)
                got = P[np.arange(te.size), tte]  # (n_te, m)
                sse[cands.index(p)] += ((Y[te] - got) ** 2).sum(axis=0)
            if not small:
                continue
            index = _top(screening_scores(Ztr, Ctr, ttr, k, Ytr), kmax)
            for kk in small:
                _, coef, icpt, cov = _fit_k(self.model, Ztr, Ctr, ttr, k, Ytr, index[:, :kk])
                Zs = np.transpose(Zte[:, index[:, :kk]], (1, 0, 2))  # (m, n_te, kk)
                cr = np.transpose(coef[:, tte], (0, 2, 1))  # (m, kk, n_te) per test row's arm
                got = (
                    np.einsum("mnk,mkn->nm", Zs, cr)
                    + icpt[:, tte].T
                    + np.einsum("nq,mnq->nm", Cte, cov[:, tte])
                )
                sse[cands.index(kk)] += ((Y[te] - got) ** 2).sum(axis=0)
        return sse

    def predict(self, Z: NDArray[np.float64], C: NDArray[np.float64]) -> NDArray[np.float64]:
        """Predicted outcome ``(n_test, k, n_columns)`` under every arm."""
        m = self.k_.size
        out = np.zeros((Z.shape[0], self.n_arms_, m))
        use_full = self.k_ == self.p_
        if use_full.any():
            assert self.full_ is not None
            out[:, :, use_full] = self.full_.predict(Z, C)[:, :, use_full]
        sel = np.flatnonzero(~use_full)
        if sel.size:
            Zs = Z[:, self.index_[sel]]  # (n_test, b, kmax)
            out[:, :, sel] = (
                np.einsum("nbk,bak->nab", Zs, self.coef_[sel])
                + self.intercept_[sel].T[None]
                + np.einsum("nq,baq->nab", C, self.cov_coef_[sel])
            )
        return out

    def primal(self, column: int = 0) -> dict[str, NDArray[np.float64]]:
        """Dense per-arm coefficients of one column (zero outside its selected features)."""
        if self.k_[column] == self.p_:
            assert self.full_ is not None
            return self.full_.primal(column)
        kk = int(self.k_[column])
        coef = np.zeros((self.n_arms_, self.p_))
        coef[:, self.index_[column, :kk]] = self.coef_[column, :, :kk]
        return {
            "coef": coef,
            "intercept": self.intercept_[column].copy(),
            "cov_coef": self.cov_coef_[column].copy(),
        }

    def selected(self, column: int = 0) -> NDArray[np.intp]:
        """Indices of the features used by one column (all when ``k`` = all), best first."""
        kk = int(self.k_[column])
        if kk == self.p_:
            return np.arange(self.p_)
        return np.asarray(self.index_[column, :kk])

    def penalties(self) -> list[float]:
        """Chosen penalty of the all-feature solvers (empty when ``k`` < all was chosen)."""
        if self.full_ is None or self.k_[0] != self.p_:
            return []
        return self.full_.penalties()


def make_arm_models(
    model: str, select: str | int, binary: bool = False
) -> ArmModels | ScreenedArmModels | LogisticArmModels:
    """The potential-outcome model of one training set, with or without screening.

    A binary outcome with the ``interaction`` model and no screening gets the
    ridge-logistic model (:class:`~brainmatch.selection.pipeline.LogisticArmModels`).
    """
    if binary and model == "interaction" and select == "none":
        return LogisticArmModels()
    if select == "none":
        return ArmModels(model)
    return ScreenedArmModels(model, select)
