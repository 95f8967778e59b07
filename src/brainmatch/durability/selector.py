"""Survival models per arm and a treatment selector by relapse-free survival.

:class:`CoxModel` is a scikit-learn-style wrapper of lifelines' ``CoxPHFitter`` (Efron
ties, L2 or L1 penalty on standardised features; coefficients reported on the original
scale; tested equal to lifelines on its shipped Rossi data).  :class:`PseudoSurvivalModel`
is the meta-learner alternative: a lasso (scikit-learn) on jackknife pseudo-observations
of the Kaplan-Meier relapse-free probability at times from 0 to the horizon (Andersen &
Perme 2010), a T-learner when fitted per arm.  :class:`SurvivalSelector` fits one of them
per arm (potential outcomes for survival), or one stratified Cox model with arm-by-feature
interactions, or chooses among the per-arm learners by inner cross-validation of the
policy's restricted mean survival time; it predicts each patient's relapse-free probability
at a horizon under every arm with a bootstrap interval, and recommends the arm with the
highest one.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError

MODELS = ("lasso-cox", "per-arm", "interaction", "pseudo", "auto")
#: The learners ``model="auto"`` chooses among (each can be saved in a model file).
AUTO_CANDIDATES = ("per-arm", "lasso-cox", "pseudo")
#: Penalty of each Cox learner when ``penalizer`` is None (standardised features).
DEFAULT_PENALTY = {"per-arm": 0.5, "interaction": 0.5, "lasso-cox": 0.05}
#: Penalties tried by ``penalizer="auto"`` (inner cross-validation).
PENALTY_GRID = (0.05, 0.2, 0.5, 1.0, 2.0)
#: Time points (0 to the horizon) of the stored and shown relapse-free curves, and of the
#: pseudo-observations the ``pseudo`` learner is fitted to.
N_GRID = 27


def curve_times(horizon: float) -> NDArray[np.float64]:
    """The times (0 to ``horizon``) at which relapse-free curves are stored and shown."""
    return np.linspace(0.0, float(horizon), N_GRID)


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
        Penalty (lifelines' ``penalizer``) on the standardised coefficients.
    l1_ratio : float
        lifelines' elastic-net mixing: 0 = ridge (L2), 1 = lasso (L1).
    """

    def __init__(self, penalizer: float = 0.0, l1_ratio: float = 0.0) -> None:
        self.penalizer = penalizer
        self.l1_ratio = l1_ratio

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
                fitter = CoxPHFitter(penalizer=self.penalizer, l1_ratio=self.l1_ratio).fit(
                    df, "__t", "__e"
                )
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


class PseudoSurvivalModel:
    """Lasso on pseudo-observations of relapse-free survival (scikit-learn style).

    The jackknife pseudo-observations of the Kaplan-Meier relapse-free probability at
    :data:`N_GRID` times from 0 to ``horizon`` are regressed on the standardised features
    by one lasso per time with a common penalty (chosen by ``cv``-fold cross-validation at
    the horizon unless ``alpha`` is given).  Predictions are clipped to [0, 1] and made
    non-increasing in time; between grid times they are interpolated linearly, beyond the
    horizon held at the horizon's value.

    Parameters
    ----------
    horizon : float
    alpha : float, optional
        Lasso penalty (scikit-learn's ``alpha``); None: chosen by ``LassoCV``.
    cv : int
        Folds of the penalty's cross-validation.
    seed : int
    """

    def __init__(
        self, horizon: float = 52.0, alpha: float | None = None, cv: int = 5, seed: int = 0
    ) -> None:
        self.horizon = horizon
        self.alpha = alpha
        self.cv = cv
        self.seed = seed

    def fit(self, X: Any, time: Any, event: Any) -> PseudoSurvivalModel:
        """Fit on features ``X`` (n, p), times and event indicators."""
        from sklearn.linear_model import Lasso, LassoCV
        from sklearn.model_selection import KFold

        from brainmatch.durability.metrics import pseudo_survival

        X = np.asarray(X, dtype=float)
        t, e = _check_survival(time, event, X.shape[0])
        if e.sum() < 2:
            raise BrainmatchInputError(
                f"only {int(e.sum())} event(s): a survival model needs events to learn from"
            )
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        Z = (X - self.mean_) / self.scale_
        self.times_ = curve_times(self.horizon)
        Y = pseudo_survival(t, e, self.times_)
        if self.alpha is None:
            folds = KFold(min(self.cv, X.shape[0]), shuffle=True, random_state=self.seed)
            self.alpha_ = float(LassoCV(alphas=30, cv=folds).fit(Z, Y[:, -1]).alpha_)
        else:
            self.alpha_ = float(self.alpha)
        lasso = Lasso(alpha=self.alpha_).fit(Z, Y)
        self.coef_ = np.atleast_2d(lasso.coef_)
        self.intercept_ = np.atleast_1d(lasso.intercept_)
        return self

    def predict_grid(self, X: Any) -> NDArray[np.float64]:
        """Relapse-free probability at ``times_``: shape (n, N_GRID), non-increasing."""
        Z = (np.asarray(X, dtype=float) - self.mean_) / self.scale_
        P = np.clip(Z @ self.coef_.T + self.intercept_[None, :], 0.0, 1.0)
        return np.minimum.accumulate(P, axis=1)

    def predict_survival(self, X: Any, times: Any) -> NDArray[np.float64]:
        """``S(t | x)`` at ``times``, shape (n, len(times))."""
        times = np.atleast_1d(np.asarray(times, dtype=float))
        P = self.predict_grid(X)
        pos = np.interp(times, self.times_, np.arange(self.times_.size))
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, self.times_.size - 1)
        frac = pos - lo
        return P[:, lo] * (1 - frac)[None, :] + P[:, hi] * frac[None, :]


class SurvivalSelector:
    """Treatment selection by predicted relapse-free survival at a horizon.

    Parameters
    ----------
    horizon : float
        Time (in the unit of ``time``) at which relapse-free probability is compared.
    model : {"lasso-cox", "per-arm", "interaction", "pseudo", "auto"}
        ``lasso-cox``: one L1-penalised Cox model per arm; ``per-arm``: one L2-penalised
        (ridge) Cox model per arm; ``interaction``: one ridge Cox model stratified by arm (a
        baseline hazard per arm) with shared feature effects plus arm-by-feature
        interactions (validation only: it cannot be saved); ``pseudo``: a T-learner, one
        :class:`PseudoSurvivalModel` (lasso on pseudo-observations) per arm; ``auto``: the
        one of :data:`AUTO_CANDIDATES` whose recommendations give the highest restricted
        mean survival time to the horizon (IPW Kaplan-Meier of the patients who received
        the recommended arm) in inner 3-fold cross-validation.
    penalizer : float, "auto" or None
        Penalty of the Cox models on standardised coefficients; None: the model's default
        (:data:`DEFAULT_PENALTY`); ``"auto"`` chooses it from :data:`PENALTY_GRID` by inner
        3-fold cross-validation (Harrell's C of the received arm's predicted relapse-free
        probability at the horizon).  Not used by ``pseudo`` (its lasso penalty is chosen
        by cross-validation) nor by ``auto`` (each candidate takes its default).
    n_bootstrap : int
        Bootstrap refits for the intervals of the predictions (0: none).
    level : float
        Interval level.
    seed : int
    """

    def __init__(
        self,
        horizon: float = 52.0,
        model: str = "lasso-cox",
        penalizer: float | str | None = None,
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
        model: str | None = None,
        alphas: list[float | None] | None = None,
    ) -> list[Any]:
        model = self.model_ if model is None else model
        if penalizer is not None:
            pen = penalizer
        elif model == getattr(self, "model_", None) and hasattr(self, "penalizer_"):
            pen = self.penalizer_
        else:
            pen = DEFAULT_PENALTY.get(model, 0.0)
        if model == "interaction":
            return [_StratifiedInteractionCox(pen, self.arms_).fit(X, t, e, arm)]
        out: list[Any] = []
        for k, a in enumerate(self.arms_):
            m = arm == a
            learner: Any
            if model == "pseudo":
                alpha = None if alphas is None else alphas[k]
                learner = PseudoSurvivalModel(self.horizon, alpha=alpha, seed=self.seed)
            else:
                learner = CoxModel(pen, 1.0 if model == "lasso-cox" else 0.0)
            out.append(learner.fit(X[m], t[m], e[m]))
        return out

    def _inner_folds(self, e: NDArray[np.float64], arm: NDArray[Any]) -> NDArray[np.intp]:
        rng = np.random.default_rng(self.seed)
        strata = np.array([f"{a}|{int(v)}" for a, v in zip(arm, e, strict=True)])
        fold = np.empty(len(e), dtype=np.intp)
        for key in np.unique(strata):
            idx = rng.permutation(np.flatnonzero(strata == key))
            fold[idx] = np.arange(idx.size) % 3
        return fold

    def _choose_model(
        self,
        X: NDArray[np.float64],
        t: NDArray[np.float64],
        e: NDArray[np.float64],
        arm: NDArray[Any],
    ) -> str:
        """The candidate whose inner out-of-fold recommendations give the highest policy
        RMST to the horizon."""
        from brainmatch.durability.validate import policy_rmst

        fold = self._inner_folds(e, arm)
        scores: dict[str, float] = {}
        for cand in AUTO_CANDIDATES:
            pred = np.full((len(t), len(self.arms_)), np.nan)
            try:
                for f in range(3):
                    test = fold == f
                    models = self._fit_once(X[~test], t[~test], e[~test], arm[~test], model=cand)
                    pred[test] = self._rfs(models, X[test], np.array([self.horizon]), cand)[..., 0]
            except BrainmatchInputError:
                continue
            rec = np.array(self.arms_)[np.argmax(pred, axis=1)]
            scores[cand] = policy_rmst(t, e, arm, rec, self.horizon)
        self.model_scores_ = scores
        if not scores:
            raise BrainmatchInputError(
                "model auto: no candidate survival model could be fitted in inner "
                "cross-validation (too few events per arm)"
            )
        return max(scores, key=lambda k: (scores[k], -AUTO_CANDIDATES.index(k)))

    def _choose_penalizer(
        self,
        X: NDArray[np.float64],
        t: NDArray[np.float64],
        e: NDArray[np.float64],
        arm: NDArray[Any],
    ) -> float:
        from brainmatch.durability.metrics import harrell_c

        fold = self._inner_folds(e, arm)
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
            return DEFAULT_PENALTY.get(self.model_, 0.5)
        return max(scores, key=lambda k: (scores[k], k))

    def harmonise(self, X: Any, sites: Any = None) -> NDArray[np.float64]:
        """The features as the models see them: ComBat-harmonised when ``fit`` was given
        ``sites`` (then ``sites`` is required here too), else unchanged."""
        X = np.asarray(X, dtype=float)
        combat = getattr(self, "combat_", None)
        if combat is None:
            return X
        if sites is None:
            raise BrainmatchInputError(
                "sites: the model was fitted with site harmonisation (ComBat); pass each "
                "patient's site"
            )
        return np.asarray(combat.transform(X, sites=np.asarray(sites).astype(str)))

    def fit(
        self, X: Any, time: Any, event: Any, arm: Any, *, sites: Any = None
    ) -> SurvivalSelector:
        """Fit the survival models of every arm.

        ``sites`` (one label per row, optional): features are harmonised across sites by
        ComBat (:class:`brainmatch.harmonize.ComBat`, empirical Bayes) fitted on these
        patients before the models are fitted; predictions then need the sites too.
        """
        if self.model not in MODELS:
            raise BrainmatchInputError(f"model {self.model!r}: use one of {', '.join(MODELS)}")
        if not (self.horizon > 0):
            raise BrainmatchInputError(f"horizon {self.horizon}: must be a positive time")
        X = np.asarray(X, dtype=float)
        t, e = _check_survival(time, event, X.shape[0])
        arm = np.asarray(arm).astype(str)
        self.combat_ = None
        if sites is not None:
            from brainmatch.harmonize import ComBat

            site_arr = np.asarray(sites).astype(str)
            if site_arr.shape != (X.shape[0],):
                raise BrainmatchInputError(f"sites: expected {X.shape[0]} labels")
            if np.unique(site_arr).size > 1:
                self.combat_ = ComBat().fit(X, sites=site_arr)
                X = np.asarray(self.combat_.transform(X, sites=site_arr))
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
        pen = self.penalizer
        if self.model in ("pseudo", "auto") and pen is not None:
            raise BrainmatchInputError(
                f"penalizer: not used with model {self.model!r} (the pseudo-observation "
                "lasso's penalty is chosen by cross-validation; auto's candidates take their "
                "default penalties)"
            )
        if not (pen is None or pen == "auto" or (isinstance(pen, int | float) and pen >= 0)):
            raise BrainmatchInputError(f"--penalizer {pen!r}: use a number >= 0 or auto")
        self.model_scores_ = {}
        self.model_ = self._choose_model(X, t, e, arm) if self.model == "auto" else self.model
        if pen == "auto":
            self.penalizer_ = self._choose_penalizer(X, t, e, arm)
        elif pen is None:
            self.penalizer_ = DEFAULT_PENALTY.get(self.model_, 0.0)
        else:
            self.penalizer_ = float(pen)
        self.models_ = self._fit_once(X, t, e, arm)
        alphas = [m.alpha_ for m in self.models_] if self.model_ == "pseudo" else None
        self.boot_ = []
        if self.n_bootstrap:
            rng = np.random.default_rng(self.seed)
            for _ in range(self.n_bootstrap):
                idx = np.concatenate(
                    [rng.choice(np.flatnonzero(arm == a), (arm == a).sum()) for a in self.arms_]
                )
                try:
                    self.boot_.append(
                        self._fit_once(X[idx], t[idx], e[idx], arm[idx], alphas=alphas)
                    )
                except BrainmatchInputError:
                    continue
        return self

    # --------------------------------------------------------------- prediction
    def _rfs(
        self,
        models: list[Any],
        X: NDArray[np.float64],
        times: NDArray[np.float64],
        model: str | None = None,
    ) -> NDArray[np.float64]:
        if (self.model_ if model is None else model) == "interaction":
            return models[0].predict_survival(X, times)
        return np.stack([m.predict_survival(X, times) for m in models], axis=1)

    def predict_survival(self, X: Any, times: Any, *, sites: Any = None) -> NDArray[np.float64]:
        """``S_a(t | x)`` for every arm: shape (n, n_arms, len(times))."""
        X = self.harmonise(X, sites)
        return self._rfs(self.models_, X, np.atleast_1d(np.asarray(times, dtype=float)))

    def predict_rfs(self, X: Any, *, sites: Any = None) -> NDArray[np.float64]:
        """Relapse-free probability at the horizon under every arm, shape (n, n_arms)."""
        return self.predict_survival(X, [self.horizon], sites=sites)[..., 0]

    def predict_draws(self, X: Any, *, sites: Any = None) -> NDArray[np.float64]:
        """:meth:`predict_rfs` of every bootstrap refit: shape (n_bootstrap, n, n_arms)."""
        if not self.boot_:
            raise BrainmatchInputError("no bootstrap refits: set n_bootstrap > 0 before fit")
        X = self.harmonise(X, sites)
        return np.stack([self._rfs(m, X, np.array([self.horizon]))[..., 0] for m in self.boot_])

    def predict_interval(
        self, X: Any, *, sites: Any = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Bootstrap percentile interval of :meth:`predict_rfs` (needs ``n_bootstrap``)."""
        if not self.boot_:
            raise BrainmatchInputError("no bootstrap refits: set n_bootstrap > 0 before fit")
        X = self.harmonise(X, sites)
        draws = np.stack([self._rfs(m, X, np.array([self.horizon]))[..., 0] for m in self.boot_])
        a = (1 - self.level) / 2
        return np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)

    def recommend(self, X: Any, *, sites: Any = None) -> NDArray[np.str_]:
        """The arm with the highest predicted relapse-free probability at the horizon."""
        return np.array(self.arms_)[np.argmax(self.predict_rfs(X, sites=sites), axis=1)]


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
