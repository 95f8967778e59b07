"""Supervised feature screening inside the cross-validation loop.

A screen scores every standardised feature by its association with the outcome *within
each arm*, after removing the unpenalised design (arm intercept, baseline score,
covariates) from the outcome: the score of feature ``j`` is the sum over arms of the
squared within-arm partial correlation of ``z_j`` with the outcome.  Features whose effect
differs between arms (treatment-by-feature interactions) score high under at least one
arm.  The top ``k`` features enter the ridge model.

``select="auto"`` (the default of the ridge models for a continuous outcome) chooses, per
target column, between all features and the top ``k`` of :data:`K_GRID`, from each
candidate's out-of-sample predictions under every arm for the training rows:

* all features: the ridge of :class:`~brainmatch.selection.pipeline.ArmModels`, whose
  exact leave-one-out predictions under every arm cost one product per arm beyond the fit
  (:meth:`~brainmatch.selection.pipeline.ArmModels.loo_predict`; honest: nothing was
  selected on the rows);
* the top ``k``: an inner :data:`INNER_FOLDS`-fold CV whose training parts are screened
  again (leave-one-out after screening on the same rows would favour large ``k``: the
  screen saw the left-out row); within it the penalty is chosen by GCV;
* with at most :data:`RBF_MAX_P` features, the ridge on random Fourier features of an RBF
  kernel (:mod:`brainmatch.selection.fourier`, non-linear effects), again by exact
  leave-one-out; it must beat the best linear candidate by one standard error of the
  paired per-row difference of the criterion;
* with more than ``HINGE_MIN_P`` and at most ``HINGE_MAX_P`` features, the same
  all-features and screened candidates on every feature and three hinge functions of it
  (:mod:`brainmatch.selection.hinge`, additive threshold effects), when every arm has at
  least :data:`HINGE_MIN_ARM` rows, under the same one-standard-error rule;
* with 2 to :data:`PRODUCT_MAX_P` features, screened candidates on every feature and every
  pairwise product of two (:mod:`brainmatch.selection.product`, effect modifiers that act
  jointly), when every arm has at least :data:`PRODUCT_MIN_ARM` rows and the basis at most
  :data:`PRODUCT_MAX_CELLS` cells, under the same rule.

The criterion (:data:`CRITERION`) is the treatment-effect error (the default): the doubly
robust pseudo-outcomes of every arm (:func:`dr_pseudo_outcomes`; nuisance: the candidate
with the lowest outcome error) against each candidate's predicted contrasts between arms.
The alternative, the outcome's error under each row's own arm (``"mse"``), rewards a
screen that keeps the few prognostic features and drops many weak treatment-by-feature
effects: in the dense rows of the benchmark the effect criterion does far better (41 of 54
grid rows meet the target against 34, ``docs/train.md``).  With p >> n its permutation
test is valid under the re-randomisation null (the default there), not under a
Freedman-Lane null with a ridge reduced model.

Everything here is fitted on the rows it is given, so in :func:`cross_validated_predictions
<brainmatch.selection.train.cross_validated_predictions>` it runs inside every outer
training fold.  Every target column (the real outcome and each permuted one) is screened
on its own, as the selected set depends on the outcome: the scores of all columns are one
matrix product, and the ridge fits of all columns at one ``k`` are solved from per-arm
moments with one small eigendecomposition per column (:func:`_fit_k`), so the cost grows
linearly in the number of patients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection import _logistic
from brainmatch.selection._ridge import LAMBDA_GRID
from brainmatch.selection.fourier import FourierArmModels
from brainmatch.selection.hinge import HingeBasis, feature_of
from brainmatch.selection.pipeline import ArmModels, LogisticArmModels
from brainmatch.selection.product import ProductBasis, feature_pairs, n_columns

#: Candidate numbers of selected features (those below the number of features are used,
#: plus "all features").
K_GRID = (5, 10, 20, 50, 100)
#: Target columns solved together (bounds memory: chunk x r x r moments).
CHUNK = 128
#: Largest union of screened features whose per-arm moments are computed once per fit.
MOMENT_MAX = 3000
#: ... when their Gram matrix costs at most this many times the columns' own blocks
#: (else each column's block is computed from its gathered features, :class:`_Moments`).
GATHER_FACTOR = 4
#: Gathered feature values held at once by that path (columns x features x rows: 32 MB).
GATHER_CELLS = 4_000_000
#: Folds of the inner CV that chooses ``k`` (screening redone in each).
INNER_FOLDS = 5
#: Default screening score (see :func:`screening_scores`).
SCORE = "sum"
#: What chooses between all features and the screens: ``"dr"`` (default), the doubly
#: robust error of the predicted treatment effects (:func:`dr_pseudo_outcomes`), or
#: ``"mse"``, the error of the predicted outcome under the row's own arm (cheaper: own-arm
#: predictions only).
CRITERION = "dr"
#: Nuisance of the doubly robust pseudo-outcomes: ``"best"``, the candidate with the lowest
#: outcome error, or ``"full"``, the all-features ridge.
NUISANCE = "best"
#: A screened number of features replaces the all-features ridge only when it beats it
#: by this many standard errors of the paired per-row difference of the criterion (the
#: one-standard-error rule the non-linear families already follow; 0: the lowest
#: criterion wins).  With 0, small trials chose a screen on noise (2 seeds, n = 150,
#: p = 200, 4 arms: sparse 0.13, dense 0.07 against the plain ridge's 0.17 and 0.13;
#: p = 2000, non-linear, 4 arms: -0.44 at n = 150, -0.20 at n = 400 against -0.13 and
#: -0.08); with 1 they recover 0.18, 0.13, -0.13 and -0.12 and every row with n >= 400
#: and p = 200 keeps its cell (``docs/train.md``).
SCREEN_SE = 1.0
#: ``select="auto"`` also offers the ridge on random Fourier features of an RBF kernel
#: (:mod:`brainmatch.selection.fourier`, non-linear effects) when there are at most this
#: many features (over hundreds of features the isotropic kernel learned nothing in the
#: benchmark, ``docs/train.md``).
RBF_MAX_P = 50
#: ``select="auto"`` offers, with more than ``HINGE_MIN_P`` (where the RBF candidate
#: stops) and at most ``HINGE_MAX_P`` features, the screened ridges on every feature and
#: three hinges of it (:mod:`brainmatch.selection.hinge`: additive threshold effects among
#: many features).
HINGE_MIN_P, HINGE_MAX_P = 50, 200
#: Largest screened number of hinge-basis columns offered (besides all of them).
HINGE_K_MAX = 50
#: The hinge candidates need at least this many training rows in every arm: below it
#: the basis of ``4 p`` columns was chosen on noise despite the one-standard-error rule
#: (p = 200, 2 seeds: n = 150 dense 0.29 -> 0.17, n = 400 with 4 arms dense 0.28 -> 0.22;
#: ``docs/train.md``).
HINGE_MIN_ARM = 100
#: ``select="auto"`` offers, with 2 to ``PRODUCT_MAX_P`` features, the screened ridges on
#: every feature and every pairwise product of two (:mod:`brainmatch.selection.product`:
#: ``p (p - 1) / 2`` products, 19,900 at p = 200).
PRODUCT_MAX_P = 200
#: Largest screened number of product-basis columns offered; all of them are offered too
#: when the basis has at most ``PRODUCT_ALL_MAX`` columns (p <= 13).
PRODUCT_K_MAX, PRODUCT_ALL_MAX = 50, 100
#: The product candidates need at least this many training rows in every arm (fewer
#: than the hinges: with 30, 2 seeds, n = 150, p = 10, non-linear, 2 arms rose from 0.12
#: to 0.31 and n = 400, 4 arms, non-linear from -0.18 to 0.27 (p = 10) and -0.23 to
#: -0.12 (p = 200), and no other row at n = 150 or with 4 arms at n = 400 changed;
#: ``docs/train.md``).
PRODUCT_MIN_ARM = 50
#: ... and a basis of at most this many cells (training rows x columns; 6e7 float64 is
#: 480 MB: n = 1500 x p = 200 has 3.0e7, n = 10,000 allows p <= 108), which bounds the
#: memory of the basis and of its inner-CV copies.
PRODUCT_MAX_CELLS = 60_000_000
#: Markers of the RBF, hinge and product candidates in the candidate lists of
#: :meth:`ScreenedArmModels.fit` (minus the marker is the family's number in
#: :meth:`ScreenedArmModels._choose`; 0: linear).
RBF, HINGE, PRODUCT = -1, -2, -3
#: Names of the basis families in labels and ``select`` values (``"hinge:<n>"``).
BASIS_NAMES = {HINGE: "hinge", PRODUCT: "product"}
#: Storage of the candidates' out-of-sample predictions (candidates x rows x arms x columns).
PRED_DTYPE = np.float32


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


def default_select(
    select: str | int | None, model: str, binary: bool, width: int | None = None
) -> str | int:
    """Resolve ``select=None`` (the default) for a model and outcome type.

    ``auto`` for the ridge models (``interaction``, ``per-arm``) of a continuous outcome:
    the inner CV then chooses between all features (the plain ridge) and the screened
    ridges, so the default adapts to sparse, high-dimensional data without giving up the
    plain ridge where it is best.  For a 0/1 outcome the ``interaction`` model is the
    ridge-logistic model (``none``: it has no screened form) wherever its design fits,
    i.e. ``width`` (columns of the logistic design: arms x (features + 1) + covariates)
    is at most :data:`~brainmatch.selection._logistic.MAX_WIDTH`; beyond it the model is
    a clipped linear-probability ridge anyway, and then screened (``auto``) like a
    score's (``width=None``: ``none``).  ``none`` for the other learners and models,
    which select features themselves.  An explicit value is returned normalised.
    """
    if select is not None:
        return parse_select(select)
    if model in ("interaction", "per-arm") and not binary:
        return "auto"
    if binary and model == "interaction" and width is not None and width > _logistic.MAX_WIDTH:
        return "auto"
    return "none"


def k_candidates(select: str | int, p: int) -> list[int]:
    """Numbers of features to try (``p`` means all features).

    ``auto`` screens to fewer than half of the features (``2 k < p``): with fewer features
    than ``2 k`` the ridge's own shrinkage does as well as a screen (n = 150, p = 10, 5
    seeds: the plain ridge recovered 0.95 of the oracle's gain, screening to 5 of 10
    features 0.94), and a screen there only adds the variance of its choice.
    """
    if select == "auto":
        return [k for k in K_GRID if 2 * k < p] + [p]
    if select == "none":
        return [p]
    return [min(int(select), p)]


def offers_hinges(p: int, smallest_arm: int) -> bool:
    """Whether ``select="auto"`` offers the hinge basis to a training set of ``p``
    features whose smallest arm has ``smallest_arm`` rows."""
    return bool(smallest_arm >= HINGE_MIN_ARM and HINGE_MIN_P < p <= HINGE_MAX_P)


def offers_products(n: int, p: int, smallest_arm: int) -> bool:
    """Whether ``select="auto"`` offers the product basis to a training set of ``n`` rows
    and ``p`` features whose smallest arm has ``smallest_arm`` rows."""
    return bool(
        smallest_arm >= PRODUCT_MIN_ARM
        and 2 <= p <= PRODUCT_MAX_P
        and n * n_columns(p) <= PRODUCT_MAX_CELLS
    )


def basis_candidates(n: int, p: int, smallest_arm: int) -> list[tuple[int, list[int]]]:
    """Columns and screened numbers of columns of every basis family ``select="auto"``
    offers to such a training set (the permutation budget's cost model)."""
    out = []
    if offers_hinges(p, smallest_arm):
        out.append((4 * p, [kk for kk in k_candidates("auto", 4 * p) if kk <= HINGE_K_MAX]))
    if offers_products(n, p, smallest_arm):
        cols = n_columns(p)
        out.append((cols, [kk for kk in k_candidates("auto", cols) if kk <= PRODUCT_K_MAX]))
    return out


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
        QZ = Q.T @ Za
        zz = np.einsum("ij,ij->j", Za, Za) - np.einsum("ij,ij->j", QZ, QZ)
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


def dr_pseudo_outcomes(
    mu: NDArray[np.float64], t: NDArray[np.intp], Y: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Doubly robust pseudo-outcomes of every arm, centred over arms, ``(n, k, m)``.

    ``Gamma_ia = mu_a(x_i) + 1(t_i = a) (y_i - mu_a(x_i)) / pi_a`` (augmented inverse
    probability weighting with the arms' shares ``pi_a`` as the randomised propensities),
    minus its mean over arms.  ``mu`` must be out of sample for row ``i``.  For a candidate
    whose predictions ``f`` are also out of sample, ``sum_i sum_a (Gamma_ia - f_a(x_i))^2``
    (both centred over arms) estimates, up to a constant shared by every candidate, the
    squared error of the candidate's treatment-effect contrasts without bias whatever the
    quality of ``mu`` (Kennedy 2023; Schuler et al. 2018 for this use in model
    selection); a better ``mu`` only lowers its variance.  For two arms it is half the
    usual DR-learner loss.  (The screen takes as ``mu`` the candidate with the lowest
    outcome error, so ``y_i`` enters ``mu`` only through that choice.)
    """
    n, k, _ = mu.shape
    rows = np.arange(n)
    pi = np.maximum(np.bincount(t, minlength=k) / n, 1.0 / n)
    G = mu.copy()
    G[rows, t] += (Y - mu[rows, t]) / pi[t][:, None]
    return np.asarray(G - G.mean(axis=1, keepdims=True))


def _dr_residual(Gc: NDArray[np.float64], pred: NDArray[np.float64]) -> NDArray[np.float64]:
    """``Gc`` minus ``pred`` centred over arms (both ``(n, k, m)``)."""
    return np.asarray(Gc - (pred - pred.mean(axis=1, keepdims=True)))


def _dr_loss(Gc: NDArray[np.float64], pred: NDArray[np.float64]) -> NDArray[np.float64]:
    """``sum_i sum_a (Gc - pred centred over arms)^2`` per column (``pred``: (n, k, m))."""
    d = _dr_residual(Gc, pred)
    return np.asarray(np.einsum("nam,nam->m", d, d))


def _dr_row_loss(Gc: NDArray[np.float64], pred: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-row terms ``(n, m)`` of :func:`_dr_loss`."""
    d = _dr_residual(Gc, pred)
    return np.asarray(np.einsum("nam,nam->nm", d, d))


def _top(scores: NDArray[np.float64], kmax: int) -> NDArray[np.intp]:
    """Indices ``(n_columns, kmax)`` of the best features of each column, best first."""
    neg = -np.ascontiguousarray(scores.T)  # (m, p): partition along contiguous rows
    part = np.argpartition(neg, kmax - 1, axis=1)[:, :kmax]
    vals = np.take_along_axis(neg, part, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.asarray(np.take_along_axis(part, order, axis=1))


def _solve_gcv(
    A: NDArray[np.float64],
    PD: NDArray[np.float64],
    DDp: NDArray[np.float64],
    Py: NDArray[np.float64],
    Dy: NDArray[np.float64],
    yy: NDArray[np.float64],
    n: int,
    rank_d: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Batched ridge from moments, penalty per column by generalised cross-validation.

    For each column ``b``: penalised columns ``Phi`` with ``A[b] = Phi'Phi``, ``PD[b] =
    Phi'D``, ``Py[b] = Phi'y``; unpenalised ``D`` with ``DDp = (D'D)^+``, ``Dy[b] = D'y``,
    ``yy[b] = y'y``.  With ``M`` the residual maker of ``D``, ``Phi'M Phi = V s V'`` and
    ``g = V'Phi'M y``: the fit at penalty ``lam`` has ``RSS = y'My - sum g^2 (s + 2 lam) /
    (s + lam)^2`` and ``df = rank(D) + sum s / (s + lam)``; GCV (Golub, Heath & Wahba
    1979) is ``n RSS / (n - df)^2``, over :data:`LAMBDA_GRID` times the mean eigenvalue
    (as :class:`~brainmatch.selection._ridge.KernelRidgeLOO`).  No ``n``-sized array is
    formed, so the cost per column is one ``r x r`` eigendecomposition.

    Returns
    -------
    gcv_sse : ndarray (m,)
        ``n`` times the GCV criterion at the chosen penalty.
    w : ndarray (m, r)
        Weights of ``Phi``.
    alpha : ndarray (m, q_D)
        Coefficients of ``D``.
    """
    Amm = A - PD @ DDp @ np.swapaxes(PD, 1, 2)
    Amm = (Amm + np.swapaxes(Amm, 1, 2)) / 2
    g = Py - np.einsum("brq,bq->br", PD, Dy @ DDp)
    yMy = np.maximum(yy - np.einsum("bq,qs,bs->b", Dy, DDp, Dy), 0.0)
    s, V = np.linalg.eigh(Amm)
    s = np.clip(s, 0.0, None)
    keep = s > 1e-10 * np.maximum(s.max(axis=1, keepdims=True), 1e-300)
    s = np.where(keep, s, 0.0)
    gt = np.einsum("brk,br->bk", V, g) * keep
    dof = max(1, n - rank_d)
    total = s.sum(axis=1)
    scale = np.where(total > 0, total / dof, 1.0)
    lv = scale[:, None] * LAMBDA_GRID[None, :]  # (m, G)
    sl = s[:, :, None] + lv[:, None, :]  # (m, r, G)
    rss = yMy[:, None] - ((gt**2)[:, :, None] * (s[:, :, None] + 2 * lv[:, None, :]) / sl**2).sum(
        axis=1
    )
    df = rank_d + (s[:, :, None] / sl).sum(axis=1)
    gcv = n * np.maximum(rss, 0.0) / np.maximum(n - df, 1e-8) ** 2
    g_best = np.argmin(gcv, axis=1)
    cols = np.arange(s.shape[0])
    lam = lv[cols, g_best]
    w = np.einsum("brk,bk->br", V, np.where(keep, gt / (s + lam[:, None]), 0.0))
    alpha = (Dy - np.einsum("brq,br->bq", PD, w)) @ DDp
    return n * gcv[cols, g_best], w, alpha


class _Moments:
    """Per-arm moments (``Z'Z``, ``Z'1``, ``Z'C``, ``Z'Y``) of the features the columns use.

    Computed once for the union of every column's features (shared by every column and
    every ``k`` of the grid) when that union is small: at most :data:`MOMENT_MAX` features
    and a Gram matrix no dearer than :data:`GATHER_FACTOR` times the columns' own blocks
    (``union^2 <= GATHER_FACTOR m kk^2`` per row).  Otherwise (a basis of thousands of
    columns, where every permuted outcome screens other ones) each column's own ``kk x
    kk`` block is computed from its gathered features.
    """

    def __init__(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        index: NDArray[np.intp],
    ) -> None:
        self.Z, self.C, self.Y = Z, C, Y
        self.rows = [np.flatnonzero(t == a) for a in range(k)]
        union = np.unique(index)
        m, kk = index.shape
        self.cached = (
            union.size <= MOMENT_MAX and union.size**2 <= GATHER_FACTOR * max(m, 1) * kk**2
        )
        if self.cached:
            self.union = union
            self.parts = [self._arm(r, union, Y) for r in self.rows]
        else:  # each arm's rows of the used features, one feature per row (gathers)
            self.union = union
            self.ZT = [np.ascontiguousarray(Z[np.ix_(r, union)].T) for r in self.rows]

    def _arm(
        self, r: NDArray[np.intp], union: NDArray[np.intp], Y: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], ...]:
        Zu = self.Z[np.ix_(r, union)]
        return Zu.T @ Zu, Zu.sum(axis=0), Zu.T @ self.C[r], Zu.T @ Y[r]

    def chunk(
        self, cols: NDArray[np.intp], idx: NDArray[np.intp]
    ) -> tuple[list[NDArray[np.float64]], ...]:
        """Gathered moments of columns ``cols`` on their features ``idx`` ``(b, kk)``."""
        b, kk = idx.shape
        local = np.searchsorted(self.union, idx)
        if not self.cached:
            q = self.C.shape[1]
            Gs = [np.empty((b, kk, kk)) for _ in self.rows]
            zs = [np.empty((b, kk)) for _ in self.rows]
            ZC = [np.empty((b, kk, q)) for _ in self.rows]
            ZY = [np.empty((b, kk)) for _ in self.rows]
            for a, (r, ZT) in enumerate(zip(self.rows, self.ZT, strict=True)):
                step = max(1, GATHER_CELLS // max(1, kk * r.size))  # bounds F's memory
                for lo in range(0, b, step):
                    sl = slice(lo, min(b, lo + step))
                    F = ZT[local[sl]]  # (columns, kk, rows of the arm)
                    Gs[a][sl] = F @ np.swapaxes(F, 1, 2)
                    zs[a][sl] = F.sum(axis=2)
                    ZC[a][sl] = F @ self.C[r]
                    ZY[a][sl] = np.einsum("bkn,nb->bk", F, self.Y[np.ix_(r, cols[sl])])
            return Gs, zs, ZC, ZY
        parts = self.parts
        ycols = cols
        ii, jj = local[:, :, None], local[:, None, :]
        bidx = np.arange(b)[:, None]
        Gs = [G[ii, jj] for G, _, _, _ in parts]  # (b, kk, kk)
        zs = [z[local] for _, z, _, _ in parts]  # (b, kk)
        ZC = [zc[local] for _, _, zc, _ in parts]  # (b, kk, q)
        ZY = [zy[:, ycols][local, bidx] for _, _, _, zy in parts]  # (b, kk)
        return Gs, zs, ZC, ZY


def _fit_k(
    model: str,
    mom: _Moments,
    k: int,
    cols: NDArray[np.intp],
    index: NDArray[np.intp],
) -> tuple[NDArray[np.float64], ...]:
    """GCV SSE ``(m,)`` and per-arm coefficients ``(m, k, kk)`` of target columns ``cols``
    of ``mom.Y``, each on its own features ``index[i]`` (``(m, kk)``).

    The ridge of :class:`~brainmatch.selection.pipeline.ArmModels` (the same design and
    scaling) restricted to each column's features, solved from per-arm moments
    (:class:`_Moments`), so no ``n``-sized array is formed per column: the cost is the
    moments (linear in ``n``) plus one ``r x r`` eigendecomposition per column (``r = k kk``
    for ``interaction``, ``kk`` per arm for ``per-arm``).  The penalty is chosen per column
    by GCV (:func:`_solve_gcv`).
    """
    kk = index.shape[1]
    m = cols.size
    C = mom.C
    q = C.shape[1]
    sse = np.zeros(m)
    coef = np.zeros((m, k, kk))
    icpt = np.zeros((m, k))
    cov = np.zeros((m, k, q))
    rows = mom.rows
    n_a = np.array([r.size for r in rows], dtype=float)
    Csum = [C[r].sum(axis=0) for r in rows]
    CC = [C[r].T @ C[r] for r in rows]
    root = np.sqrt(kk)
    for lo in range(0, m, CHUNK):
        here = np.arange(lo, min(m, lo + CHUNK))
        b = here.size
        Gs, zs, ZC, ZY = mom.chunk(cols[here], index[here])
        Yc = mom.Y[:, cols[here]]
        cols_out = here
        ysum = np.stack([Yc[r].sum(axis=0) for r in rows], axis=1)  # (b, k)
        CY = [(C[r].T @ Yc[r]).T for r in rows]  # (b, q) each
        yy = [(Yc[r] ** 2).sum(axis=0) for r in rows]
        if model == "per-arm":
            for a in range(k):
                DD = np.block([[n_a[a : a + 1, None], Csum[a][None, :]], [Csum[a][:, None], CC[a]]])
                PD = np.concatenate([zs[a][:, :, None], ZC[a]], axis=2) / root
                Dy = np.column_stack([ysum[:, a], CY[a]])
                e, w, alpha = _solve_gcv(
                    Gs[a] / kk,
                    PD,
                    np.asarray(np.linalg.pinv(DD), dtype=np.float64),
                    ZY[a] / root,
                    Dy,
                    yy[a],
                    int(n_a[a]),
                    int(np.linalg.matrix_rank(DD)),
                )
                sse[cols_out] += e
                coef[cols_out, a] = w / root
                icpt[cols_out, a] = alpha[:, 0]
                cov[cols_out, a] = alpha[:, 1:]
            continue
        # interaction: the kernel of [Z, Z * 1(arm = a) ...] / sqrt(kk) has the rank-k kk
        # factor F = [Z * (1(arm = b) + c)]_b / sqrt(kk), c = (sqrt(k + 1) - 1) / k (as
        # ArmBlockFactor): blocks F_b'F_b' = sum_a (d_ab + c)(d_ab' + c) Z_a'Z_a
        c = (np.sqrt(k + 1.0) - 1.0) / k
        r_dim = k * kk
        Gsum, ZCsum, ZYsum = sum(Gs), sum(ZC), sum(ZY)
        A = np.zeros((b, r_dim, r_dim))
        PD = np.zeros((b, r_dim, k + q))
        Py = np.zeros((b, r_dim))
        for bb in range(k):
            sb = slice(bb * kk, (bb + 1) * kk)
            for b2 in range(k):
                s2 = slice(b2 * kk, (b2 + 1) * kk)
                A[:, sb, s2] = c * (Gs[bb] + Gs[b2]) + c * c * Gsum
                if bb == b2:
                    A[:, sb, s2] += Gs[bb]
            for a in range(k):
                PD[:, sb, a] = ((a == bb) + c) * zs[a]
            PD[:, sb, k:] = ZC[bb] + c * ZCsum
            Py[:, sb] = ZY[bb] + c * ZYsum
        DD = np.zeros((k + q, k + q))
        DD[:k, :k] = np.diag(n_a)
        for a in range(k):
            DD[a, k:] = DD[k:, a] = Csum[a]
        DD[k:, k:] = sum(CC)
        Dy = np.column_stack([ysum, sum(CY)]) if q else ysum
        e, w, alpha = _solve_gcv(
            A / kk,
            PD / root,
            np.asarray(np.linalg.pinv(DD), dtype=np.float64),
            Py / root,
            Dy,
            sum(yy),
            int(n_a.sum()),
            int(np.linalg.matrix_rank(DD)),
        )
        sse[cols_out] = e
        wsum = w.reshape(b, k, kk).sum(axis=1)
        for a in range(k):
            coef[cols_out, a] = (w[:, a * kk : (a + 1) * kk] + c * wsum) / root
            icpt[cols_out, a] = alpha[:, a]
            cov[cols_out, a] = alpha[:, k:]
    return sse, coef, icpt, cov


class ScreenedArmModels:
    """Screen features per target column, choose ``k``, fit the arm models.

    Parameters
    ----------
    model : {"interaction", "per-arm"}
    select : "auto" or int
        ``auto``: ``k`` from :data:`K_GRID` (below the number of features) or all features,
        chosen per column by the out-of-sample treatment-effect error (:meth:`_choose`); an
        int: always that many features.
    kernel : {"auto", "only", "hinge", "product", "off"}
        ``auto``: with ``select="auto"``, non-linear families of candidates are offered
        too: with at most :data:`RBF_MAX_P` features the RBF ridge
        (:class:`~brainmatch.selection.fourier.FourierArmModels`), with more than
        ``HINGE_MIN_P`` and at most ``HINGE_MAX_P`` the screened ridges on the features
        and their hinges (:mod:`brainmatch.selection.hinge`), with at most
        :data:`PRODUCT_MAX_P` the screened ridges on the features and their pairwise
        products (:mod:`brainmatch.selection.product`); ``only``: the RBF ridge alone (the
        bootstrap refits of a final model that chose it); ``hinge`` / ``product``: that
        basis alone, ``select`` then counting its columns (the refits of a final model
        that chose it); ``off``: linear only.

    Attributes
    ----------
    k_ : ndarray (n_columns,)
        Number of features used by each target column (the number of features: all).
    kernel_ : ndarray of bool (n_columns,)
        Columns fitted by the RBF ridge (``k_`` is then the number of features).
    hinge_cols_, product_cols_ : ndarray of bool (n_columns,)
        Columns fitted on the hinge (product) basis (``k_`` is then the number of
        features; the number of basis columns is in ``hinge_.k_`` (``product_.k_``)).
    hinge_, product_ : ScreenedArmModels or None
        The screened ridges on ``basis_.transform(Z)`` of the hinge columns (on
        ``product_basis_.transform(Z)`` of the product columns), in order.
    basis_ : HingeBasis or None
    product_basis_ : ProductBasis or None
    criterion_ : str
        ``"dr"`` or ``"mse"`` (:data:`CRITERION`) when ``k`` was chosen, else ``"none"``.
    """

    def __init__(
        self, model: str = "interaction", select: str | int = "auto", kernel: str = "auto"
    ) -> None:
        self.model = model
        self.select = select
        self.kernel = kernel

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
        auto = self.kernel == "auto" and self.select == "auto"
        basis_only = self.kernel in ("hinge", "product")
        cands = [] if basis_only else k_candidates(self.select, p)
        if self.kernel == "only":
            cands = [RBF]
        elif auto and p <= RBF_MAX_P:
            cands = [*cands, RBF]  # last: a tie goes to a linear candidate
        self.criterion_ = "none"
        self.full_: ArmModels | None = None
        self.fourier_: FourierArmModels | None = None
        self.basis_: HingeBasis | None = None
        self.hinge_: ScreenedArmModels | None = None
        self.product_basis_: ProductBasis | None = None
        self.product_: ScreenedArmModels | None = None
        if p in cands:
            self.full_ = ArmModels(self.model).fit(Z, C, t, k, Y)
        if RBF in cands:
            self.fourier_ = FourierArmModels(self.model).fit(Z, C, t, k, Y)
        smallest = np.bincount(t, minlength=k).min()
        families: list[tuple[int, ScreenedArmModels, NDArray[np.float64], list[int]]] = []
        if self.kernel == "hinge" or (auto and offers_hinges(p, smallest)):
            self.basis_ = HingeBasis().fit(Z)
            H = self.basis_.transform(Z)
            # a few thresholds need few columns; 100 would cost 8x
            self.hinge_, hc = self._basis_family(H, C, t, k, Y, HINGE_K_MAX, 4 * p)
            families.append((HINGE, self.hinge_, H, hc))
        if self.kernel == "product" or (auto and offers_products(Z.shape[0], p, smallest)):
            self.product_basis_ = ProductBasis().fit(Z)
            P = self.product_basis_.transform(Z)
            all_max = P.shape[1] if P.shape[1] <= PRODUCT_ALL_MAX else -1
            self.product_, pc = self._basis_family(P, C, t, k, Y, PRODUCT_K_MAX, all_max)
            families.append((PRODUCT, self.product_, P, pc))
        labels = [*cands]
        for marker, _, _, fc in families:
            labels += [marker] * len(fc)
        if len(labels) > 1:
            pick = self._choose(Z, C, t, k, Y, cands, families)
        else:
            pick = np.zeros(m, dtype=np.intp)
        choice = np.array(labels)[pick]
        self._fit_choice(Z, C, t, k, Y, choice)
        offset = len(cands)
        for marker, sub, X, fc in families:
            cols = np.flatnonzero(choice == marker)
            if cols.size:
                kk = np.array(fc)[pick[cols] - offset]
                sub._fit_choice(X, C, t, k, Y[:, cols], kk, refit_full=cols.size < m)
            elif marker == HINGE:
                self.hinge_ = self.basis_ = None
            else:
                self.product_ = self.product_basis_ = None
            offset += len(fc)
        return self

    def _basis_family(
        self,
        X: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        k_max: int,
        all_cols: int,
    ) -> tuple[ScreenedArmModels, list[int]]:
        """The linear screened ridges on a basis ``X`` and their candidate numbers of
        columns: with ``select="auto"``, those of :func:`k_candidates` up to ``k_max``
        plus all of them when there are ``all_cols``; else ``select`` itself."""
        select = self.select if self.kernel in ("hinge", "product") else "auto"
        sub = ScreenedArmModels(self.model, select, kernel="off")
        cands = k_candidates(select, X.shape[1])
        if select == "auto":
            cands = [kk for kk in cands if kk <= k_max or kk == all_cols]
        sub._prepare(X, C, t, k, Y, cands)
        return sub, cands

    def _prepare(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        cands: list[int],
    ) -> None:
        """Fit what :meth:`_candidate_preds` of ``cands`` (linear only) needs."""
        self.n_arms_, self.p_ = k, Z.shape[1]
        self.criterion_ = "none"
        self.full_ = ArmModels(self.model).fit(Z, C, t, k, Y) if Z.shape[1] in cands else None
        self.fourier_ = None
        self.basis_ = self.hinge_ = self.product_basis_ = self.product_ = None

    def _fit_choice(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        choice: NDArray[np.intp],
        refit_full: bool = False,
    ) -> None:
        """Fit every column of ``Y`` with its chosen candidate (a number of features,
        :data:`RBF`, :data:`HINGE` or :data:`PRODUCT`, the last two fitted by the
        caller).  ``refit_full``: ``full_`` was fitted on other columns than ``Y``'s."""
        p, m = Z.shape[1], Y.shape[1]
        self.n_arms_, self.p_ = k, p
        self.kernel_ = choice == RBF
        self.hinge_cols_ = choice == HINGE
        self.product_cols_ = choice == PRODUCT
        self.k_ = np.where(choice < 0, p, choice)
        small = sorted({int(kk) for kk in choice if 0 < kk < p})
        if not (choice == p).any():
            self.full_ = None
        elif refit_full or self.full_ is None:
            self.full_ = ArmModels(self.model).fit(Z, C, t, k, Y)
        if not self.kernel_.any():
            self.fourier_ = None
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
            used = np.flatnonzero((self.k_ < p) & (choice > 0))
            mom = _Moments(Z, C, t, k, Y, self.index_[used])
            for kk in small:
                cols = np.flatnonzero(choice == kk)
                _, coef, icpt, cov = _fit_k(self.model, mom, k, cols, self.index_[cols, :kk])
                self.coef_[cols, :, :kk] = coef
                self.intercept_[cols] = icpt
                self.cov_coef_[cols] = cov

    def _candidate_preds(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        cands: list[int],
        out: NDArray[np.floating[Any]],
    ) -> None:
        """Out-of-sample predictions under every arm of each candidate into ``out``
        ``(len(cands), n, k, m)``: all features and the RBF ridge by exact leave-one-out
        (:meth:`ArmModels.loo_predict <brainmatch.selection.pipeline.ArmModels.loo_predict>`),
        the screens by the inner CV of :meth:`_inner_cv`."""
        p = Z.shape[1]
        for c, fitted in ((p, self.full_), (RBF, getattr(self, "fourier_", None))):
            if c in cands:
                assert fitted is not None
                out[cands.index(c)] = fitted.loo_predict(Y)
        small = [kk for kk in cands if 0 < kk < p]
        if small:
            out[[cands.index(kk) for kk in small]] = self._inner_cv(Z, C, t, k, Y, small)

    def _candidate_sse(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        cands: list[int],
    ) -> NDArray[np.float64]:
        """Out-of-sample squared error ``(len(cands), m)`` of each candidate under each
        row's own arm (the ``"mse"`` criterion)."""
        p = Z.shape[1]
        sse = np.empty((len(cands), Y.shape[1]))
        for c, fitted in ((p, self.full_), (RBF, getattr(self, "fourier_", None))):
            if c in cands:
                assert fitted is not None
                sse[cands.index(c)] = fitted.loo_sse()
        small = [kk for kk in cands if 0 < kk < p]
        if small:
            sse[[cands.index(kk) for kk in small]] = self._inner_cv(
                Z, C, t, k, Y, small, own_arm=True
            )
        return sse

    def _choose(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        cands: list[int],
        families: list[tuple[int, ScreenedArmModels, NDArray[np.float64], list[int]]] | None = None,
    ) -> NDArray[np.intp]:
        """Index into ``cands`` followed by every basis family's candidates of the
        candidate chosen for every column.

        Every candidate's out-of-sample predictions under every arm
        (:meth:`_candidate_preds`; a basis family ``(marker, sub, X, its candidates)``'s
        on its expanded matrix ``X``, by ``sub``) give its outcome error (each row under
        its own arm) and, with :data:`CRITERION` ``"dr"``, its doubly robust
        treatment-effect error (:func:`dr_pseudo_outcomes`, :func:`_dr_loss`), whose
        nuisance is the candidate with the lowest outcome error (:data:`NUISANCE`
        ``"best"``) or the all-features ridge (``"full"``).  Among the linear candidates a
        screen replaces the all-features ridge only when it beats it by
        :data:`SCREEN_SE` standard errors of the paired per-row difference of the
        criterion.  A non-linear family (the RBF ridge; the hinge basis; the product
        basis) is chosen only when its best candidate beats the best linear one (by the
        criterion alone) by one standard error of that difference, and the best such
        family wins.
        """
        n, m = Y.shape
        rows = np.arange(n)
        p = Z.shape[1]
        families = families or []
        n_lin = len(cands)
        total = n_lin + sum(len(fc) for *_, fc in families)
        # family of every candidate: 0 linear, 1 the RBF ridge, -marker a basis
        fam = np.array(
            [1 if c == RBF else 0 for c in cands]
            + [-marker for marker, *_, fc in families for _ in fc]
        )
        self.criterion_ = CRITERION
        if CRITERION == "mse":
            sse = np.empty((total, m))
            sse[:n_lin] = self._candidate_sse(Z, C, t, k, Y, cands)
            at = n_lin
            for _, sub, X, fc in families:
                sse[at : at + len(fc)] = sub._candidate_sse(X, C, t, k, Y, fc)
                at += len(fc)
            return np.asarray(np.argmin(sse, axis=0))
        preds = np.empty((total, n, k, m), dtype=PRED_DTYPE)
        self._candidate_preds(Z, C, t, k, Y, cands, preds[:n_lin])
        at = n_lin
        for _, sub, X, fc in families:
            sub._candidate_preds(X, C, t, k, Y, fc, preds[at : at + len(fc)])
            at += len(fc)
        own = preds[:, rows, t, :]  # (c, n, m)
        mse = np.einsum("cnm,cnm->cm", Y[None] - own, Y[None] - own)
        nuis = np.argmin(mse, axis=0) if NUISANCE == "best" else np.full(m, cands.index(p))
        mu = np.asarray(preds[nuis, :, :, np.arange(m)], dtype=np.float64)  # (m, n, k)
        Gc = dr_pseudo_outcomes(np.transpose(mu, (1, 2, 0)), t, Y)
        loss = np.stack([_dr_loss(Gc, preds[c].astype(np.float64)) for c in range(total)])
        linear = np.flatnonzero(fam == 0)
        if linear.size == 0:
            return np.asarray(np.argmin(loss, axis=0))
        cols = np.arange(m)
        best_lin = linear[np.argmin(loss[linear], axis=0)]
        d_lin = _dr_row_loss_at(Gc, preds, best_lin)
        # the linear choice: the best screen must beat the all-features ridge by
        # SCREEN_SE standard errors of the paired per-row difference, else the ridge stays
        lin_pick = best_lin
        if SCREEN_SE > 0 and p in cands:
            ref = np.full(m, cands.index(p))
            diff = d_lin - _dr_row_loss_at(Gc, preds, ref)
            margin = SCREEN_SE * np.sqrt(n) * diff.std(axis=0, ddof=1)
            lin_pick = np.where(diff.sum(axis=0) < -margin, best_lin, ref)
        if linear.size == total:
            return np.asarray(lin_pick)
        # a non-linear family must beat the best linear candidate (by the criterion, before
        # the rule above) by one standard error of the paired per-row difference of their
        # losses: a basis of hundreds of columns chosen by a noisy margin costs small
        # trials more than it gains
        pick = best_lin.copy()
        pick_loss = loss[pick, cols]
        chosen = np.zeros(m, dtype=bool)
        for f in np.unique(fam[fam > 0]):
            members = np.flatnonzero(fam == f)
            if not members.size:
                continue
            best = members[np.argmin(loss[members], axis=0)]
            diff = _dr_row_loss_at(Gc, preds, best) - d_lin  # (n, m)
            margin = np.sqrt(n) * diff.std(axis=0, ddof=1)  # one SE of the sum
            ok = (diff.sum(axis=0) < -margin) & (loss[best, cols] < pick_loss)
            pick = np.where(ok, best, pick)
            pick_loss = np.where(ok, loss[best, cols], pick_loss)
            chosen |= ok
        return np.asarray(np.where(chosen, pick, lin_pick))

    def _inner_cv(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
        small: list[int],
        own_arm: bool = False,
    ) -> NDArray[np.floating[Any]]:
        """Inner-CV predictions ``(len(small), n, k, m)`` under every arm of the screened
        ridges, one per number of features in ``small``, screening redone per fold; with
        ``own_arm``, only their squared error ``(len(small), m)`` under each row's own arm.

        Leave-one-out after screening on the same rows would favour large ``k`` (the screen
        saw the left-out row and keeps noise features that happen to fit it), so ``k`` is
        chosen by an inner stratified k-fold whose training rows alone are screened; the
        penalty within it is chosen by GCV.
        """
        kmax = max(small)
        m = Y.shape[1]
        if own_arm:
            out: NDArray[np.floating[Any]] = np.zeros((len(small), m))
        else:
            out = np.empty((len(small), t.size, k, m), dtype=PRED_DTYPE)
        rng = np.random.default_rng(12345)
        fold = np.zeros(t.size, dtype=int)
        for a in range(k):
            rows = np.flatnonzero(t == a)
            fold[rows[rng.permutation(rows.size)]] = np.arange(rows.size) % INNER_FOLDS
        all_cols = np.arange(m)
        for f in range(INNER_FOLDS):
            tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            Ztr, Ctr, ttr, Ytr = Z[tr], C[tr], t[tr], Y[tr]
            Zte, Cte, tte = Z[te], C[te], t[te]
            index = _top(screening_scores(Ztr, Ctr, ttr, k, Ytr), kmax)
            mom = _Moments(Ztr, Ctr, ttr, k, Ytr, index)
            for j, kk in enumerate(small):
                _, coef, icpt, cov = _fit_k(self.model, mom, k, all_cols, index[:, :kk])
                for lo in range(0, m, CHUNK):
                    c = slice(lo, min(m, lo + CHUNK))
                    Zs = np.transpose(Zte[:, index[c, :kk]], (1, 0, 2))  # (b, n_te, kk)
                    if own_arm:
                        cr = np.transpose(coef[c][:, tte], (0, 2, 1))  # (b, kk, n_te)
                        got = (
                            np.einsum("bnj,bjn->nb", Zs, cr)
                            + icpt[c][:, tte].T
                            + np.einsum("nq,bnq->nb", Cte, cov[c][:, tte])
                        )
                        out[j, c] += ((Y[te, c] - got) ** 2).sum(axis=0)
                        continue
                    out[j, te, :, c] = (
                        np.einsum("bnj,baj->nab", Zs, coef[c])
                        + icpt[c].T[None]
                        + np.einsum("nq,baq->nab", Cte, cov[c])
                    )
        return out

    def predict(self, Z: NDArray[np.float64], C: NDArray[np.float64]) -> NDArray[np.float64]:
        """Predicted outcome ``(n_test, k, n_columns)`` under every arm."""
        m = self.k_.size
        out = np.zeros((Z.shape[0], self.n_arms_, m))
        use_full = (self.k_ == self.p_) & ~self.kernel_ & ~self.hinge_cols_ & ~self.product_cols_
        if use_full.any():
            assert self.full_ is not None
            out[:, :, use_full] = self.full_.predict(Z, C)[:, :, use_full]
        if self.kernel_.any():
            assert self.fourier_ is not None
            out[:, :, self.kernel_] = self.fourier_.predict(Z, C)[:, :, self.kernel_]
        if self.hinge_cols_.any():
            assert self.hinge_ is not None and self.basis_ is not None
            out[:, :, self.hinge_cols_] = self.hinge_.predict(self.basis_.transform(Z), C)
        if self.product_cols_.any():
            assert self.product_ is not None and self.product_basis_ is not None
            P = self.product_basis_.transform(Z)
            out[:, :, self.product_cols_] = self.product_.predict(P, C)
        sel = np.flatnonzero(self.k_ < self.p_)
        if sel.size:
            Zs = Z[:, self.index_[sel]]  # (n_test, b, kmax)
            out[:, :, sel] = (
                np.einsum("nbk,bak->nab", Zs, self.coef_[sel])
                + self.intercept_[sel].T[None]
                + np.einsum("nq,baq->nab", C, self.cov_coef_[sel])
            )
        return out

    def _hinge_column(self, column: int) -> int:
        """Index in ``hinge_`` of one of this model's hinge columns."""
        return int(self.hinge_cols_[:column].sum())

    def _product_column(self, column: int) -> int:
        """Index in ``product_`` of one of this model's product columns."""
        return int(self.product_cols_[:column].sum())

    def primal(self, column: int = 0) -> dict[str, Any]:
        """Dense per-arm coefficients of one column (zero outside its selected features);
        for the RBF ridge, zero coefficients plus its cosine ``components`` and their
        per-arm ``weight`` (:meth:`FourierArmModels.export
        <brainmatch.selection.fourier.FourierArmModels.export>`); for the hinge basis, the
        coefficients of the features plus its hinge ``components`` and ``weight``
        (:meth:`HingeBasis.export <brainmatch.selection.hinge.HingeBasis.export>`); for
        the product basis, those of the features plus the squares that make its products
        (:meth:`ProductBasis.export <brainmatch.selection.product.ProductBasis.export>`)."""
        if self.kernel_[column]:
            assert self.fourier_ is not None
            return self.fourier_.export(column)
        if self.hinge_cols_[column]:
            assert self.hinge_ is not None and self.basis_ is not None
            return self.basis_.export(self.hinge_.primal(self._hinge_column(column)))
        if self.product_cols_[column]:
            assert self.product_ is not None and self.product_basis_ is not None
            sub = self.product_.primal(self._product_column(column))
            return self.product_basis_.export(sub)
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
        """Indices of the features used by one column (all when ``k`` = all), best first
        (hinge or product basis: the features behind its columns, in their order)."""
        if self.hinge_cols_[column]:
            assert self.hinge_ is not None
            feats = feature_of(self.hinge_.selected(self._hinge_column(column)), self.p_)
            _, first = np.unique(feats, return_index=True)
            return np.asarray(feats[np.sort(first)])
        if self.product_cols_[column]:
            assert self.product_ is not None
            used = self.product_.selected(self._product_column(column))
            flat = [f for pair in feature_pairs(used, self.p_) for f in pair]
            return np.asarray(list(dict.fromkeys(flat)), dtype=np.intp)
        kk = int(self.k_[column])
        if kk == self.p_:
            return np.arange(self.p_)
        return np.asarray(self.index_[column, :kk])

    def penalties(self) -> list[float]:
        """Chosen penalty of the all-feature (or RBF, or hinge, or product) solvers of the
        first column (empty when ``k`` < all was chosen)."""
        if self.kernel_[0]:
            assert self.fourier_ is not None
            return self.fourier_.penalties()
        if self.hinge_cols_[0]:
            assert self.hinge_ is not None
            return self.hinge_.penalties()
        if self.product_cols_[0]:
            assert self.product_ is not None
            return self.product_.penalties()
        if self.full_ is None or self.k_[0] != self.p_:
            return []
        return self.full_.penalties()

    def chosen(self, model: str, column: int = 0) -> str:
        """The model's name as ``model_chosen`` reports it (a non-linear family says so)."""
        if self.kernel_[column]:
            return f"{model} (RBF kernel ridge)"
        if self.hinge_cols_[column]:
            return f"{model} (hinge basis)"
        if self.product_cols_[column]:
            return f"{model} (product basis)"
        return model

    def label(self, column: int = 0) -> int | str:
        """What one column used: its number of features, ``"rbf"`` (the RBF ridge),
        ``"hinge:<n>"`` (``n`` columns of the hinge basis) or ``"product:<n>"`` (``n``
        columns of the product basis)."""
        if self.kernel_[column]:
            return "rbf"
        if self.hinge_cols_[column]:
            assert self.hinge_ is not None
            return f"hinge:{int(self.hinge_.k_[self._hinge_column(column)])}"
        if self.product_cols_[column]:
            assert self.product_ is not None
            return f"product:{int(self.product_.k_[self._product_column(column)])}"
        return int(self.k_[column])

    def refit_select(self, column: int = 0) -> str | int:
        """``select`` of :func:`make_arm_models` that refits one column's choice (the
        bootstrap refits of a final model): ``"rbf"``, ``"hinge:<n>"``,
        ``"product:<n>"``, a number of features, or ``"none"`` (all features)."""
        if self.kernel_[column] or self.hinge_cols_[column] or self.product_cols_[column]:
            return self.label(column)
        kk = int(self.k_[column])
        return kk if kk < self.p_ else "none"


def _dr_row_loss_at(
    Gc: NDArray[np.float64], preds: NDArray[np.floating[Any]], idx: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Per-row terms ``(n, m)`` of :func:`_dr_loss` of candidate ``idx[j]`` for column
    ``j`` (``preds``: candidates x rows x arms x columns)."""
    out = np.zeros((Gc.shape[0], Gc.shape[2]))
    for c in np.unique(idx):
        cols = np.flatnonzero(idx == c)
        out[:, cols] = _dr_row_loss(Gc[:, :, cols], preds[c][:, :, cols].astype(np.float64))
    return out


def make_arm_models(
    model: str, select: str | int, binary: bool = False
) -> ArmModels | ScreenedArmModels | LogisticArmModels:
    """The potential-outcome model of one training set, with or without screening.

    A binary outcome with the ``interaction`` model and no screening gets the
    ridge-logistic model (:class:`~brainmatch.selection.pipeline.LogisticArmModels`).
    ``select="rbf"`` (internal: the bootstrap refits of a final model that chose it) is
    the RBF ridge alone; ``select="hinge:<n>"`` (``"product:<n>"``) the hinge (product)
    basis alone with ``n`` of its columns (all of them: the ridge on every column).
    """
    if binary and model == "interaction" and select == "none":
        return LogisticArmModels()
    if select == "none":
        return ArmModels(model)
    if select == "rbf":
        return ScreenedArmModels(model, "none", kernel="only")
    for name in BASIS_NAMES.values():
        if isinstance(select, str) and select.startswith(f"{name}:"):
            return ScreenedArmModels(model, int(select.removeprefix(f"{name}:")), kernel=name)
    return ScreenedArmModels(model, select)
