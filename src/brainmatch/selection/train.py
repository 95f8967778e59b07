"""Train and honestly validate a treatment-selection model (``brainmatch train``)."""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from brainmatch import __version__
from brainmatch.errors import BrainmatchInputError
from brainmatch.selection import _logistic
from brainmatch.selection import screen as _screen
from brainmatch.selection._ridge import LAMBDA_GRID, KernelRidgeLOO
from brainmatch.selection.data import ID, TrainingData, load_training_data
from brainmatch.selection.learners import (
    AUTO_CANDIDATES,
    UNSTORABLE,
    check_learner,
    export_arrays,
    make_learner,
)
from brainmatch.selection.modelfile import save_model
from brainmatch.selection.parallel import DaskRunner, dask_runner
from brainmatch.selection.pipeline import MODELS, Preprocessor
from brainmatch.selection.screen import (
    INNER_FOLDS,
    ScreenedArmModels,
    default_select,
    k_candidates,
    make_arm_models,
    parse_select,
)
from brainmatch.validation.metrics import binary_metrics, bootstrap_ci, regression_metrics
from brainmatch.validation.policy import (
    cross_validated_policy_gain,
    dr_scores,
    policy_gain,
    propensities,
    selection_benefit,
)
from brainmatch.validation.result import ValidationResult
from brainmatch.validation.splits import outer_splits

MODEL_FILE = "model.npz"
CONFORMAL_LEVEL = 0.9
N_BOOTSTRAP_MODELS = 50
#: Bootstrap refits of learners other than the ridge models (each refit runs the learner's
#: own inner CV).
N_BOOTSTRAP_OTHER = 20
#: CV repeats re-run for every permuted target by learners that refit each column from
#: scratch (the ridge models, screened or not, use :data:`PERMUTATION_BUDGET` instead);
#: the observed statistic of the test uses the same repeats.
NULL_REPEATS_SCREENED = 1
#: Leave-one-out work (multiply-adds: training rows x rank x target columns x penalties,
#: summed over folds) the permutation test of an unscreened ridge model may spend; within
#: it every CV repeat refits the permuted targets, beyond it only the first repeats do
#: (at least one).  About 2 minutes of one core; n = 2000 x 1000 features, 1000
#: permutations, 5 x 10 folds fits in it, n = 10,000 uses one repeat.
PERMUTATION_BUDGET = 2e12
#: The same for the ridge-logistic model of 0/1 outcomes (about 10 s of permutation refits
#: on one core of the development machine).
LOGIT_PERMUTATION_BUDGET = 6e10
#: Permuted target columns per Dask task for learners that refit every column.
LEARNER_CHUNK = 10
#: Seconds of one core the re-randomisation test of a ridge model may spend, by the cost
#: model of :func:`_rerandomisation_count` (each re-randomised trial refits one CV repeat);
#: beyond it fewer trials are run, never fewer than :data:`MIN_RERANDOMISATIONS`.
RERANDOMISE_SECONDS = 120.0
#: Re-centre every re-randomised trial's outcomes so that its arm means equal the observed
#: arm means (True), as the Freedman-Lane targets keep them.  Without it (False: the plain
#: plug-in of the arm means) the arm means of a re-randomised trial scatter around the
#: observed ones, and statistics that move with the arms' main effect (the selection
#: benefit) get p-values piled near 0.5: 100 null trials of 100 x 60, p <= 0.05 in 1 %,
#: KS p < 0.001, against 4 % and KS p = 0.25 centred (docs/train.md).
RERANDOMISE_CENTRE = True
#: Fewest re-randomised trials run (when more were asked for): p-values in steps of 0.01.
MIN_RERANDOMISATIONS = 99

Progress = Callable[[int, int], None]

_BLAS: list[ThreadpoolController] = []


def _one_blas_thread() -> Any:
    """``threadpool_limits(1)`` from a controller built once per process: building one
    scans the loaded libraries, which cost about 7 ms per fold (a tenth of a small trial's
    CV, and the re-randomisation test runs hundreds)."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1)


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    out_dir : Path
    metrics : dict
        The content of ``metrics.json``.
    predictions : DataFrame
        The content of ``predictions.tsv`` (out-of-fold predictions only).
    model_path : Path
    report_path : Path or None
    """

    out_dir: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    model_path: Path | None
    report_path: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    validation: ValidationResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        return dict(self.metrics)

    def _repr_html_(self) -> str:
        if self.validation is None:
            return f"<pre>{self.metrics}</pre>"
        return self.validation._repr_html_()


def _within_arm_permutations(
    t: NDArray[np.intp],
    n_permutations: int,
    seed: int,
) -> NDArray[np.intp]:
    """Index arrays (n_permutations + 1, n): row 0 identity, others shuffle within each arm."""
    return _shuffles_within(t, n_permutations, np.random.default_rng([seed, 1]))


def _shuffles_within(
    groups: NDArray[np.intp], n_permutations: int, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Row 0 the identity, rows 1.. index shuffles that keep every row in its group."""
    perms = np.tile(np.arange(groups.size), (n_permutations + 1, 1))
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        for j in range(1, n_permutations + 1):
            perms[j, rows] = rows[rng.permutation(rows.size)]
    return perms


def _label_permutations(
    t: NDArray[np.intp],
    sites: NDArray[np.str_] | None,
    n_permutations: int,
    seed: int,
) -> NDArray[np.intp]:
    """Index arrays (n_permutations + 1, n) that re-randomise the arm labels.

    Row 0 is the identity; the others shuffle the labels over all patients (within each
    site when sites are given), as a complete (or site-stratified) randomisation with the
    trial's arm sizes would have assigned them.
    """
    groups = (
        np.zeros(t.size, dtype=np.intp)
        if sites is None
        else np.unique(sites, return_inverse=True)[1]
    )
    return _shuffles_within(groups, n_permutations, np.random.default_rng([seed, 3]))


@dataclass
class _FoldInputs:
    """What every outer-fold task reads (sent once to a Dask cluster, then shared)."""

    X: NDArray[np.float64]
    covariates: pd.DataFrame
    sites: NDArray[np.str_] | None
    t: NDArray[np.intp]
    k: int
    Y: NDArray[np.float64]
    harmonize: bool
    n_outcome_only: int
    binary: bool = False


def _ridge_null_repeats(
    data: TrainingData,
    model: str,
    n_splits: int,
    n_columns: int,
    n_folds: int,
    select: str | int = "none",
) -> int | None:
    """CV repeats whose permuted targets fit in :data:`PERMUTATION_BUDGET` (None: all)."""
    n, p, k = data.y.size, data.X.shape[1], len(data.arms)
    n_tr = n * (n_splits - 1) / n_splits
    rank = min(n_tr, k * p) if model == "interaction" else min(n_tr / k, p)
    per_repeat = n_splits * LAMBDA_GRID.size * n_tr * rank * n_columns
    if select != "none":
        # screened ridges: per fit and column, the screening scores (n p) and one
        # (k kk)^3 eigendecomposition (about 10 (k kk)^3 multiply-adds) per k of the grid,
        # in every inner fold and the fit itself (measured: n = 500 x 1000 features, 1000
        # permutations, one repeat: about 100 s)
        ks = [kk for kk in k_candidates(select, p) if kk < p]
        width = k if model == "interaction" else 1
        per_fit = n_tr * p + sum(10.0 * (width * kk) ** 3 for kk in ks)
        if select == "auto":
            # the hinge and product bases: their screens' eigendecompositions as above and
            # their scores at half the weight of the features' (fitted to: n = 1200, p =
            # 200, 1001 columns: 34 s per fit with the products, 15 s without;
            # benchmarks/bench_select.py --fold-cost 1200,200,1001)
            smallest = int(np.bincount(np.searchsorted(data.arms, data.treatment)).min())
            for cols, bks in _screen.basis_candidates(
                int(n_tr), p, int(smallest * (n_splits - 1) / n_splits)
            ):
                per_fit += 0.5 * n_tr * cols + sum(10.0 * (width * kk) ** 3 for kk in bks)
        fits = (INNER_FOLDS + 1) if select == "auto" else 1
        per_repeat += n_splits * fits * per_fit * n_columns
    n_rep = max(1, n_folds // n_splits)
    fit = max(1, int(PERMUTATION_BUDGET // max(per_repeat, 1.0)))
    width = _logistic_width(data)
    if (
        data.binary
        and model == "interaction"
        and select == "none"  # a screened model is a linear-probability ridge
        and width <= _logistic.MAX_WIDTH
    ):
        # the ridge-logistic fit: per penalty a few Newton steps, each building one
        # weighted r x r Gram per column (measured: 5 s per repeat of 1000 permutations at
        # n = 120, r = 30, against 0.08 s for the ridge), so its own budget
        per_logit = n_splits * _logistic.LOGIT_GRID.size * 8 * n_tr * width**2 * n_columns
        fit = min(fit, max(1, int(LOGIT_PERMUTATION_BUDGET // max(per_logit, 1.0))))
    return None if fit >= n_rep else fit


@contextlib.contextmanager
def _runner(scheduler: str | DaskRunner | None) -> Iterator[DaskRunner | None]:
    """One Dask connection for every step of an analysis (None: serial)."""
    if scheduler is None:
        yield None
        return
    with dask_runner(scheduler) as runner:
        yield runner


def _fold_inputs(data: TrainingData, Y: NDArray[np.float64], harmonize: bool) -> _FoldInputs:
    return _FoldInputs(
        X=data.X,
        covariates=data.covariates,
        sites=data.sites,
        t=np.searchsorted(data.arms, data.treatment),
        k=len(data.arms),
        Y=Y,
        harmonize=harmonize,
        n_outcome_only=1 if data.baseline else 0,
        binary=data.binary,
    )


def _preprocess_fold(
    d: _FoldInputs, train: NDArray[np.intp], test: NDArray[np.intp]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Preprocessing fitted on the training rows, applied to both (nothing sees ``test``)."""
    pre = Preprocessor(harmonize=d.harmonize, n_outcome_only=d.n_outcome_only)
    sites = d.sites
    Z_tr, C_tr = pre.fit_transform(
        d.X[train], d.covariates.iloc[train], None if sites is None else sites[train]
    )
    Z_te, C_te = pre.transform(
        d.X[test], d.covariates.iloc[test], None if sites is None else sites[test]
    )
    return Z_tr, C_tr, Z_te, C_te


def _ridge_fold(
    d: _FoldInputs,
    train: NDArray[np.intp],
    test: NDArray[np.intp],
    n_cols: int,
    model: str,
    select: str | int,
) -> tuple[NDArray[np.float64], int | str]:
    """One outer fold of a ridge model: test predictions ``(n_test, k, n_cols)`` and the
    number of features used for the real target, ``"rbf"`` (the RBF ridge),
    ``"hinge:<n>"`` (``n`` columns of the hinge basis) or ``"product:<n>"`` (of the
    product basis); every
    permuted column is solved by the same factorisation."""
    with _one_blas_thread():
        Z_tr, C_tr, Z_te, C_te = _preprocess_fold(d, train, test)
        fitted = make_arm_models(model, select, d.binary).fit(
            Z_tr, C_tr, d.t[train], d.k, d.Y[train, :n_cols]
        )
        P = fitted.predict(Z_te, C_te)
    used = fitted.label(0) if isinstance(fitted, ScreenedArmModels) else Z_tr.shape[1]
    return P, used


def _learner_fold(
    d: _FoldInputs,
    train: NDArray[np.intp],
    test: NDArray[np.intp],
    lo: int,
    hi: int,
    learner: str,
    seed: int,
    candidates: tuple[str, ...] | None,
) -> tuple[NDArray[np.float64], str]:
    """Target columns ``lo:hi`` of one outer fold of any learner, each refitted from
    scratch (so a fold's permuted columns can be split into independent tasks)."""
    with _one_blas_thread():
        Z_tr, C_tr, Z_te, C_te = _preprocess_fold(d, train, test)
        P = np.zeros((test.size, d.k, hi - lo))
        chosen = learner
        for c in range(lo, hi):
            fitted = make_learner(learner, d.binary, seed, candidates).fit(
                Z_tr, C_tr, d.t[train], d.k, d.Y[train, c]
            )
            P[:, :, c - lo] = fitted.predict(Z_te, C_te)
            if c == 0:
                chosen = str(getattr(fitted, "chosen_", learner))
    return P, chosen


def _join_chunks(
    results: Iterator[tuple[NDArray[np.float64], Any]], parts: list[int]
) -> Iterator[tuple[NDArray[np.float64], Any]]:
    """Rejoin the column chunks of each fold (``parts[i]`` chunks for fold ``i``)."""
    for n_parts in parts:
        chunks = [next(results) for _ in range(n_parts)]
        yield np.concatenate([c[0] for c in chunks], axis=2), chunks[0][1]


def _run_folds(
    task: Callable[..., tuple[Any, Any]],
    inputs: Any,
    jobs: list[tuple[Any, ...]],
    scheduler: Any,
    progress: Progress | None,
) -> Iterator[tuple[Any, Any]]:
    """``task(inputs, *job)`` for every job, results yielded in job order.

    Serially in this process, or on a Dask distributed cluster (``scheduler``: an address
    or a :class:`brainmatch.selection.parallel.DaskRunner`); the order of the results, and
    so every sum over folds, is the same either way.
    """
    if scheduler is None:
        for i, job in enumerate(jobs):
            yield task(inputs, *job)
            if progress is not None:
                progress(i + 1, len(jobs))
        return
    with dask_runner(scheduler) as runner:
        yield from runner.map(task, inputs, jobs, progress)


def _accumulate(
    n: int,
    k: int,
    m: int,
    splits: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]],
    n_null: int,
    results: Iterator[tuple[NDArray[np.float64], Any]],
    extra: list[Any] | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Average the folds' predictions (see :func:`cross_validated_predictions`)."""
    n_rep = max(r for r, _, _ in splits) + 1
    total = np.zeros((n, k, m))
    count = np.zeros(n)
    total0 = np.zeros((n, k))
    count0 = np.zeros(n)
    by_repeat = np.full((n_rep, n, k), np.nan)
    for (r, _, test), (P, info) in zip(splits, results, strict=True):
        if extra is not None:
            extra.append(info)
        if r < n_null:
            total[test] += P
            count[test] += 1
        total0[test] += P[:, :, 0]
        count0[test] += 1
        by_repeat[r, test] = P[:, :, 0]
    if (count == 0).any() or (count0 == 0).any():
        raise BrainmatchInputError("some patients were never in a test fold")
    pred_null = total / count[:, None, None]
    pred = pred_null.copy()
    pred[:, :, 0] = total0 / count0[:, None]
    return pred, by_repeat, pred_null


def cross_validated_predictions(
    data: TrainingData,
    *,
    model: str,
    splits: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]],
    Y: NDArray[np.float64],
    harmonize: bool,
    select: str | int = "none",
    null_repeats: int | None = None,
    fold_k: list[int | str] | None = None,
    progress: Progress | None = None,
    scheduler: Any = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Out-of-fold potential outcomes for every target column, averaged over repeats.

    Parameters
    ----------
    select : "none", "auto" or int
        Feature screening inside each training fold (:mod:`brainmatch.selection.screen`).
    null_repeats : int, optional
        Fit columns 1, 2, ... (permuted targets) only in the first ``null_repeats``
        repeats (default: all).
    fold_k : list, optional
        Receives the number of features used for the real target in each fold (``"rbf"``:
        the RBF ridge over all features; ``"hinge:<n>"`` / ``"product:<n>"``: ``n``
        columns of the hinge / product basis).
    scheduler : str or DaskRunner, optional
        Run the folds on a Dask distributed cluster (same results as serially).

    Returns
    -------
    pred : ndarray (n, k, n_columns)
        Mean over repeats of each patient's out-of-fold predictions under every arm
        (columns other than 0: over the first ``null_repeats`` repeats).
    by_repeat : ndarray (n_repeats, n, k)
        Real-target predictions of each repeat (for CV error bars).
    pred_null : ndarray (n, k, n_columns)
        Every column (the real one included) averaged over the first ``null_repeats``
        repeats: what the permutation test compares.
    """
    n_rep = max(r for r, _, _ in splits) + 1
    n_null = n_rep if null_repeats is None else max(1, min(null_repeats, n_rep))
    m = Y.shape[1]
    inputs = _fold_inputs(data, Y, harmonize)
    jobs = [(train, test, m if r < n_null else 1, model, select) for r, train, test in splits]
    results = _run_folds(_ridge_fold, inputs, jobs, scheduler, progress)
    return _accumulate(data.y.size, len(data.arms), m, splits, n_null, results, fold_k)


def learner_cv_predictions(
    data: TrainingData,
    *,
    learner: str,
    splits: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]],
    Y: NDArray[np.float64],
    harmonize: bool,
    seed: int = 0,
    candidates: tuple[str, ...] | None = None,
    null_repeats: int | None = None,
    chosen: list[str] | None = None,
    progress: Progress | None = None,
    scheduler: Any = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """As :func:`cross_validated_predictions`, for any learner of
    :mod:`brainmatch.selection.learners`: every target column is refitted from scratch in
    every training fold (the learner's own inner CV, and for ``auto`` the choice of the
    learner, included), so permuted columns cost one full fit each.

    ``chosen`` receives the learner ``auto`` chose for the real target in each fold.
    """
    n_rep = max(r for r, _, _ in splits) + 1
    n_null = n_rep if null_repeats is None else max(1, min(null_repeats, n_rep))
    m = Y.shape[1]
    inputs = _fold_inputs(data, Y, harmonize)
    # serially one task per fold; on a cluster the permuted columns of a fold are split
    # into chunks of LEARNER_CHUNK columns (independent fits), so they spread over workers
    step = m if scheduler is None else LEARNER_CHUNK
    jobs: list[tuple[Any, ...]] = []
    parts: list[int] = []
    for r, train, test in splits:
        m_fold = m if r < n_null else 1
        bounds = list(range(0, m_fold, step))
        parts.append(len(bounds))
        jobs += [
            (train, test, lo, min(m_fold, lo + step), learner, seed, candidates) for lo in bounds
        ]
    results = _join_chunks(_run_folds(_learner_fold, inputs, jobs, scheduler, None), parts)
    if progress is not None:
        results = _progress_each(results, len(splits), progress)
    return _accumulate(data.y.size, len(data.arms), m, splits, n_null, results, chosen)


def _progress_each(
    results: Iterator[tuple[NDArray[np.float64], Any]], total: int, progress: Progress
) -> Iterator[tuple[NDArray[np.float64], Any]]:
    for i, item in enumerate(results):
        progress(i + 1, total)
        yield item


def _no_interaction_fit(
    data: TrainingData, harmonize: bool, least_squares_only: bool = False
) -> tuple[NDArray[np.float64] | None, bool]:
    """In-sample fit of the reduced model: arm + covariates + shared feature effects, and
    whether it was fitted by least squares (``least_squares_only``: ``None`` instead of a
    ridge fit, for ``permutation_null="auto"``, which then re-randomises).

    Ordinary least squares when the reduced design leaves at least half of the rows as
    residual degrees of freedom (Freedman & Lane 1983's reduced model); otherwise a ridge
    for the shared feature effects (penalty by exact leave-one-out).  The ridge's shrunken
    fit leaves part of the prognostic signal in the residuals that are permuted, which made
    the p-values conservative (200 null trials, n = 150, p = 20: KS p = 0.006, mean p 0.56;
    with least squares KS p = 0.45, mean 0.52).
    """
    k = len(data.arms)
    t = np.searchsorted(data.arms, data.treatment)
    pre = Preprocessor(harmonize=harmonize, n_outcome_only=1 if data.baseline else 0)
    with _one_blas_thread():
        Z, C = pre.fit_transform(data.X, data.covariates, data.sites)
        D = np.column_stack([np.eye(k)[t], C])
        full = np.column_stack([D, Z])
        if 2 * full.shape[1] <= full.shape[0] and np.linalg.matrix_rank(full) == full.shape[1]:
            beta = np.linalg.lstsq(full, data.y, rcond=None)[0]
            return np.asarray(full @ beta), True
        if least_squares_only:
            return None, False
        if Z.shape[1] < Z.shape[0]:  # primal algebra
            F = Z / np.sqrt(Z.shape[1])
            solver = KernelRidgeLOO(None, D, factor=F).fit(data.y[:, None])
            return np.asarray(solver.predict_factor(F, D)[:, 0]), False
        solver = KernelRidgeLOO(Z @ Z.T / Z.shape[1], D).fit(data.y[:, None])
    return np.asarray(solver._k(solver.c)[:, 0] + D @ solver.alpha[:, 0]), False


PERMUTATION_NULLS = ("auto", "freedman-lane", "rerandomise", "within-arm")
PERMUTATION_NULL_TEXT = {
    "freedman-lane": "no treatment-by-feature interaction (Freedman-Lane: residuals of a "
    "model with arm, covariate and shared feature effects shuffled within arm)",
    "rerandomise": "no treatment-by-feature interaction (a constant arm effect for every "
    "patient): arm labels re-randomised over patients (within site), each outcome moved by "
    "the difference between the arm means of its new and its received arm and re-centred to "
    "the observed arm means, and the whole cross-validation refitted for every re-randomised "
    "trial",
    "within-arm": "outcomes shuffled within each arm: no association of the features with "
    "the outcome under any arm, arm main effects kept",
}


def _oof_predictions(
    data: TrainingData,
    model: str,
    splits: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]],
    harmonize: bool,
    select: str | int,
    seed: int,
    candidates: tuple[str, ...] | None,
    scheduler: Any,
) -> NDArray[np.float64]:
    """Out-of-fold predictions ``(n, k)`` of ``data.y`` under every arm, averaged over the
    repeats of ``splits``, by a ridge model or any other learner."""
    if model in MODELS:
        pred, _, _ = cross_validated_predictions(
            data, model=model, splits=splits, Y=data.y[:, None], harmonize=harmonize,
            select=select, scheduler=scheduler,
        )  # fmt: skip
    else:
        pred, _, _ = learner_cv_predictions(
            data, learner=model, splits=splits, Y=data.y[:, None], harmonize=harmonize,
            seed=seed, candidates=candidates, scheduler=scheduler,
        )  # fmt: skip
    return np.asarray(pred[:, :, 0])


def _rerandomisation_count(n: int, p: int, requested: int, ridge: bool, select: str | int) -> int:
    """Re-randomised trials to run: ``requested`` while their estimated cost fits in
    :data:`RERANDOMISE_SECONDS`, else fewer (at least :data:`MIN_RERANDOMISATIONS`).

    The cost of one CV repeat of the ridge models, in seconds of one core, is modelled as
    ``0.1 + 1.2e-6 n p + 4e-10 n^3`` (+ 0.1 s for screening), fitted to measured repeats
    (development machine: 300 x 200 screened 0.23 s, 500 x 1000 0.65 s, 1000 x 1000
    1.8 s, 100 x 2000 0.31 s), plus ``1.2e-7 n c`` when ``select="auto"`` offers the
    product basis of ``c`` columns (300 x 200: 0.95 s with it).  It depends on the design
    only, so a rerun gives the same number of trials.  The other learners refit every
    permuted target under either null, so their count is not reduced.
    """
    if not ridge or requested <= MIN_RERANDOMISATIONS:
        return requested
    per_trial = 0.1 + 1.2e-6 * n * p + 4e-10 * float(n) ** 3 + (0.1 if select != "none" else 0)
    if select == "auto" and _screen.offers_products(int(0.8 * n), p, _screen.PRODUCT_MIN_ARM):
        per_trial += 1.2e-7 * n * _screen.n_columns(p)
    return int(min(requested, max(MIN_RERANDOMISATIONS, RERANDOMISE_SECONDS // per_trial)))


def _rerandomised_stats(
    data: TrainingData,
    t: NDArray[np.intp],
    perms: NDArray[np.intp],
    *,
    model: str,
    select: str | int,
    harmonize: bool,
    sign: float,
    split_args: dict[str, Any],
    n_repeats: int,
    seed: int,
    candidates: tuple[str, ...] | None,
    runner: DaskRunner | None,
    progress: Progress | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Permutation statistics of re-randomised trials (rows 1, 2, ... of ``perms``).

    Under the sharp null of a constant effect of each arm, patient ``i`` would have scored
    ``y_i - tau[t_i] + tau[a]`` under arm ``a`` (``tau``: the arm means).  Every
    re-randomised trial assigns the arms as ``t[perm]``, takes those outcomes (re-centred
    to the observed arm means: :data:`RERANDOMISE_CENTRE`), and runs
    the same cross-validation (folds re-drawn from its own arms with the same seed, the
    first ``n_repeats`` repeats) with every choice made inside it (penalty, screen,
    learner) redone: the Fisher randomisation test, which does not rely on a reduced model
    of the prognostic effects, so it stays valid when features outnumber half the
    patients (where the Freedman-Lane reduced model is a ridge, and its shrunken residuals
    made p-values too small).
    """
    arms = np.asarray(data.arms)
    k = arms.size
    tau = np.array([data.y[t == a].mean() for a in range(k)])
    out: dict[str, list[float]] = {"benefit": [], "d": [], "gain": []}
    r0 = data.y - tau[t]
    for perm in perms[1:]:
        tp = t[perm]
        r = r0
        if RERANDOMISE_CENTRE:
            # the re-randomised trial keeps the observed arm means (as Freedman-Lane does)
            r = r0 - np.bincount(tp, r0, k)[tp] / np.bincount(tp, minlength=k)[tp]
        yp = r + tau[tp]
        dp = replace(data, treatment=arms[tp], y=yp)
        splits = outer_splits(dp.treatment, n_repeats=n_repeats, sites=dp.sites, **split_args)
        pred = _oof_predictions(dp, model, splits, harmonize, select, seed, candidates, runner)
        got = _permutation_stats(
            pred[:, :, None], yp[:, None], tp, propensities(dp.treatment, data.arms, dp.sites), sign
        )
        for key in out:
            out[key].append(float(got[key][0]))
        if progress is not None:
            progress(len(out["gain"]), len(perms) - 1)
    return {key: np.array(v) for key, v in out.items()}


def _recommend(
    pred: NDArray[np.float64],
    sign: float,
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Best arm per patient (axis 1) and its advantage over the next best (>= 0)."""
    u = sign * pred
    order = np.argsort(-u, axis=1, kind="stable")
    best = np.take_along_axis(u, order[:, :1], 1)[:, 0]
    second = np.take_along_axis(u, order[:, 1:2], 1)[:, 0]
    return order[:, 0], best - second


def _permutation_stats(
    pred: NDArray[np.float64],
    Y: NDArray[np.float64],
    t: NDArray[np.intp],
    propensity: NDArray[np.float64],
    sign: float,
) -> dict[str, NDArray[np.float64]]:
    """Selection benefit (difference and d) and DR policy gain for every target column."""
    n, k, _ = pred.shape
    u = sign * pred  # (n, k, m)
    rec = np.argmax(u, axis=1)  # (n, m); ties -> first, as argsort stable
    match = rec == t[:, None]
    uy = sign * Y
    n1 = match.sum(axis=0)
    n0 = n - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = (uy * match).sum(axis=0) / n1
        m0 = (uy * ~match).sum(axis=0) / n0
        ss1 = (((uy - m1) ** 2) * match).sum(axis=0)
        ss0 = (((uy - m0) ** 2) * ~match).sum(axis=0)
        pooled = np.sqrt((ss1 + ss0) / (n - 2))
        d = np.where((n1 >= 2) & (n0 >= 2), (m1 - m0) / pooled, np.nan)
    onehot = np.eye(k)[t]  # (n, k)
    gamma = u + (onehot / propensity)[:, :, None] * (uy[:, None, :] - u)
    value = np.take_along_axis(gamma, rec[:, None, :], 1)[:, 0, :].mean(axis=0)
    gain = value - gamma.mean(axis=0).max(axis=0)
    return {"benefit": m1 - m0, "d": d, "gain": gain}


def _perm_p(stat: NDArray[np.float64], seed: int) -> float | None:
    """Permutation p-value with ties to the observed statistic split at random.

    ``(1 + #{null > obs} + U #{null == obs}) / (P + 1)`` with ``U ~ Uniform(0, 1)``.  Ties are
    common (arm means do not change under a within-arm shuffle, so a model that recommends
    one arm to everyone gives the same statistic for many permutations); counting every tie
    as exceeding (the usual rule) makes the test needlessly conservative.  The p-value stays
    valid and is never below ``1 / (P + 1)``.
    """
    obs, null = stat[0], stat[1:]
    if not np.isfinite(obs) or null.size == 0:
        return None
    null = np.where(np.isfinite(null), null, -np.inf)
    tol = 1e-9 * max(1.0, abs(float(obs)))
    greater = np.sum(null > obs + tol)
    ties = np.sum(np.abs(null - obs) <= tol)
    u = np.random.default_rng([seed, 5]).random()
    return float((1 + greater + u * ties) / (null.size + 1))


def _arm_metrics(
    y: NDArray[np.float64],
    pred: NDArray[np.float64],
    t: NDArray[np.intp],
    arms: list[str],
    binary: bool,
    by_repeat: NDArray[np.float64] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a, arm in enumerate(arms):
        rows = t == a
        m = (
            binary_metrics(y[rows], pred[rows, a])
            if binary
            else regression_metrics(y[rows], pred[rows, a])
        )
        if by_repeat is not None and by_repeat.shape[0] > 1:
            key = "auc" if binary else "r2"
            vals = [
                (
                    binary_metrics(y[rows], by_repeat[r, rows, a])
                    if binary
                    else regression_metrics(y[rows], by_repeat[r, rows, a])
                )[key]
                for r in range(by_repeat.shape[0])
            ]
            vals = [v for v in vals if v is not None]
            m[f"{key}_sd_across_repeats"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        out[arm] = m
    return out


def _logistic_width(data: TrainingData) -> int:
    """Columns of the ridge-logistic ``interaction`` design of ``data``: arms x (features
    + 1) + the encoded covariates (baseline included)."""
    pre = Preprocessor(n_outcome_only=1 if data.baseline else 0)
    pre._fit_covariates(data.covariates)
    k, p = len(data.arms), data.X.shape[1]
    return k * (p + 1) + pre.encode_covariates(data.covariates).shape[1]


def _outcome_model(
    data: TrainingData,
    model: str,
    select: str | int,
    warnings: list[str],
    select_given: bool = True,
) -> dict[str, Any]:
    """How a binary outcome is modelled by the ridge ``interaction`` model (its link).
    ``select_given``: ``select`` was the caller's, not the default's."""
    if not (data.binary and model == "interaction"):
        return {"link": None}
    width = _logistic_width(data)
    if select != "none" and width > _logistic.MAX_WIDTH and not select_given:
        warnings.append(
            f"binary outcome: the ridge-logistic design would have {width} columns (more "
            f"than {_logistic.MAX_WIDTH}); fitted as clipped linear-probability ridges, "
            "screened (select=auto, the default there)"
        )
        return {"link": "identity-clipped", "design_width": width, "max_width": _logistic.MAX_WIDTH}
    if select != "none":
        warnings.append(
            "binary outcome with feature screening: the interaction model is the clipped "
            "linear-probability ridge ("
            + (
                "the ridge-logistic model needs select=none)"
                if width <= _logistic.MAX_WIDTH
                else f"the ridge-logistic design would have {width} columns)"
            )
        )
        return {"link": "identity-clipped", "design_width": width, "max_width": _logistic.MAX_WIDTH}
    if width > _logistic.MAX_WIDTH:
        warnings.append(
            f"binary outcome: the ridge-logistic design would have {width} columns (more "
            f"than {_logistic.MAX_WIDTH}); fitted as a clipped linear-probability ridge instead"
        )
        return {"link": "identity-clipped", "design_width": width, "max_width": _logistic.MAX_WIDTH}
    return {"link": "logit", "design_width": width, "max_width": _logistic.MAX_WIDTH}


def _feature_selection_summary(
    select: str | int, fold_k: list[int | str], p_all: int, n_null_rep: int
) -> dict[str, Any]:
    """``metrics.json`` ``feature_selection`` of a validation (train adds the final model's)."""
    return {
        "select": select,
        "method": None
        if select == "none"
        else "screening by the sum over arms of squared within-arm partial correlations "
        "with the outcome (arm intercept, baseline and covariates removed), fitted on "
        "training rows only; top k kept"
        + (
            f", k from {[kk for kk in k_candidates('auto', p_all) if kk < p_all] + ['all']}"
            + (
                " or the ridge on 500 random Fourier features of an RBF kernel over all "
                "features ('rbf', non-linear effects)"
                if p_all <= _screen.RBF_MAX_P
                else (
                    " or the same on every feature and three hinges max(0, z - c) of it at "
                    "the quartiles c of N(0, 1) ('hinge:<n>' of its columns, additive "
                    f"threshold effects; when every arm has >= {_screen.HINGE_MIN_ARM} "
                    "training rows)"
                    if _screen.HINGE_MIN_P < p_all <= _screen.HINGE_MAX_P
                    else ""
                )
            )
            + (
                " or the same on every feature and every pairwise product z_i z_j of two "
                "('product:<n>' of its columns, effect modifiers that act jointly; when every "
                f"arm has >= {_screen.PRODUCT_MIN_ARM} training rows and the basis at most "
                f"{_screen.PRODUCT_MAX_CELLS:.0e} cells)"
                if 2 <= p_all <= _screen.PRODUCT_MAX_P
                else ""
            )
            + ": "
            + (
                "chosen by the doubly robust error of the predicted treatment effects"
                if _screen.CRITERION == "dr"
                else "chosen by the error of the predicted outcome under each patient's arm"
            )
            + ", from out-of-sample predictions (all features: the ridge's exact "
            f"leave-one-out predictions; each k: an inner {INNER_FOLDS}-fold CV that screens "
            "each inner training part again; penalty of the screened ridges by GCV)"
            if select == "auto"
            else ""
        ),
        "k_per_fold": fold_k,
        "k_per_fold_counts": {
            ("all" if kk == p_all else str(kk)): c
            for kk, c in sorted(
                Counter(fold_k).items(), key=lambda kc: (isinstance(kc[0], str), kc[0])
            )
        },
        "permutation_cv_repeats": n_null_rep,
    }


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _pooled_sd(y: NDArray[np.float64], t: NDArray[np.intp]) -> float:
    """Within-arm pooled SD of the outcome (the scale of the standardised policy gain)."""
    ss = sum(float(((y[t == a] - y[t == a].mean()) ** 2).sum()) for a in np.unique(t))
    dof = y.size - np.unique(t).size
    return float(np.sqrt(ss / dof)) if dof > 0 and ss > 0 else float("nan")


def selection_summary(
    y: NDArray[np.float64],
    t: NDArray[np.intp],
    pred: NDArray[np.float64],
    arms: list[str],
    sign: float,
    threshold: float,
    propensity: NDArray[np.float64],
    n_boot: int,
    seed: int,
    *,
    by_repeat: NDArray[np.float64] | None = None,
    splits: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]] | None = None,
) -> dict[str, Any]:
    """Selection metrics of out-of-fold predictions.

    ``policy_gain`` (with ``by_repeat`` and ``splits``) is the cross-validated gain of the
    policy over the cross-validated best single arm with a Nadeau-Bengio corrected interval
    (:func:`~brainmatch.validation.policy.cross_validated_policy_gain`); ``policy_gain_d`` is
    it divided by the outcome's pooled within-arm SD.  ``benefit_d`` (patients who received
    their recommended arm vs the others) is descriptive only: it mixes the arms' main
    effect with selection (it measures the main effect alone when one arm is recommended
    for everyone), and no interval of it was honest on null trials, so none is reported.
    """
    rec, adv = _recommend(pred, sign)
    recommended = np.array(arms)[rec]
    received = np.array(arms)[t]
    diff, d = selection_benefit(y, received, recommended, sign)
    gamma = dr_scores(y, received, pred, arms, propensity)
    in_sample_gain = policy_gain(gamma, rec, sign)
    g = sign * gamma
    arm_values = {a: float(sign * g[:, j].mean()) for j, a in enumerate(arms)}
    best_arm = arms[int(np.argmax(g.mean(axis=0)))]
    counts = {a: int((rec == j).sum()) for j, a in enumerate(arms)}
    if by_repeat is not None and splits is not None:
        cvg = cross_validated_policy_gain(y, t, by_repeat, splits, propensity, sign)
        gain, gain_ci = cvg["estimate"], cvg["ci"]
        method = (
            "mean over patients and CV repeats of the doubly robust difference between the "
            "out-of-fold recommendation and the single arm best in the training fold; t "
            f"interval with the Nadeau-Bengio corrected variance over {cvg['n_splits']} splits"
        )
    else:
        gain = in_sample_gain

        def gain_stat(idx: NDArray[np.intp]) -> float:
            return policy_gain(gamma[idx], rec[idx], sign)

        gain_ci = bootstrap_ci(gain_stat, y.size, n_boot=n_boot, seed=seed + 1)
        method = "percentile bootstrap over patients (predictions fixed)"
    sd = _pooled_sd(y, t)
    single = max(counts.values()) == y.size
    return {
        "recommended_counts": counts,
        "single_arm_recommended": arms[int(np.argmax(list(counts.values())))] if single else None,
        "n_received_recommended": int((rec == t).sum()),
        "benefit_difference": _finite(diff),
        "benefit_d": _finite(d),
        "benefit_d_ci": [None, None],
        "benefit_d_note": (
            "descriptive only (received-recommended vs other patients): it mixes the arms' "
            "main effect with selection, so no interval is reported; use policy_gain_d"
            + (
                f". The model recommends {arms[int(np.argmax(list(counts.values())))]} for "
                "every patient, so d measures that arm's main effect, not selection"
                if single
                else ""
            )
        ),
        "policy_value": float(sign * g[np.arange(y.size), rec].mean()),
        "arm_values": arm_values,
        "best_single_arm": best_arm,
        "policy_gain": _finite(gain),
        "policy_gain_ci": gain_ci,
        "policy_gain_ci_method": method,
        "policy_gain_d": _finite(gain / sd) if np.isfinite(sd) else None,
        "policy_gain_d_ci": [None if c is None else c / sd for c in gain_ci]
        if np.isfinite(sd)
        else [None, None],
        "policy_gain_in_sample_best": _finite(in_sample_gain),
        "threshold": threshold,
        "share_above_threshold": float((adv >= threshold).mean()),
        "advantage_mean": float(adv.mean()),
    }


def _conformal_quantile(residuals: NDArray[np.float64], level: float) -> float | None:
    r = np.sort(np.abs(residuals[np.isfinite(residuals)]))
    n = r.size
    rank = math.ceil((n + 1) * level)
    if n == 0 or rank > n:
        return None
    return float(r[rank - 1])


def _learning_curve(
    data: TrainingData,
    *,
    model: str,
    harmonize: bool,
    sign: float,
    seed: int,
    select: str | int = "none",
    candidates: tuple[str, ...] | None = None,
    scheduler: Any = None,
    done: tuple[list[Any], NDArray[np.float64]] | None = None,
) -> list[dict[str, Any]]:
    """CV performance on stratified subsamples (5-fold x 2 repeats for the ridge models, x 1
    for other learners; no permutations).

    ``done``: the main run's splits and real-target predictions per repeat; the full
    sample's point reuses them when its splits are the main run's first repeats (the
    same fits: every target column is solved on its own).
    """
    arms = data.arms
    t = np.searchsorted(arms, data.treatment)
    rng = np.random.default_rng([seed, 7])
    points = []
    for frac in (0.4, 0.6, 0.8, 1.0):
        keep = np.sort(
            np.concatenate(
                [
                    rng.choice(np.flatnonzero(t == a), round(frac * (t == a).sum()), replace=False)
                    for a in range(len(arms))
                ]
            )
        )
        if min(int((t[keep] == a).sum()) for a in range(len(arms))) < 10:
            continue
        sub = subset(data, keep)
        try:
            splits = outer_splits(
                sub.treatment,
                n_splits=5,
                n_repeats=2 if model in MODELS else 1,
                seed=seed,
                sites=sub.sites,
            )
            if done is not None and keep.size == data.y.size and _same_splits(splits, done[0]):
                n_r = max(r for r, _, _ in splits) + 1
                total = np.zeros_like(done[1][0])
                for r in range(n_r):
                    total += done[1][r]
                pred = (total / n_r)[:, :, None]
            else:
                pred = _oof_predictions(
                    sub, model, splits, harmonize, select, seed, candidates, scheduler
                )[:, :, None]
        except BrainmatchInputError:
            continue
        ts = t[keep]
        per = _arm_metrics(sub.y, pred[:, :, 0], ts, arms, sub.binary)
        key = "auc" if sub.binary else "r2"
        vals = [m[key] for m in per.values() if m[key] is not None]
        rec, _ = _recommend(pred[:, :, 0], sign)
        _, d = selection_benefit(sub.y, sub.treatment, np.array(arms)[rec], sign)
        points.append(
            {
                "n": int(keep.size),
                "fraction": frac,
                key: float(np.mean(vals)) if vals else None,
                "benefit_d": _finite(d),
            }
        )
    return points


def _same_splits(
    splits: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]],
    main: list[tuple[int, NDArray[np.intp], NDArray[np.intp]]],
) -> bool:
    """Whether ``splits`` are the first splits of ``main`` (same repeats, same rows)."""
    return len(splits) <= len(main) and all(
        r == r2 and np.array_equal(a, a2) and np.array_equal(b, b2)
        for (r, a, b), (r2, a2, b2) in zip(splits, main, strict=False)
    )


def subset(data: TrainingData, rows: NDArray[np.intp]) -> TrainingData:
    """The same training data restricted to ``rows``."""
    cov = data.covariates.iloc[rows].reset_index(drop=True)
    return TrainingData(
        ids=data.ids[rows],
        X=data.X[rows],
        feature_names=data.feature_names,
        treatment=data.treatment[rows],
        arms=data.arms,
        y=data.y[rows],
        binary=data.binary,
        covariates=cov,
        sites=None if data.sites is None else data.sites[rows],
        baseline=data.baseline,
    )


def tripod_items(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """TRIPOD+AI (Collins et al. 2024) items filled from this run."""
    o = metrics["options"]
    sel = metrics["selection"]
    per = metrics["per_arm"]
    if not o["site_column"]:
        combat = "off: no site column"
    elif o.get("harmonize", True):  # metrics written before harmonize= existed
        combat = "by site"
    else:
        combat = "off: harmonize=False; sites define folds and strata only"
    perf = "; ".join(
        f"{a}: "
        + ", ".join(
            f"{k}={v:.3g}"
            for k, v in m.items()
            if k in ("r2", "mae", "auc", "brier", "calibration_slope") and isinstance(v, float)
        )
        for a, m in per.items()
    )
    return [
        {
            "item": "Title/abstract: prediction of treatment-specific outcome",
            "value": f"potential outcomes under {', '.join(metrics['arms'])}",
        },
        {
            "item": "Source of data / participants",
            "value": f"{metrics['n']} participants with an outcome; per arm {metrics['n_per_arm']}",
        },
        {
            "item": "Outcome",
            "value": f"{o['outcome_column']} ("
            f"{'binary' if metrics['binary'] else 'continuous'}; {o['better']} is better)",
        },
        {
            "item": "Predictors",
            "value": f"{metrics['n_features']} features"
            + (f"; covariates {', '.join(o['covariates'])}" if o["covariates"] else "")
            + (f"; baseline {o['baseline_column']}" if o["baseline_column"] else ""),
        },
        {
            "item": "Sample size",
            "value": "; ".join(w for w in metrics["warnings"] if "per arm" in w)
            or "at least 100 per arm",
        },
        {
            "item": "Missing data",
            "value": "features: training-fold median; covariates: "
            "training-fold mean / mode; patients without outcome excluded",
        },
        {
            "item": "Data preparation inside CV",
            "value": f"imputation, ComBat harmonisation ({combat}), confound removal, "
            "scaling; all fitted on training folds only",
        },
        {
            "item": "Model type and hyper-parameters",
            "value": f"{o['model']}"
            + (f" (chose {metrics['model_chosen']})" if metrics.get("model_chosen") else "")
            + "; "
            + metrics["cv"]["inner"]
            + (
                ""
                if metrics.get("feature_selection", {}).get("select", "none") == "none"
                else "; features screened inside each training fold, their number chosen by "
                "an inner 3-fold CV that screens again"
            ),
        },
        {"item": "Internal validation", "value": metrics["cv"]["description"]},
        {"item": "Performance measures", "value": perf},
        {
            "item": "Treatment selection",
            "value": f"policy gain {sel['policy_gain']} (CI {sel['policy_gain_ci']}; "
            f"{sel['policy_gain_ci_method']}); standardised {sel['policy_gain_d']} (CI "
            f"{sel['policy_gain_d_ci']}); permutation p={sel['permutation_p']}; descriptive "
            f"benefit d={sel['benefit_d']}",
        },
        {"item": "Fairness / subgroups", "value": "not assessed by brainmatch: check per site"},
        {"item": "Model availability", "value": f"{MODEL_FILE} (NPZ + JSON, no code execution)"},
        {"item": "Software", "value": f"brainmatch {__version__}"},
    ]


def validate(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any] | tuple[Any, ...],
    *,
    treatment_column: str,
    outcome_column: str,
    baseline_column: str | None = None,
    site_column: str | None = None,
    covariates: tuple[str, ...] | list[str] = (),
    better: str | None = None,
    cv: str = "repeated-kfold",
    n_splits: int = 5,
    n_repeats: int = 10,
    model: str = "interaction",
    n_permutations: int = 1000,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    session: str | None = None,
    permutation_null: str = "auto",
    learning_curve: bool = True,
    select: str | int | None = None,
    candidates: tuple[str, ...] | None = None,
    progress: Progress | None = None,
    scheduler: str | DaskRunner | None = None,
    permutation_repeats: int | None = None,
    harmonize: bool = True,
) -> ValidationResult:
    """Validate a treatment-selection model by nested cross-validation (no files written).

    Parameters
    ----------
    features : path or DataFrame
        Feature table (``participant_id`` + numeric columns).
    outcomes : path or DataFrame, or a list of them
        Outcome table (``participant_id``, treatment, outcome, optional baseline, site,
        covariates); several tables are merged on ``participant_id``.
    treatment_column, outcome_column : str
    baseline_column : str, optional
        Baseline severity, an unpenalised predictor of the outcome.
    site_column : str, optional
        Site label: ComBat harmonisation of the features (fitted in training folds, unless
        ``harmonize=False``) and the folds of ``cv="leave-site-out"``.
    covariates : sequence of str
        Covariates removed from the features (confounds) and used in the outcome model.
    better : {"lower", "higher"}, optional
        Default ``lower`` for a continuous outcome (symptom score), ``higher`` for binary.
    cv : {"repeated-kfold", "leave-site-out"}
    n_splits, n_repeats : int
    model : str
        The learner (:data:`brainmatch.selection.learners.LEARNERS`): ``interaction``
        (ridge PAI, the default), ``per-arm``, ``t-linear``, ``enet-interaction``, the meta-
        learners ``{t,s,x,dr,r}-{linear,hgb}``, ``econml-dr``, ``causal-forest`` or ``auto``
        (chosen by inner CV on the doubly robust CATE error among ``candidates``).  The
        ridge models (``interaction``, ``per-arm``) solve every permutation at once; other
        learners refit every permuted outcome in the first CV repeat (cost: one fit per
        permutation and fold).
    n_permutations : int
        Permutations for the test of the selection benefit.
    threshold : float, optional
        Clinically meaningful advantage (default 3 points; 0.1 for a binary outcome).
    n_boot : int
        Bootstrap resamples for the CIs.
    seed : int
    session : str, optional
        Session to use when the feature table has several.
    permutation_null : {"auto", "freedman-lane", "rerandomise", "within-arm"}
        Null of the permutation test.  ``freedman-lane``: no treatment-by-feature
        interaction; outcomes are the fit of a model without interactions (arm, covariate and
        shared feature effects, fitted on all patients by least squares when its columns
        are at most half the patients, else by ridge) plus its residuals shuffled within
        arm, so prognostic effects are kept; the permuted targets share the trial's design,
        so they are fitted together at little cost.  ``rerandomise`` (continuous outcomes):
        the same null as a Fisher randomisation test, for a randomised trial: the arm labels
        are re-randomised (within site), each outcome is moved by the difference between the
        arm means of its new and its received arm, and the whole cross-validation is refitted
        for every re-randomised trial, in ``permutation_repeats`` repeats (default 1), so it
        costs one CV repeat per permutation.  ``auto`` (default): ``freedman-lane`` when its
        reduced model is fitted by least squares (or the outcome is 0/1), else
        ``rerandomise``: with a ridge as the reduced model the Freedman-Lane p-values were
        too small (300 x 200 null trials: docs/train.md).  ``within-arm``: outcomes shuffled
        within arm (no feature effect at all; conservative when features are prognostic).
    learning_curve : bool
        Compute the learning curve (a few extra CV runs).
    select : "none", "auto", int or None
        Supervised feature screening inside every training fold
        (:mod:`brainmatch.selection.screen`): ``auto`` chooses, per training fold, between
        all features and the top 5, 10, 20, 50 or 100 screened features, by the
        out-of-sample doubly robust error of the predicted treatment effects (all
        features: the ridge's exact leave-one-out predictions under every arm; each
        screen: an inner 5-fold CV that redoes it; see
        :data:`brainmatch.selection.screen.CRITERION`); an int keeps that many; ``none``
        uses all features.  Default (None):
        ``auto`` for the ridge models of a continuous outcome, ``none`` for a 0/1 outcome
        (the ridge-logistic model; ``auto`` where its design would have more than
        ``_logistic.MAX_WIDTH`` columns, when it is a linear-probability ridge anyway) and
        for the other learners.  With screening, every
        permuted target is screened and fitted again, in as many CV repeats as
        :data:`PERMUTATION_BUDGET` allows (at least one), and the permutation test compares
        the observed statistic over those same repeats.
    candidates : tuple of str, optional
        Candidates of ``model="auto"`` (default
        :data:`~brainmatch.selection.learners.AUTO_CANDIDATES`).
    progress : callable, optional
        ``progress(done, total)`` over outer folds.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``): the outer folds
        (each with its block of permuted targets) and the learning curve's folds run on
        that cluster; the results are identical to a serial run with the same seed.
    permutation_repeats : int, optional
        CV repeats in which every permuted target is refitted (the observed statistic of
        the test is taken over the same repeats, so the test stays exact; the reported
        estimates always use all repeats).  Default: for the ridge models (screened or not)
        all repeats while the permutations' work stays within :data:`PERMUTATION_BUDGET`
        (at least one repeat; large trials use fewer), for other learners
        ``NULL_REPEATS_SCREENED``.
    harmonize : bool
        ``False`` keeps ``site_column`` for the folds of ``cv="leave-site-out"`` (and the
        arms' shares per site) but leaves the features as they are: for features already
        harmonised, or to measure what harmonisation adds.  The saved model then needs no
        site for new patients.

    Returns
    -------
    ValidationResult
    """
    start = time.perf_counter()
    select = None if select is None else parse_select(select)
    check_learner(model, "model=")
    ridge = model in MODELS
    if not ridge and select not in (None, "none"):
        raise BrainmatchInputError(
            f"select= applies to the ridge models (interaction, per-arm), not to "
            f"model={model}: the sparse learners select features themselves"
        )
    for name, value, least in (
        ("n_permutations", n_permutations, 0),
        ("n_repeats", n_repeats, 1),
        ("n_splits", n_splits, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise BrainmatchInputError(f"{name}={value!r}: must be a whole number >= {least}")
    if permutation_repeats is not None and permutation_repeats < 1:
        raise BrainmatchInputError(
            f"permutation_repeats={permutation_repeats}: must be at least 1 (or None)"
        )
    data = load_training_data(
        features,
        outcomes,
        treatment_column=treatment_column,
        outcome_column=outcome_column,
        baseline_column=baseline_column,
        site_column=site_column,
        covariates=tuple(covariates),
        session=session,
    )
    select_given = select is not None
    select = default_select(
        select, model, data.binary, _logistic_width(data) if data.binary else None
    )
    if better is None:
        better = "higher" if data.binary else "lower"
    if better not in ("lower", "higher"):
        raise BrainmatchInputError(f"better={better!r}: expected lower or higher")
    sign = 1.0 if better == "higher" else -1.0
    if threshold is None:
        threshold = 0.1 if data.binary else 3.0
    if not np.isfinite(threshold) or threshold < 0:
        raise BrainmatchInputError(
            f"threshold={threshold!r}: the clinically meaningful difference between arms must "
            "be a number >= 0 (in outcome units; a probability difference for 0/1 outcomes)"
        )
    arms = data.arms
    t = np.searchsorted(arms, data.treatment)
    harmonize = bool(harmonize) and data.sites is not None
    if harmonize:
        assert data.sites is not None
        labels, counts = np.unique(data.sites, return_counts=True)
        small = [f"{s} ({c})" for s, c in zip(labels, counts, strict=True) if c < 5]
        if small:
            raise BrainmatchInputError(
                f"site_column={site_column!r}: site(s) with fewer than 5 patients: "
                f"{', '.join(small)}; ComBat cannot estimate their effects (merge them or "
                "drop site_column)"
            )
    splits = outer_splits(
        data.treatment,
        scheme=cv,
        n_splits=n_splits,
        n_repeats=n_repeats,
        sites=data.sites,
        seed=seed,
    )
    if permutation_null not in PERMUTATION_NULLS:
        raise BrainmatchInputError(
            f"permutation_null={permutation_null!r}: expected one of "
            + ", ".join(PERMUTATION_NULLS)
        )
    if permutation_null == "rerandomise" and data.binary:
        raise BrainmatchInputError(
            "permutation_null='rerandomise' needs a continuous outcome (a constant arm "
            "effect added to a 0/1 outcome would not stay 0/1); use freedman-lane"
        )
    fitted: NDArray[np.float64] | None = None
    fl_least_squares = True
    if permutation_null in ("auto", "freedman-lane"):
        # auto: Freedman-Lane where its reduced model is least squares, for a 0/1 outcome
        # or without permutations; otherwise re-randomisation (no ridge reduced model fitted)
        keep_fl = permutation_null == "freedman-lane" or data.binary or not n_permutations
        if n_permutations:
            fitted, fl_least_squares = _no_interaction_fit(
                data, harmonize, least_squares_only=not keep_fl
            )
        permutation_null = "freedman-lane" if keep_fl or fitted is not None else "rerandomise"
    if permutation_null == "freedman-lane" and not n_permutations:
        Y = data.y[:, None]
    elif permutation_null == "freedman-lane":
        assert fitted is not None
        Y = fitted[:, None] + (data.y - fitted)[_within_arm_permutations(t, n_permutations, seed)].T
        Y[:, 0] = data.y
    elif permutation_null == "within-arm":
        Y = data.y[_within_arm_permutations(t, n_permutations, seed)].T  # (n, 1 + P)
    else:  # rerandomise: the observed target here, the re-randomised trials refitted below
        Y = data.y[:, None]
        if permutation_repeats is None:
            permutation_repeats = 1

    fold_k: list[int | str] = []
    chosen_per_fold: list[str] = []
    lc_points: list[dict[str, Any]] | None = None
    with _runner(scheduler) as runner:
        if ridge:
            null_repeats = (
                permutation_repeats
                if permutation_repeats is not None
                else _ridge_null_repeats(data, model, n_splits, Y.shape[1], len(splits), select)
            )
            pred_all, by_repeat, pred_null = cross_validated_predictions(
                data,
                model=model,
                splits=splits,
                Y=Y,
                harmonize=harmonize,
                select=select,
                null_repeats=null_repeats,
                fold_k=fold_k,
                progress=progress,
                scheduler=runner,
            )
            other = "per-arm" if model == "interaction" else "interaction"
        else:
            null_repeats = (
                NULL_REPEATS_SCREENED if permutation_repeats is None else permutation_repeats
            )
            pred_all, by_repeat, pred_null = learner_cv_predictions(
                data,
                learner=model,
                splits=splits,
                Y=Y,
                harmonize=harmonize,
                seed=seed,
                candidates=candidates,
                null_repeats=null_repeats,
                chosen=chosen_per_fold,
                progress=progress,
                scheduler=runner,
            )
            fold_k = [len(data.feature_names)] * len(splits)
            other = "interaction"
        pred = pred_all[:, :, 0]
        rerandomised: dict[str, NDArray[np.float64]] = {}
        if permutation_null == "rerandomise" and n_permutations:
            n_run = _rerandomisation_count(
                data.y.size, data.X.shape[1], n_permutations, ridge, select
            )
            rerandomised = _rerandomised_stats(
                data,
                t,
                _label_permutations(t, data.sites, n_run, seed),
                model=model,
                select=select,
                harmonize=harmonize,
                sign=sign,
                split_args={"scheme": cv, "n_splits": n_splits, "seed": seed},
                n_repeats=min(null_repeats or n_repeats, n_repeats),
                seed=seed,
                candidates=candidates,
                runner=runner,
                progress=None
                if progress is None
                else lambda j, total: progress(len(splits) + j, len(splits) + total),
            )
        pred_other, by_repeat_other, _ = cross_validated_predictions(
            data,
            model=other,
            splits=splits,
            Y=data.y[:, None],
            harmonize=harmonize,
            select=select,
            scheduler=runner,
        )
        if learning_curve:
            lc_points = _learning_curve(
                data,
                model=model,
                harmonize=harmonize,
                sign=sign,
                seed=seed,
                select=select,
                candidates=candidates,
                scheduler=runner,
                done=(splits, by_repeat),
            )
    if data.binary:
        pred = np.clip(pred, 0.0, 1.0)
        pred_null = np.clip(pred_null, 0.0, 1.0)
        pred_other = np.clip(pred_other, 0.0, 1.0)
    n_rep_total = max(r for r, _, _ in splits) + 1
    n_null_rep = n_rep_total if null_repeats is None else min(null_repeats, n_rep_total)

    propensity = propensities(data.treatment, arms, data.sites)
    if data.binary:
        by_repeat = np.clip(by_repeat, 0.0, 1.0)
        by_repeat_other = np.clip(by_repeat_other, 0.0, 1.0)
    selection = selection_summary(
        data.y,
        t,
        pred,
        arms,
        sign,
        threshold,
        propensity,
        n_boot,
        seed,
        by_repeat=by_repeat,
        splits=splits,
    )
    null: dict[str, NDArray[np.float64]] = {}
    if n_permutations:
        null = _permutation_stats(pred_null, Y, t, propensity, sign)
        if permutation_null == "rerandomise":
            null = {key: np.concatenate([null[key][:1], rerandomised[key]]) for key in null}
        selection["permutation_p"] = _perm_p(null["benefit"], seed)
        selection["policy_gain_permutation_p"] = _perm_p(null["gain"], seed + 1)
        selection["policy_gain_null_sd"] = (
            float(np.nanstd(null["gain"][1:], ddof=1)) if null["gain"].size > 2 else None
        )
    else:
        selection["permutation_p"] = None
        selection["policy_gain_permutation_p"] = None
    selection["n_permutations"] = int(null["gain"].size - 1) if null else n_permutations
    selection["n_permutations_requested"] = n_permutations
    selection["permutation_cv_repeats"] = n_null_rep
    selection["permutation_null"] = PERMUTATION_NULL_TEXT[permutation_null]
    selection["permutation_null_method"] = permutation_null

    rec, adv = _recommend(pred, sign)
    predictions = pd.DataFrame({ID: data.ids, "treatment": data.treatment, "observed": data.y})
    for a, arm in enumerate(arms):
        predictions[f"predicted__{arm}"] = pred[:, a]
    predictions["recommended"] = np.array(arms)[rec]
    predictions["advantage"] = adv

    warnings = list(data.warnings)
    cv_desc = (
        f"{n_splits}-fold cross-validation repeated {n_repeats} times, stratified by arm"
        + (" and site" if data.sites is not None else "")
        if cv == "repeated-kfold"
        else f"leave-one-site-out over {len(np.unique(data.sites))} sites"
        if data.sites is not None
        else cv
    )
    per_arm = _arm_metrics(
        data.y,
        pred,
        t,
        arms,
        data.binary,
        by_repeat if not data.binary else (np.clip(by_repeat, 0, 1)),
    )
    key = "auc" if data.binary else "r2"
    for arm, m in per_arm.items():
        sd = m.get(f"{key}_sd_across_repeats")
        if m.get(key) is not None and (m[key] < (0.55 if data.binary else 0.0)):
            warnings.append(
                f"arm {arm}: cross-validated {key.upper()} {m[key]:.3f} is at or "
                "below chance: the model does not predict this arm's outcome"
            )
        if sd is not None and sd > 0.05:
            warnings.append(
                f"arm {arm}: {key.upper()} varies by {sd:.3f} (SD) between CV "
                "repeats; the error bar of a single split is larger still"
            )
    if permutation_null == "freedman-lane" and n_permutations and not fl_least_squares:
        warnings.append(
            "the Freedman-Lane reduced model is a ridge (its columns exceed half the "
            "patients): its p-values ran small on null trials (0/1 outcome, n = 200, p = 150: "
            "10 % at or below 0.05; docs/train.md), so read the permutation p with the "
            "policy gain's interval"
            + ("" if data.binary else "; permutation_null='rerandomise' avoids it")
        )
    if selection["permutation_p"] is not None and selection["permutation_p"] > 0.05:
        warnings.append(
            f"the selection benefit is not distinguishable from chance "
            f"(permutation p = {selection['permutation_p']:.3f})"
        )
    if selection["n_permutations"] < n_permutations:
        warnings.append(
            f"permutation test: {selection['n_permutations']} re-randomised trials, not the "
            f"{n_permutations} asked for: each refits the whole cross-validation, and the "
            "rest would exceed the time budget (p-values in steps of "
            f"{1 / (selection['n_permutations'] + 1):.3g}); permutation_null='freedman-lane' "
            "runs them all, but its p-values are too small when features outnumber half "
            "the patients"
        )
    ci = selection["policy_gain_ci"]
    if ci[0] is not None and ci[0] <= 0:
        warnings.append(
            "the 95% CI of the policy gain includes 0: recommending by this model "
            "is not shown to beat giving everyone the best single arm"
        )
    p_sel = selection["permutation_p"]
    if p_sel is None:
        warnings.append(
            "no permutation test was run (n_permutations=0): the selection is not shown to "
            "beat chance, so it is not reported as supported"
        )
    # supported needs both: a permutation test that ran and rejected, and a CI above 0
    selection["selection_supported"] = bool(
        ci[0] is not None and ci[0] > 0 and p_sel is not None and p_sel < 0.05
    )
    if selection["single_arm_recommended"] is not None:
        warnings.append(
            f"the model recommends {selection['single_arm_recommended']} for every patient "
            "(out of fold): it does not select between arms, and the selection benefit d "
            "then measures that arm's main effect"
        )
    if model in MODELS and data.X.shape[1] >= data.y.size and select == "none":
        warnings.append(
            f"{data.X.shape[1]} features for {data.y.size} patients: the ridge {model} model "
            "over all features shrinks sparse treatment-by-feature effects to almost nothing "
            "(docs/train.md benchmark at n = 500, p = 1000: 0.16 of the oracle's gain against "
            "0.96 with screening); consider select='auto' (the default for scores) or "
            "model=auto with n_permutations=99"
        )
    if data.X.shape[1] > 10 * data.y.size and select == "none":
        warnings.append(
            f"{data.X.shape[1]} features for {data.y.size} patients: expect "
            "strong shrinkage; consider fewer, a-priori features"
        )

    residuals = data.y - pred[np.arange(data.y.size), t]
    conformal = (
        {arm: _conformal_quantile(residuals[t == a], CONFORMAL_LEVEL) for a, arm in enumerate(arms)}
        if not data.binary
        else {}
    )

    metrics: dict[str, Any] = {
        "brainmatch_version": __version__,
        "n": int(data.y.size),
        "n_per_arm": {a: int((t == j).sum()) for j, a in enumerate(arms)},
        "n_features": len(data.feature_names),
        "arms": arms,
        "binary": data.binary,
        "better": better,
        "cv": {
            "scheme": cv,
            "n_splits": n_splits if cv == "repeated-kfold" else len(splits),
            "n_repeats": n_repeats if cv == "repeated-kfold" else 1,
            "description": cv_desc,
            "inner": (
                "exact leave-one-out over a 13-value penalty grid, per training fold"
                if ridge
                else "the learner's own inner CV (penalty path / boosting defaults) per "
                "training fold"
                + (
                    "; learner chosen among "
                    + ", ".join(candidates or AUTO_CANDIDATES)
                    + " by the doubly robust CATE error of a 3-fold inner CV"
                    if model == "auto"
                    else ""
                )
            )
            + (
                ""
                if select == "none"
                else f"; number of screened features by a {INNER_FOLDS}-fold CV inside the "
                "training fold, screening again in each part"
                if select == "auto"
                else f"; top {select} screened features"
            ),
        },
        "model": model,
        "model_chosen_per_fold": (
            {c: chosen_per_fold.count(c) for c in sorted(set(chosen_per_fold))}
            if chosen_per_fold
            else None
        ),
        "per_arm": per_arm,
        "per_arm_other_model": {
            "model": other,
            **_arm_metrics(data.y, pred_other[:, :, 0], t, arms, data.binary),
        },
        "selection": selection,
        "selection_other_model": {
            "model": other,
            **{
                k2: v
                for k2, v in selection_summary(
                    data.y,
                    t,
                    pred_other[:, :, 0],
                    arms,
                    sign,
                    threshold,
                    propensity,
                    max(200, n_boot // 5),
                    seed,
                    by_repeat=by_repeat_other,
                    splits=splits,
                ).items()
                if k2
                in (
                    "benefit_d",
                    "benefit_d_ci",
                    "policy_gain",
                    "policy_gain_ci",
                    "policy_gain_d",
                    "policy_gain_d_ci",
                    "single_arm_recommended",
                    "share_above_threshold",
                )
            },
        },
        "conformal": {"level": CONFORMAL_LEVEL, "half_width": conformal},
        "outcome_model": _outcome_model(data, model, select, warnings, select_given),
        "warnings": warnings,
        "options": {
            "treatment_column": treatment_column,
            "outcome_column": outcome_column,
            "baseline_column": baseline_column,
            "site_column": site_column,
            "harmonize": harmonize,
            "covariates": list(covariates),
            "better": better,
            "threshold": threshold,
            "model": model,
            "seed": seed,
            "n_boot": n_boot,
        },
        "data_hash": data.data_hash,
    }
    if ridge:
        metrics["feature_selection"] = _feature_selection_summary(
            select, fold_k, len(data.feature_names), n_null_rep
        )
    if lc_points is not None:
        metrics["learning_curve"] = lc_points
    metrics["elapsed_seconds"] = round(time.perf_counter() - start, 2)
    return ValidationResult(
        metrics=metrics,
        predictions=predictions,
        extras={
            "data": data,
            "fold_k": fold_k,
            "n_null_rep": n_null_rep,
            "pred_other": pred_other[:, :, 0],
            "harmonize": harmonize,
            "select": select,
            "splits": splits,
            "by_repeat": by_repeat,
            "permutation_null_stats": null,
        },
    )


def train(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any] | tuple[Any, ...],
    *,
    treatment_column: str,
    outcome_column: str,
    out_dir: str | Path,
    baseline_column: str | None = None,
    site_column: str | None = None,
    covariates: tuple[str, ...] | list[str] = (),
    better: str | None = None,
    cv: str = "repeated-kfold",
    n_splits: int = 5,
    n_repeats: int = 10,
    model: str = "interaction",
    n_permutations: int = 1000,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    session: str | None = None,
    permutation_null: str = "auto",
    learning_curve: bool = True,
    select: str | int | None = None,
    candidates: tuple[str, ...] | None = None,
    progress: Progress | None = None,
    scheduler: str | DaskRunner | None = None,
    permutation_repeats: int | None = None,
    harmonize: bool = True,
) -> TrainResult:
    """Validate (:func:`validate`), fit the final model on all patients and write the files.

    Takes the parameters of :func:`validate` plus

    Parameters
    ----------
    out_dir : path
        Receives ``predictions.tsv``, ``metrics.json`` (:meth:`ValidationResult.save`),
        ``model.npz`` (``report.html``: :func:`brainmatch.reports.selection.write_train_report`).

    Returns
    -------
    TrainResult
    """
    with _runner(scheduler) as runner:
        validation = validate(
            features,
            outcomes,
            treatment_column=treatment_column,
            outcome_column=outcome_column,
            baseline_column=baseline_column,
            site_column=site_column,
            covariates=covariates,
            better=better,
            cv=cv,
            n_splits=n_splits,
            n_repeats=n_repeats,
            model=model,
            n_permutations=n_permutations,
            threshold=threshold,
            n_boot=n_boot,
            seed=seed,
            session=session,
            permutation_null=permutation_null,
            learning_curve=learning_curve,
            select=select,
            candidates=candidates,
            progress=progress,
            scheduler=runner,
            permutation_repeats=permutation_repeats,
            harmonize=harmonize,
        )
        return _finish_training(
            validation,
            out_dir=out_dir,
            model=model,
            seed=seed,
            candidates=candidates,
            scheduler=runner,
        )


def _finish_training(
    validation: ValidationResult,
    *,
    out_dir: str | Path,
    model: str,
    seed: int,
    candidates: tuple[str, ...] | None,
    scheduler: DaskRunner | None,
) -> TrainResult:
    """The final model on all patients and the files of :func:`train`, after ``validation``."""
    start = time.perf_counter()
    metrics = validation.metrics
    data: TrainingData = validation.extras["data"]
    harmonize = validation.extras["harmonize"]
    select = validation.extras["select"]
    fold_k = validation.extras["fold_k"]
    n_null_rep = validation.extras["n_null_rep"]
    arms, better, threshold = metrics["arms"], metrics["better"], metrics["options"]["threshold"]
    per_arm, selection, warnings = metrics["per_arm"], metrics["selection"], metrics["warnings"]
    cv_desc = metrics["cv"]["description"]
    predictions = validation.predictions
    if model in UNSTORABLE:
        # validation only: the safe model file cannot store S-learners and EconML's
        out = Path(out_dir)
        metrics["model_file"] = None
        metrics["model_chosen"] = model
        metrics["feature_selection"] = {
            "select": "none",
            "method": None,
            "k_per_fold": fold_k,
            "final_k": None,
            "final_features": "all",
            "permutation_cv_repeats": n_null_rep,
        }
        metrics["warnings"].append(
            f"no model file: the safe model file cannot store the learner {model} (S-learners "
            "take the arm as an input; EconML's models are Python objects); its validation "
            "is in metrics.json"
        )
        metrics["tripod_ai"] = tripod_items(metrics)
        validation.write(out)
        result = TrainResult(
            out_dir=out,
            metrics=metrics,
            predictions=predictions,
            model_path=None,
            extras={
                "coef": None,
                "feature_names": data.feature_names,
                "pred_other": validation.extras["pred_other"],
            },
            validation=validation,
        )
        return result
    # final model on all patients + bootstrap refits for the recommendation's stability
    final, arrays, extras = fit_final_model(
        data,
        model=model,
        harmonize=harmonize,
        seed=seed,
        select=select,
        candidates=candidates,
        scheduler=scheduler,
    )
    p_all = len(data.feature_names)
    chosen = extras["selected"]
    feature_selection = {
        **_feature_selection_summary(select, fold_k, p_all, n_null_rep),
        "final_k": len(chosen),
        "final_features": [data.feature_names[j] for j in chosen] if len(chosen) < p_all else "all",
    }
    metrics["feature_selection"] = feature_selection
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "arms": arms,
        "feature_names": data.feature_names,
        "model": model,
        "model_chosen": extras["chosen"],
        "link": extras["link"],
        "bootstrap_refits": int(np.asarray(arrays["boot_intercept"]).shape[0]),
        "binary": data.binary,
        "better": better,
        "threshold": threshold,
        "options": metrics["options"],
        "covariate_spec": final.covariate_spec_,
        "n_outcome_only": final.n_outcome_only,
        "harmonize": harmonize,
        "sites": [] if final.combat_ is None else final.combat_.sites_.tolist(),
        "feature_provenance": data.feature_metadata,
        "training_data_hash": data.data_hash,
        "conformal": metrics["conformal"],
        "outcome_range": [float(np.min(data.y)), float(np.max(data.y))],
        "validation": {
            "per_arm": per_arm,
            "selection": {
                k2: selection[k2]
                for k2 in (
                    "benefit_d",
                    "benefit_d_ci",
                    "policy_gain",
                    "policy_gain_ci",
                    "policy_gain_d",
                    "policy_gain_d_ci",
                    "permutation_p",
                    "policy_gain_permutation_p",
                    "selection_supported",
                    "single_arm_recommended",
                    "recommended_counts",
                    "share_above_threshold",
                )
            },
            "cv": cv_desc,
            "n": metrics["n"],
            "n_per_arm": metrics["n_per_arm"],
            "warnings": warnings,
        },
        "ood": extras["ood"],
        "penalties": extras["penalties"],
        "feature_selection": feature_selection,
    }
    metrics["model_chosen"] = extras["chosen"]
    if metrics["outcome_model"].get("link") is None:
        # learners other than the ridge interaction model: the final model's own link
        metrics["outcome_model"]["link"] = extras["link"]
    metrics["tripod_ai"] = tripod_items(metrics)
    model_path = save_model(out / MODEL_FILE, arrays, meta)
    metrics["elapsed_seconds"] = round(metrics["elapsed_seconds"] + time.perf_counter() - start, 2)
    validation.write(out)
    result = TrainResult(
        out_dir=out,
        metrics=metrics,
        predictions=predictions,
        model_path=model_path,
        extras={
            # a model with trees has no coefficient map (the report then shows none)
            "coef": None if "comp_weight" in arrays else arrays["coef"],
            "feature_names": data.feature_names,
            "pred_other": validation.extras["pred_other"],
        },
        validation=validation,
    )
    return result


@dataclass
class _BootInputs:
    """Preprocessed training data of the final model (shared by its bootstrap refits)."""

    Z: NDArray[np.float64]
    C: NDArray[np.float64]
    t: NDArray[np.intp]
    k: int
    y: NDArray[np.float64]
    model: str
    select: str | int
    binary: bool
    seed: int
    fitted: Any = None  # a fitted `auto` learner: its refits keep its choice (or stack)


def _bootstrap_refit(b: _BootInputs, idx: NDArray[np.intp]) -> tuple[dict[str, Any], None]:
    """Primal coefficients of one bootstrap refit (rows ``idx``) of the final model."""
    with _one_blas_thread():
        if b.model in MODELS:
            fitted = make_arm_models(b.model, b.select, b.binary).fit(
                b.Z[idx], b.C[idx], b.t[idx], b.k, b.y[idx, None]
            )
            return fitted.primal(0), None
        if hasattr(b.fitted, "refit_chosen"):  # auto: the same learner or stack
            fb = b.fitted.refit_chosen(b.Z[idx], b.C[idx], b.t[idx], b.k, b.y[idx])
        else:
            fb = make_learner(b.model, b.binary, b.seed).fit(
                b.Z[idx], b.C[idx], b.t[idx], b.k, b.y[idx]
            )
        return fb.export(), None


def fit_final_model(
    data: TrainingData,
    *,
    model: str,
    harmonize: bool,
    seed: int,
    select: str | int = "none",
    candidates: tuple[str, ...] | None = None,
    scheduler: str | DaskRunner | None = None,
) -> tuple[Preprocessor, dict[str, NDArray[Any]], dict[str, Any]]:
    """Fit preprocessing and the arm models on all patients; bootstrap refits for stability.

    With screening, every bootstrap refit screens its own resample again (keeping the final
    model's number of features), so the recommendation's stability includes the
    variability of the selected set.  Learners other than the ridge models: the final fit
    (for ``auto``: the choice, then the chosen learner or stack) and ``N_BOOTSTRAP_OTHER``
    refits of that choice, exported as arrays (boosted trees as node arrays); S-learners
    and EconML's cannot be stored (``BrainmatchInputError``).
    """
    if model not in MODELS:
        return _fit_final_learner(
            data,
            model=model,
            harmonize=harmonize,
            seed=seed,
            candidates=candidates,
            scheduler=scheduler,
        )
    k = len(data.arms)
    t = np.searchsorted(data.arms, data.treatment)
    n_outcome_only = 1 if data.baseline else 0
    pre = Preprocessor(harmonize=harmonize, n_outcome_only=n_outcome_only)
    with _one_blas_thread():
        Z, C = pre.fit_transform(data.X, data.covariates, data.sites)
        fitted = make_arm_models(model, select, data.binary).fit(Z, C, t, k, data.y[:, None])
        primal = fitted.primal(0)
        boot_select: str | int = "none"
        if isinstance(fitted, ScreenedArmModels):
            boot_select = fitted.refit_select(0)
        rng = np.random.default_rng([seed, 3])
        draws = [
            (
                np.concatenate(
                    [rng.choice(np.flatnonzero(t == a), (t == a).sum()) for a in range(k)]
                ),
            )
            for _ in range(N_BOOTSTRAP_MODELS)
        ]
    # a screened final model is a linear-probability ridge for a 0/1 outcome: its refits
    # too, also when they keep every feature (select "none" would make them logistic)
    boot_binary = data.binary and not isinstance(fitted, ScreenedArmModels)
    boot = _BootInputs(Z, C, t, k, data.y, model, boot_select, boot_binary, seed)
    with _runner(scheduler) as runner:
        refits = list(_run_folds(_bootstrap_refit, boot, draws, runner, None))
    score = (Z**2).mean(axis=1)
    arrays: dict[str, NDArray[Any]] = {
        # the RBF ridge adds its cosine components, the hinge basis its hinges (one pool:
        # every refit shares the map or the knots), the product basis two squares per
        # product it uses (equal ones of the refits stored once)
        **export_arrays(primal, [b for b, _ in refits]),
        "medians": pre.medians_,
        "confound_coef": pre.confound_coef_,
        "mean": pre.mean_,
        "sd": pre.sd_,
        "train_sd_raw": np.nanstd(data.X, axis=0),
    }
    if isinstance(fitted, ScreenedArmModels):
        arrays["selected"] = fitted.selected(0).astype(np.int64)
    if pre.combat_ is not None:
        cb = pre.combat_
        arrays.update(
            {
                "combat_grand_mean": cb.grand_mean_,
                "combat_var_pooled": cb.var_pooled_,
                "combat_beta_covariates": cb.beta_covariates_,
                "combat_gamma": cb.gamma_,
                "combat_delta": cb.delta_,
            }
        )
    extras = {
        "chosen": fitted.chosen(model) if isinstance(fitted, ScreenedArmModels) else model,
        "link": getattr(fitted, "link_", "identity-clipped" if data.binary else "identity"),
        "ood": {
            "score": "mean squared standardised feature value",
            "p99": float(np.percentile(score, 99)),
            "max": float(score.max()),
        },
        "penalties": fitted.penalties(),
        "selected": (
            fitted.selected(0) if isinstance(fitted, ScreenedArmModels) else np.arange(Z.shape[1])
        ),
    }
    return pre, arrays, extras


def _fit_final_learner(
    data: TrainingData,
    *,
    model: str,
    harmonize: bool,
    seed: int,
    candidates: tuple[str, ...] | None = None,
    scheduler: str | DaskRunner | None = None,
) -> tuple[Preprocessor, dict[str, NDArray[Any]], dict[str, Any]]:
    k = len(data.arms)
    t = np.searchsorted(data.arms, data.treatment)
    pre = Preprocessor(harmonize=harmonize, n_outcome_only=1 if data.baseline else 0)
    with _one_blas_thread():
        Z, C = pre.fit_transform(data.X, data.covariates, data.sites)
        fitted = make_learner(model, data.binary, seed, candidates).fit(Z, C, t, k, data.y)
        chosen = str(getattr(fitted, "chosen_", model))
        if not fitted.storable:
            raise BrainmatchInputError(
                f"model={model}: the final learner ({chosen}) cannot be stored in the safe "
                "model file (S-learners and EconML's models); use validate() to assess it"
            )
        primal = fitted.export()
        rng = np.random.default_rng([seed, 3])
        draws = [
            (
                np.concatenate(
                    [rng.choice(np.flatnonzero(t == a), (t == a).sum()) for a in range(k)]
                ),
            )
            for _ in range(N_BOOTSTRAP_OTHER)
        ]
    boot = _BootInputs(Z, C, t, k, data.y, model, "none", data.binary, seed, fitted)
    with _runner(scheduler) as runner:
        refits = list(_run_folds(_bootstrap_refit, boot, draws, runner, None))
    boots = [b for b, _ in refits]
    score = (Z**2).mean(axis=1)
    arrays: dict[str, NDArray[Any]] = {
        **export_arrays(primal, boots),
        "medians": pre.medians_,
        "confound_coef": pre.confound_coef_,
        "mean": pre.mean_,
        "sd": pre.sd_,
        "train_sd_raw": np.nanstd(data.X, axis=0),
    }
    if pre.combat_ is not None:
        cb = pre.combat_
        arrays.update(
            {
                "combat_grand_mean": cb.grand_mean_,
                "combat_var_pooled": cb.var_pooled_,
                "combat_beta_covariates": cb.beta_covariates_,
                "combat_gamma": cb.gamma_,
                "combat_delta": cb.delta_,
            }
        )
    used = np.flatnonzero(np.abs(primal["coef"]).sum(axis=0) > 0)
    if primal.get("components") is not None:
        p = Z.shape[1]
        inputs = primal["components"].used_inputs()
        used = np.union1d(used, inputs[inputs < p])
    extras = {
        "chosen": chosen,
        "link": primal["link"],
        "ood": {
            "score": "mean squared standardised feature value",
            "p99": float(np.percentile(score, 99)),
            "max": float(score.max()),
        },
        "penalties": fitted.penalties(),
        "selected": np.arange(Z.shape[1]) if used.size == 0 else used,
    }
    return pre, arrays, extras
