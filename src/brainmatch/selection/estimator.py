"""``TreatmentSelector``: a scikit-learn-style treatment-selection estimator.

>>> sel = TreatmentSelector(learner="auto").fit(X, treatment, y, baseline=hamd0, sites=site)
>>> sel.predict_outcomes(X_new, baseline=hamd0_new, sites=site_new)   # one column per arm
>>> sel.recommend(X_new, baseline=hamd0_new, sites=site_new)          # arm, advantage
>>> sel.save("model.npz"); TreatmentSelector.load("model.npz")

``__init__`` only stores parameters; ``fit`` learns everything (imputation, ComBat,
confound removal and scaling in :class:`~brainmatch.selection.pipeline.Preprocessor`, then
the learner of :mod:`brainmatch.selection.learners`) and returns ``self``; fitted state
ends in ``_``.  No file is touched except by :meth:`save` / :meth:`load`, which use the
safe model file (:mod:`brainmatch.selection.modelfile`: NPZ + JSON, no code execution),
the same format :func:`brainmatch.selection.train` writes and
:func:`brainmatch.selection.recommend` reads.  Honest validation is
:func:`cross_validate` (or :func:`brainmatch.selection.validate` on tables).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_limits

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection.learners import (
    Learner,
    check_learner,
    export_arrays,
    make_learner,
    predict_exported,
    spec_from_arrays,
)
from brainmatch.selection.modelfile import load_model, save_model
from brainmatch.selection.pipeline import Preprocessor
from brainmatch.validation.result import ValidationResult

ID = "participant_id"


class _Exported(Learner):
    """A learner rebuilt from a model file's arrays (linear coefficients and, for the
    non-linear learners, tree components: :mod:`brainmatch.selection.trees`)."""

    def __init__(self, spec: dict[str, Any], name: str) -> None:
        super().__init__(binary=spec["link"] != "identity")
        self.spec, self.name = spec, name
        self.linear = spec.get("components") is None

    def predict(self, Z: NDArray[np.float64], C: NDArray[np.float64]) -> NDArray[np.float64]:
        return predict_exported(Z, C, self.spec)

    def primal(self) -> dict[str, Any]:
        return {k: self.spec[k] for k in ("coef", "intercept", "cov_coef", "link")}

    def export(self) -> dict[str, Any]:
        return dict(self.spec)


def _as_2d(X: ArrayLike | pd.DataFrame, name: str) -> tuple[NDArray[np.float64], list[str]]:
    if isinstance(X, pd.DataFrame):
        cols = [c for c in X.columns if c != ID]
        try:
            arr = X[cols].to_numpy(dtype=float)
        except (TypeError, ValueError):
            raise BrainmatchInputError(f"{name} must hold numbers only") from None
        return arr, [str(c) for c in cols]
    try:
        arr = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise BrainmatchInputError(f"{name} must hold numbers only") from None
    if arr.ndim != 2:
        raise BrainmatchInputError(f"{name} must be 2-D (patients x features), got {arr.ndim}-D")
    return arr, [f"x{j}" for j in range(arr.shape[1])]


def _sites(sites: ArrayLike | None, n: int) -> NDArray[np.str_] | None:
    if sites is None:
        return None
    s = np.asarray(sites).astype(str).reshape(-1)
    if s.size != n:
        raise BrainmatchInputError(f"sites has {s.size} labels for {n} patients in X")
    return s


def _covariate_frame(
    n: int,
    covariates: ArrayLike | pd.DataFrame | None,
    baseline: ArrayLike | None,
) -> pd.DataFrame:
    parts: list[pd.DataFrame] = []
    if baseline is not None:
        b = np.asarray(baseline).reshape(-1)
        if b.size != n:
            raise BrainmatchInputError(f"baseline has {b.size} values for {n} patients in X")
        parts.append(pd.DataFrame({"baseline": b}))
    if covariates is not None:
        cov = (
            covariates.reset_index(drop=True)
            if isinstance(covariates, pd.DataFrame)
            else pd.DataFrame(np.asarray(covariates).reshape(n, -1)).add_prefix("covariate")
        )
        if len(cov) != n:
            raise BrainmatchInputError(f"covariates has {len(cov)} rows for {n} patients in X")
        parts.append(cov)
    return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=range(n))


class TreatmentSelector(BaseEstimator):
    """Predict every arm's outcome from brain features and recommend the best arm.

    Parameters
    ----------
    learner : str
        See :data:`brainmatch.selection.learners.LEARNERS`: ``interaction`` (ridge PAI),
        ``per-arm``, ``t-linear`` (lasso per arm), ``enet-interaction``, the meta-learners
        ``{t,s,x,dr,r}-{linear,hgb}``, ``econml-dr``, ``causal-forest`` or ``auto``
        (chosen by inner CV on the doubly robust CATE error).
    better : {"lower", "higher"}, optional
        Direction of a good outcome (default: lower for a score, higher for 0/1).
    harmonize : bool
        ComBat across ``sites`` when sites are given to :meth:`fit`.
    candidates : tuple of str, optional
        Candidates of ``learner="auto"``.
    select : "none", "auto", int or None
        Feature screening of the ridge learners (``interaction``, ``per-arm``), as
        ``select=`` of :func:`~brainmatch.selection.train.validate`.  Default (None):
        ``auto`` for a continuous outcome, ``none`` for a 0/1 outcome (ridge-logistic;
        ``auto`` where its design would exceed ``_logistic.MAX_WIDTH`` columns, see
        :func:`~brainmatch.selection.screen.default_select`).
    random_state : int

    Attributes
    ----------
    arms_ : list of str
    binary_ : bool
    preprocessor_ : Preprocessor
    learner_ : Learner
    chosen_learner_ : str
        The learner used (``auto``'s choice).
    feature_names_in_ : list of str
    n_features_in_ : int
    outcome_range_ : tuple of float
    """

    def __init__(
        self,
        learner: str = "interaction",
        *,
        better: str | None = None,
        harmonize: bool = True,
        candidates: tuple[str, ...] | None = None,
        select: str | int | None = None,
        random_state: int = 0,
    ) -> None:
        self.learner = learner
        self.better = better
        self.harmonize = harmonize
        self.candidates = candidates
        self.select = select
        self.random_state = random_state

    # ------------------------------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike | pd.DataFrame,
        treatment: ArrayLike,
        y: ArrayLike,
        *,
        covariates: ArrayLike | pd.DataFrame | None = None,
        sites: ArrayLike | None = None,
        baseline: ArrayLike | None = None,
    ) -> TreatmentSelector:
        """Fit on patients ``X`` (n, p) who received ``treatment`` and had outcome ``y``.

        Parameters
        ----------
        X : array-like or DataFrame (n, p)
            Features (NaN = missing, imputed by the training median).
        treatment : array-like (n,)
            Arm received (labels).
        y : array-like (n,)
            Outcome (continuous, or 0/1).
        covariates : array-like or DataFrame, optional
            Confounds removed from the features and adjusted for in the outcome model.
        sites : array-like, optional
            Site / scanner labels (ComBat when ``harmonize``).
        baseline : array-like, optional
            Baseline severity (an unpenalised predictor of the outcome only).

        Returns
        -------
        self
        """
        check_learner(self.learner, "learner=")
        Xa, names = _as_2d(X, "X")
        n = Xa.shape[0]
        t_raw = np.asarray(treatment).astype(str)
        try:
            ya = np.asarray(y, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise BrainmatchInputError(
                "y must hold numbers (the outcome of each patient)"
            ) from None
        if t_raw.size != n or ya.size != n:
            raise BrainmatchInputError(
                f"X has {n} rows but treatment has {t_raw.size} and y has {ya.size}"
            )
        if not np.isfinite(ya).all():
            raise BrainmatchInputError("y must be finite (drop patients without an outcome)")
        if np.ptp(ya) == 0:
            raise BrainmatchInputError("y has the same value for every patient")
        arms = sorted(set(t_raw.tolist()))
        if len(arms) < 2:
            raise BrainmatchInputError("treatment holds one arm: selection needs at least two")
        if np.isinf(Xa).any() or (np.nan_to_num(np.abs(Xa)) > 1e100).any():
            raise BrainmatchInputError("X holds infinite values or values beyond 1e100")
        self.binary_ = bool(set(np.unique(ya).tolist()) <= {0.0, 1.0})
        better = self.better or ("higher" if self.binary_ else "lower")
        if better not in ("lower", "higher"):
            raise BrainmatchInputError(f"better={better!r}: expected lower or higher")
        self.better_ = better
        cov = _covariate_frame(n, covariates, baseline)
        s = _sites(sites, n)
        self.arms_ = arms
        self.feature_names_in_ = names
        self.n_features_in_ = Xa.shape[1]
        self.outcome_range_ = (float(ya.min()), float(ya.max()))
        self.uses_baseline_ = baseline is not None
        self.covariate_columns_ = [c for c in cov.columns if c != "baseline"]
        pre = Preprocessor(
            harmonize=self.harmonize and s is not None, n_outcome_only=int(baseline is not None)
        )
        t = np.searchsorted(arms, t_raw)
        with threadpool_limits(1):
            Z, C = pre.fit_transform(Xa, cov, s)
            if self.learner not in ("interaction", "per-arm") and self.select not in (
                None,
                "none",
            ):
                raise BrainmatchInputError(
                    f"select={self.select!r} applies to the ridge learners (interaction, "
                    f"per-arm), not to learner={self.learner!r}"
                )
            fitted = make_learner(
                self.learner, self.binary_, self.random_state, self.candidates, self.select
            )
            fitted.fit(Z, C, t, len(arms), ya)
        self.preprocessor_ = pre
        self.learner_ = fitted
        self.chosen_learner_ = str(getattr(fitted, "chosen_", self.learner))
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "learner_"):
            raise BrainmatchInputError("this TreatmentSelector is not fitted: call fit first")

    def _match_names(self, X: ArrayLike | pd.DataFrame) -> ArrayLike | pd.DataFrame:
        """A data frame's feature columns taken by name, in the fitted order (columns are
        never matched by position when the selector was fitted on named columns)."""
        if not isinstance(X, pd.DataFrame):
            return X
        fitted = list(self.feature_names_in_)
        if fitted == [f"x{j}" for j in range(len(fitted))]:
            return X  # fitted on an unnamed array: positions are all there is
        names = [str(c) for c in X.columns if c != ID]
        missing = [c for c in fitted if c not in names]
        extra = [c for c in names if c not in fitted]
        if missing or extra:
            what = []
            if missing:
                what.append(f"missing {len(missing)} fitted feature(s) (e.g. {missing[0]!r})")
            if extra:
                what.append(f"{len(extra)} feature(s) not seen in fit (e.g. {extra[0]!r})")
            raise BrainmatchInputError(
                "X's columns do not match the features the selector was fitted on: "
                + "; ".join(what)
            )
        frame = X.copy()
        frame.columns = [str(c) for c in frame.columns]
        return frame[fitted]

    def predict_outcomes(
        self,
        X: ArrayLike | pd.DataFrame,
        *,
        covariates: ArrayLike | pd.DataFrame | None = None,
        sites: ArrayLike | None = None,
        baseline: ArrayLike | None = None,
    ) -> pd.DataFrame:
        """Predicted outcome of every patient under every arm (one column per arm)."""
        self._check_fitted()
        X = self._match_names(X)
        Xa, _ = _as_2d(X, "X")
        if Xa.shape[1] != self.n_features_in_:
            raise BrainmatchInputError(
                f"X has {Xa.shape[1]} features; the selector was fitted on {self.n_features_in_}"
            )
        if self.uses_baseline_ and baseline is None:
            raise BrainmatchInputError("baseline is needed: the selector was fitted with one")
        cov = _covariate_frame(Xa.shape[0], covariates, baseline)
        if self.preprocessor_.combat_ is not None:
            s = np.array(["unknown"] * Xa.shape[0]) if sites is None else _sites(sites, Xa.shape[0])
        else:
            s = None
        with threadpool_limits(1):
            Z, C = self.preprocessor_.transform(Xa, cov, s)
            pred = self.learner_.predict(Z, C)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(pred, columns=self.arms_, index=index)

    def recommend(
        self,
        X: ArrayLike | pd.DataFrame,
        *,
        covariates: ArrayLike | pd.DataFrame | None = None,
        sites: ArrayLike | None = None,
        baseline: ArrayLike | None = None,
    ) -> pd.DataFrame:
        """Best arm per patient, the next best and the predicted advantage (>= 0).

        This is the model's point choice; whether it is reliable is what
        :func:`cross_validate` (for the model) and :func:`brainmatch.selection.recommend`
        (per patient, with bootstrap intervals) answer.
        """
        pred = self.predict_outcomes(X, covariates=covariates, sites=sites, baseline=baseline)
        sign = 1.0 if self.better_ == "higher" else -1.0
        u = sign * pred.to_numpy()
        order = np.argsort(-u, axis=1, kind="stable")
        rows = np.arange(u.shape[0])
        return pd.DataFrame(
            {
                "recommended": np.array(self.arms_)[order[:, 0]],
                "next_best": np.array(self.arms_)[order[:, 1]],
                "advantage": u[rows, order[:, 0]] - u[rows, order[:, 1]],
            },
            index=pred.index,
        )

    # ------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted selector to the safe model file (every learner except the
        S-learners and EconML's: boosted trees are stored as numeric node arrays).

        The file has no validation summary: :func:`brainmatch.selection.recommend` on it
        reports "no reliable preference" until a model validated by
        :func:`brainmatch.selection.train` is used.
        """
        self._check_fitted()
        primal = self.learner_.export()
        pre = self.preprocessor_
        arrays: dict[str, Any] = {
            **export_arrays(primal, [primal]),
            "medians": pre.medians_,
            "confound_coef": pre.confound_coef_,
            "mean": pre.mean_,
            "sd": pre.sd_,
        }
        if pre.combat_ is not None:
            cb = pre.combat_
            arrays.update(
                combat_grand_mean=cb.grand_mean_,
                combat_var_pooled=cb.var_pooled_,
                combat_beta_covariates=cb.beta_covariates_,
                combat_gamma=cb.gamma_,
                combat_delta=cb.delta_,
            )
        meta = {
            "arms": self.arms_,
            "feature_names": self.feature_names_in_,
            "model": self.learner,
            "model_chosen": self.chosen_learner_,
            "link": primal["link"],
            "bootstrap_refits": 0,  # the final model stands in for its refits: no interval
            "binary": self.binary_,
            "better": self.better_,
            "threshold": 0.1 if self.binary_ else 3.0,
            "options": {
                "outcome_column": "outcome",
                "baseline_column": "baseline" if self.uses_baseline_ else None,
                "site_column": "site" if pre.combat_ is not None else None,
                "covariates": self.covariate_columns_,
                "model": self.learner,
                "seed": self.random_state,
            },
            "covariate_spec": pre.covariate_spec_,
            "n_outcome_only": pre.n_outcome_only,
            "harmonize": pre.combat_ is not None,
            "sites": [] if pre.combat_ is None else pre.combat_.sites_.tolist(),
            "feature_provenance": {},
            "training_data_hash": "",
            "conformal": {"level": 0.9, "half_width": {}},
            "outcome_range": list(self.outcome_range_),
            "validation": {
                "per_arm": {},
                "selection": {},
                "cv": "not validated (TreatmentSelector.save)",
                "n": None,
                "n_per_arm": {},
                "warnings": ["this model was saved without validation"],
            },
            "ood": {"score": "mean squared standardised feature value", "p99": 1e308},
            "penalties": self.learner_.penalties(),
            "feature_selection": {"select": getattr(self.learner_, "select_", "none")},
        }
        return save_model(path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> TreatmentSelector:
        """Read a model file written by :meth:`save` or ``brainmatch train``."""
        from brainmatch.selection.recommend import preprocessor_from_model

        arrays, meta = load_model(path)
        sel = cls(
            learner=str(meta.get("model", "interaction")),
            better=meta["better"],
            harmonize=bool(meta["harmonize"]),
        )
        sel.arms_ = list(meta["arms"])
        sel.binary_ = bool(meta["binary"])
        sel.better_ = meta["better"]
        sel.feature_names_in_ = list(meta["feature_names"])
        sel.n_features_in_ = len(sel.feature_names_in_)
        sel.outcome_range_ = tuple(meta.get("outcome_range", [-np.inf, np.inf]))
        sel.uses_baseline_ = int(meta["n_outcome_only"]) > 0
        sel.covariate_columns_ = [
            item["name"] for item in meta["covariate_spec"][int(meta["n_outcome_only"]) :]
        ]
        sel.preprocessor_ = preprocessor_from_model(arrays, meta)
        link = str(meta.get("link", "identity-clipped" if sel.binary_ else "identity"))
        sel.chosen_learner_ = str(meta.get("model_chosen", meta.get("model")))
        spec, _ = spec_from_arrays(arrays, link, lambda m: BrainmatchInputError(m, path))
        sel.learner_ = _Exported(spec, sel.chosen_learner_)
        return sel


def cross_validate(
    selector: TreatmentSelector,
    X: ArrayLike | pd.DataFrame,
    treatment: ArrayLike,
    y: ArrayLike,
    *,
    covariates: pd.DataFrame | None = None,
    sites: ArrayLike | None = None,
    baseline: ArrayLike | None = None,
    cv: str = "repeated-kfold",
    n_splits: int = 5,
    n_repeats: int = 10,
    n_permutations: int = 1000,
    threshold: float | None = None,
    permutation_null: str = "auto",
    learning_curve: bool = False,
    ids: ArrayLike | None = None,
    scheduler: str | None = None,
    permutation_repeats: int | None = None,
) -> ValidationResult:
    """Nested cross-validation of ``selector`` on arrays (see :func:`validate`).

    The selector's parameters (learner, candidates, select, better, random_state) are used;
    ``covariates`` must be a DataFrame (its columns are named in the result).
    ``scheduler`` (a Dask scheduler address) runs the folds, permutations and learning
    curve on that cluster with identical results; ``permutation_repeats`` as in
    :func:`validate`.

    Returns
    -------
    ValidationResult
    """
    from brainmatch.selection.train import validate

    Xa, names = _as_2d(X, "X")
    n = Xa.shape[0]
    pid = (
        np.asarray(ids).astype(str)
        if ids is not None
        else np.array([f"sub-{i:06d}" for i in range(n)])
    )
    if cv == "leave-site-out" and sites is None:
        raise BrainmatchInputError("cv='leave-site-out' needs sites= (one label per patient)")
    features = pd.DataFrame(Xa, columns=names)
    features.insert(0, ID, pid)
    outcomes = pd.DataFrame({ID: pid, "treatment": np.asarray(treatment), "outcome": y})
    cov_names: tuple[str, ...] = ()
    if baseline is not None:
        outcomes["baseline"] = np.asarray(baseline)
    if sites is not None:
        outcomes["site"] = np.asarray(sites).astype(str)
    if covariates is not None:
        if not isinstance(covariates, pd.DataFrame):
            raise BrainmatchInputError("covariates must be a DataFrame (named columns)")
        cov = covariates.reset_index(drop=True)
        cov_names = tuple(str(c) for c in cov.columns)
        for c in cov_names:
            outcomes[c] = cov[c].to_numpy()
    return validate(
        features,
        outcomes,
        treatment_column="treatment",
        outcome_column="outcome",
        baseline_column="baseline" if baseline is not None else None,
        site_column="site" if sites is not None else None,
        covariates=cov_names,
        better=selector.better,
        cv=cv,
        n_splits=n_splits,
        n_repeats=n_repeats,
        model=selector.learner,
        n_permutations=n_permutations,
        threshold=threshold,
        seed=selector.random_state,
        permutation_null=permutation_null,
        learning_curve=learning_curve,
        candidates=selector.candidates,
        select=selector.select,
        scheduler=scheduler,
        permutation_repeats=permutation_repeats,
        harmonize=selector.harmonize,
    )
