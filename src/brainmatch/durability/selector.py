"""Penalised Cox models per arm and a treatment selector by relapse-free survival.

:class:`CoxModel` is a scikit-learn-style wrapper of lifelines' ``CoxPHFitter`` (Efron
ties, L2 penalty on standardised features; coefficients reported on the original scale;
tested equal to lifelines on its shipped Rossi data).  :class:`SurvivalSelector` fits one
per arm (potential outcomes for survival), or one stratified model with arm-by-feature
interactions, predicts each patient's relapse-free probability at a horizon under every
arm with a bootstrap interval, and recommends the arm with the highest one.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError

MODELS = ("per-arm", "interaction")
#: Penalties tried by ``penalizer="auto"`` (inner cross-validation).
PENALTY_GRID = (0.05, 0.2, 0.5, 1.0, 2.0)


def _lifelines() -> Any:
    """lifelines (the optional ``survival`` extra), or one clear message."""
    try:
        import lifelines
    except ImportError:
        raise BrainmatchInputError(
            "survival models need lifelines: pip install 'brainmatch[survival]'"
        ) from None
    return lifelines


def _no_convergence(exc: Exception, n_features: int, e: NDArray[np.float64]) -> str:
    return (
        f"the Cox model did not converge ({type(exc).__name__}) with {n_features} feature(s) "
        f"and {int(e.sum())} event(s): raise --penalizer, or select fewer features "
        "(--measures / a smaller feature table)"
    )


def _check_survival(
    time: Any, event: Any, n: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=float)
    if t.shape != (n,) or e.shape != (n,):
        raise BrainmatchInputError(f"time / event: expected {n} values each")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise BrainmatchInputError(
            "time: every time to event or censoring must be a positive number"
        )
    if not np.all(np.isin(e, (0.0, 1.0))):
        raise BrainmatchInputError("event: must be 0 (censored) or 1 (event)")
    return t, e


class CoxModel:
    """Cox proportional-hazards model (lifelines), scikit-learn style.

    Parameters
    ----------
    penalizer : float
        L2 penalty (lifelines' ``penalizer``) on the standardised coefficients.
    """

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(self, X: Any, time: Any, event: Any) -> CoxModel:
        """Fit on features ``X`` (n, p), times and event indicators."""
        CoxPHFitter = _lifelines().CoxPHFitter
        X = np.asarray(X, dtype=float)
        t, e = _check_survival(time, event, X.shape[0])
        if e.sum() < 2:
            raise BrainmatchInputError(
                f"only {int(e.sum())} event(s): a Cox model needs events to learn from"
            )
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        Z = (X - self.mean_) / self.scale_
        cols = [f"x{j}" for j in range(X.shape[1])]
        df = pd.DataFrame(Z, columns=cols).assign(__t=t, __e=e)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fitter = CoxPHFitter(penalizer=self.penalizer).fit(df, "__t", "__e")
            except Exception as exc:  # lifelines' ConvergenceError and numerical failures
                raise BrainmatchInputError(_no_convergence(exc, X.shape[1], e)) from None
        self.coef_std_ = fitter.params_.to_numpy()
        self.coef_ = self.coef_std_ / self.scale_
        # Breslow baseline cumulative hazard at the standardised mean (x = mean_)
        bch = fitter.baseline_cumulative_hazard_
        self.times_ = bch.index.to_numpy(dtype=float)
        self.cumhaz_ = bch.iloc[:, 0].to_numpy(dtype=float)
        self.concordance_ = float(fitter.concordance_index_)
        return self

    def predict_risk(self, X: Any) -> NDArray[np.float64]:
        """Linear predictor ``(x - mean) . beta`` (higher = earlier event)."""
        return ((np.asarray(X, dtype=float) - self.mean_) / self.scale_) @ self.coef_std_

    def predict_survival(self, X: Any, times: Any) -> NDArray[np.float64]:
        """``S(t | x)`` at ``times``, shape (n, len(times))."""
        times = np.atleast_1d(np.asarray(times, dtype=float))
        idx = np.searchsorted(self.times_, times, side="right") - 1
        h0 = np.where(idx >= 0, self.cumhaz_[np.maximum(idx, 0)], 0.0)
        return np.exp(-np.exp(self.predict_risk(X))[:, None] * h0[None, :])


class SurvivalSelector:
    """Treatment selection by predicted relapse-free survival at a horizon.

    Parameters
    ----------
    horizon : float
        Time (in the unit of ``time``) at which relapse-free probability is compared.
    model : {"per-arm", "interaction"}
        One Cox model per arm, or one model stratified by arm (a baseline hazard per arm)
        with shared feature effects plus arm-by-feature interactions.
    penalizer : float or "auto"
        L2 penalty on standardised coefficients; ``"auto"`` chooses it from
        :data:`PENALTY_GRID` by inner 3-fold cross-validation (Harrell's C of the received
        arm's predicted relapse-free probability at the horizon).
    n_bootstrap : int
        Bootstrap refits for the intervals of the predictions (0: none).
    level : float
        Interval level.
    seed : int
    """

    def __init__(
        self,
        horizon: float = 52.0,
        model: str = "per-arm",
        penalizer: float | str = 0.5,
        n_bootstrap: int = 0,
        level: float = 0.95,
        seed: int = 0,
    ) -> None:
        self.horizon = horizon
        self.model = model
        self.penalizer = penalizer
        self.n_bootstrap = n_bootstrap
        self.level = level
        self.seed = seed

    # ------------------------------------------------------------------ fitting
    def _fit_once(
        self,
        X: NDArray[np.float64],
        t: NDArray[np.float64],
        e: NDArray[np.float64],
        arm: NDArray[Any],
        penalizer: float | None = None,
    ) -> list[Any]:
        pen = self.penalizer_ if penalizer is None else penalizer
        if self.model == "per-arm":
            return [CoxModel(pen).fit(X[arm == a], t[arm == a], e[arm == a]) for a in self.arms_]
        return [_StratifiedInteractionCox(pen, self.arms_).fit(X, t, e, arm)]

    def _choose_penalizer(
        self,
        X: NDArray[np.float64],
        t: NDArray[np.float64],
        e: NDArray[np.float64],
        arm: NDArray[Any],
    ) -> float:
        from brainmatch.durability.metrics import harrell_c

        rng = np.random.default_rng(self.seed)
        strata = np.array([f"{a}|{int(v)}" for a, v in zip(arm, e, strict=True)])
        fold = np.empty(len(t), dtype=int)
        for key in np.unique(strata):
            idx = rng.permutation(np.flatnonzero(strata == key))
            fold[idx] = np.arange(idx.size) % 3
        col = np.array([self.arms_.index(a) for a in arm])
        scores: dict[float, float] = {}
        for pen in PENALTY_GRID:
            pred = np.full(len(t), np.nan)
            try:
                for f in range(3):
                    test = fold == f
                    models = self._fit_once(X[~test], t[~test], e[~test], arm[~test], pen)
                    rfs = self._rfs(models, X[test], np.array([self.horizon]))[..., 0]
                    pred[test] = rfs[np.arange(int(test.sum())), col[test]]
            except BrainmatchInputError:
                continue
            scores[pen] = harrell_c(t, e, -pred)
        self.penalty_scores_ = scores
        if not scores:
            return 0.5
        return max(scores, key=lambda k: (scores[k], k))

    def fit(self, X: Any, time: Any, event: Any, arm: Any) -> SurvivalSelector:
        """Fit the survival models of every arm."""
        if self.model not in MODELS:
            raise BrainmatchInputError(f"model {self.model!r}: use one of {', '.join(MODELS)}")
        if not (self.horizon > 0):
            raise BrainmatchInputError(f"horizon {self.horizon}: must be a positive time")
        X = np.asarray(X, dtype=float)
        t, e = _check_survival(time, event, X.shape[0])
        arm = np.asarray(arm).astype(str)
        self.arms_ = sorted(np.unique(arm))
        if len(self.arms_) < 2:
            raise BrainmatchInputError("treatment: need at least two arms")
        for a in self.arms_:
            ev = int(e[arm == a].sum())
            if ev < 2:
                raise BrainmatchInputError(
                    f"arm {a!r} has {ev} event(s) in the data: its survival cannot be modelled "
                    "(an event-free arm); lengthen follow-up or drop the arm"
                )
            at_risk = int((t[arm == a] >= self.horizon).sum())
            if at_risk == 0:
                raise BrainmatchInputError(
                    f"arm {a!r}: nobody is followed to the horizon {self.horizon:g}; choose a "
                    "shorter --horizon"
                )
        if self.penalizer == "auto":
            self.penalizer_ = self._choose_penalizer(X, t, e, arm)
        elif isinstance(self.penalizer, int | float) and self.penalizer >= 0:
            self.penalizer_ = float(self.penalizer)
        else:
            raise BrainmatchInputError(f"--penalizer {self.penalizer!r}: use a number >= 0 or auto")
        self.models_ = self._fit_once(X, t, e, arm)
        self.boot_ = []
        if self.n_bootstrap:
            rng = np.random.default_rng(self.seed)
            for _ in range(self.n_bootstrap):
                idx = np.concatenate(
                    [rng.choice(np.flatnonzero(arm == a), (arm == a).sum()) for a in self.arms_]
                )
                try:
                    self.boot_.append(self._fit_once(X[idx], t[idx], e[idx], arm[idx]))
                except BrainmatchInputError:
                    continue
        return self

    # --------------------------------------------------------------- prediction
    def _rfs(
        self, models: list[Any], X: NDArray[np.float64], times: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        if self.model == "per-arm":
            return np.stack([m.predict_survival(X, times) for m in models], axis=1)
        return models[0].predict_survival(X, times)

    def predict_survival(self, X: Any, times: Any) -> NDArray[np.float64]:
        """``S_a(t | x)`` for every arm: shape (n, n_arms, len(times))."""
        X = np.asarray(X, dtype=float)
        return self._rfs(self.models_, X, np.atleast_1d(np.asarray(times, dtype=float)))

    def predict_rfs(self, X: Any) -> NDArray[np.float64]:
        """Relapse-free probability at the horizon under every arm, shape (n, n_arms)."""
        return self.predict_survival(X, [self.horizon])[..., 0]

    def predict_interval(self, X: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Bootstrap percentile interval of :meth:`predict_rfs` (needs ``n_bootstrap``)."""
        if not self.boot_:
            raise BrainmatchInputError("no bootstrap refits: set n_bootstrap > 0 before fit")
        X = np.asarray(X, dtype=float)
        draws = np.stack([self._rfs(m, X, np.array([self.horizon]))[..., 0] for m in self.boot_])
        a = (1 - self.level) / 2
        return np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)

    def recommend(self, X: Any) -> NDArray[np.str_]:
        """The arm with the highest predicted relapse-free probability at the horizon."""
        return np.array(self.arms_)[np.argmax(self.predict_rfs(X), axis=1)]


class _StratifiedInteractionCox:
    """One Cox model stratified by arm, with arm-by-feature interactions (lifelines)."""

    def __init__(self, penalizer: float, arms: list[str]) -> None:
        self.penalizer = penalizer
        self.arms = arms

    def _design(self, X: NDArray[np.float64], arm: NDArray[Any]) -> pd.DataFrame:
        Z = (X - self.mean_) / self.scale_
        cols = {f"x{j}": Z[:, j] for j in range(Z.shape[1])}
        for a in self.arms[1:]:
            ind = (arm == a).astype(float)
            for j in range(Z.shape[1]):
                cols[f"x{j}:{a}"] = Z[:, j] * ind
        return pd.DataFrame(cols)

    def fit(
        self,
        X: NDArray[np.float64],
        t: NDArray[np.float64],
        e: NDArray[np.float64],
        arm: NDArray[Any],
    ) -> _StratifiedInteractionCox:
        CoxPHFitter = _lifelines().CoxPHFitter
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        df = self._design(X, arm).assign(__t=t, __e=e, __arm=arm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                self.fitter_ = CoxPHFitter(penalizer=self.penalizer).fit(
                    df, "__t", "__e", strata=["__arm"]
                )
            except Exception as exc:
                raise BrainmatchInputError(_no_convergence(exc, X.shape[1], e)) from None
        return self

    def predict_survival(
        self, X: NDArray[np.float64], times: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        out = np.empty((X.shape[0], len(self.arms), len(times)))
        for k, a in enumerate(self.arms):
            df = self._design(X, np.full(X.shape[0], a)).assign(__arm=a)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sf = self.fitter_.predict_survival_function(df, times=times)
            out[:, k, :] = sf.to_numpy().T
        return out
