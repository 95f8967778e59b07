"""Potential-outcome learners for treatment selection, and their choice by inner CV.

Every learner works on preprocessed arrays (:class:`~brainmatch.selection.pipeline.Preprocessor`
output): standardised features ``Z`` (n, p), the unpenalised covariate design ``C`` (n, q:
baseline score and covariates), the arm index ``t`` (n,) in ``0 .. k-1`` and the outcome
``y``.  ``predict`` returns the predicted outcome under every arm, ``(n, k)`` (a probability
for a binary outcome).

=====================  ======================================================================
name                   model
=====================  ======================================================================
``interaction``        ridge with treatment-by-feature interactions (PAI, DeRubeis 2014);
                       penalty by exact leave-one-out (the historic default)
``per-arm``            one ridge per arm (penalty by exact leave-one-out)
``t-linear``           T-learner: one lasso per arm (``LassoCV``; covariates unpenalised by
                       Frisch-Waugh); binary outcome: L1 logistic (``LogisticRegressionCV``)
``enet-interaction``   elastic net over the path (l1_ratio 0.5 and 1 = lasso) on the
                       interaction design ``[Z, Z * 1(arm = a)]``, arm intercepts and
                       covariates unpenalised; binary outcome: L1 logistic on that design
``t-hgb`` / ``s-hgb``  T- / S-learner over ``HistGradientBoostingRegressor`` (``Classifier``)
``x-*``, ``dr-*``,     X-, DR- and R-learners (Kunzel 2019, Kennedy 2023, Nie & Wager 2021)
``r-*``                over a ``linear`` (lasso) or ``hgb`` base; effects relative to the first
                       arm, whose outcome comes from the T-learner's base model
``econml-dr``,         EconML's ``DRLearner`` and ``CausalForestDML`` (needs the ``causal``
``causal-forest``      extra)
``auto``               the candidate (default: the linear learners and ``x-hgb``) with the
                       smallest doubly robust CATE error in an inner cross-validation, or the
                       convex stack of the candidates when its cross-fitted error is smaller
=====================  ======================================================================

Every learner except the S-learners and EconML's can be written to the safe model file:
linear coefficients, plus boosted trees as plain node arrays
(:mod:`brainmatch.selection.trees`).

The inner criterion of ``auto`` is a treatment-selection one, not per-arm R²: with cross-fitted
predictions ``mu`` of every candidate, doubly robust scores ``Gamma[i, a] = mu_a(x_i) +
1(t_i = a) / e_a (y_i - mu_a(x_i))`` (``mu`` = the mean of the candidates' inner out-of-fold
predictions, the same for every candidate) give pseudo-effects ``phi_a = Gamma_a -
mean_b Gamma_b``; a candidate's error is ``mean_i sum_a (phi_ia - tau_ia)^2`` with its own
centred predictions ``tau_a = mu_a - mean_b mu_b``.  In a randomised trial ``e`` is known,
so this is an unbiased estimate of the CATE error up to a constant shared by the candidates.

Stacking (continuous outcomes): convex weights over the candidates' inner out-of-fold
predictions minimising the same criterion (:func:`stack_weights`); the stack is used only
when its error, with weights fitted on the other inner folds and scored on each fold
(cross-fitted, so not flattered by its own fit), beats the best single candidate's.
Binary outcomes select one candidate (their links differ).
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection.trees import Components, export_hgb, export_linear

LINEAR = ("interaction", "per-arm", "t-linear", "enet-interaction")
META = tuple(f"{m}-{b}" for m in ("t", "s", "x", "dr", "r") for b in ("linear", "hgb"))
ECONML = ("econml-dr", "causal-forest")
LEARNERS = tuple(dict.fromkeys(("auto", *LINEAR, *META, *ECONML)))
#: Learners the safe model file cannot store (validation only).
UNSTORABLE = ("s-linear", "s-hgb", *ECONML)
#: Candidates of ``auto`` by default: the penalised linear learners and the boosted
#: X-learner (all storable in the model file).
AUTO_CANDIDATES = ("interaction", "t-linear", "enet-interaction", "x-hgb")
INNER_FOLDS = 3

Array = NDArray[np.float64]


def econml_available() -> bool:
    """Whether EconML (the ``causal`` extra) is importable."""
    return importlib.util.find_spec("econml") is not None


def check_learner(name: str, option: str = "learner=") -> str:
    """Validate a learner name (``option`` names the parameter / flag in the message)."""
    if name not in LEARNERS:
        raise BrainmatchInputError(f"{option}{name!r}: expected one of {', '.join(LEARNERS)}")
    if name in ECONML and not econml_available():
        raise BrainmatchInputError(
            f"{option}{name!r} needs EconML: pip install 'brainmatch[causal]'"
        )
    return name


def _sigmoid(z: Array) -> Array:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def _design(C: Array) -> Array:
    return np.column_stack([np.ones(C.shape[0]), C])


def _shares(t: NDArray[np.intp], k: int) -> Array:
    return np.bincount(t, minlength=k) / t.size


# --------------------------------------------------------------------------------------------
# penalised linear regressions with unpenalised columns (Frisch-Waugh-Lovell)
# --------------------------------------------------------------------------------------------
def _lasso_fwl(
    X: Array, D: Array, y: Array, seed: int, l1_ratio: tuple[float, ...] = (1.0,)
) -> tuple[Array, Array]:
    """Elastic net / lasso of ``y`` on ``X`` with ``D`` unpenalised; penalty by 5-fold CV.

    Returns ``(beta, alpha)``: prediction = ``X @ beta + D @ alpha``.  Exact: minimising over
    the unpenalised ``alpha`` leaves the penalised problem on the residuals ``M y``, ``M X``
    (``M = I - D D^+``).
    """
    from sklearn.linear_model import ElasticNetCV, LassoCV

    D_pinv = np.linalg.pinv(D)
    # intercept only: scikit-learn's own centring (inside every inner fold too), so that
    # the T-learner is exactly LassoCV per arm; otherwise partial D out first (exact FWL)
    only_intercept = D.shape[1] == 1 and np.allclose(D, 1.0)
    Xr = X if only_intercept else X - D @ (D_pinv @ X)
    yr = y if only_intercept else y - D @ (D_pinv @ y)
    if np.ptp(y - D @ (D_pinv @ y)) < 1e-12 * max(1.0, float(np.abs(y).max())):
        beta = np.zeros(X.shape[1])
    else:
        cv = min(5, max(2, y.size // 4))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning at the smallest penalties
            if l1_ratio == (1.0,):
                m: Any = LassoCV(alphas=30, cv=cv, fit_intercept=only_intercept, max_iter=2000)
            else:
                m = ElasticNetCV(
                    l1_ratio=list(l1_ratio),
                    alphas=30,
                    cv=min(cv, 3),
                    fit_intercept=only_intercept,
                    max_iter=2000,
                )
            m.fit(Xr, yr)
        beta = np.asarray(m.coef_, dtype=float)
    alpha = D_pinv @ (y - X @ beta)
    return beta, alpha


def _logistic(X: Array, y: Array, seed: int) -> tuple[Array, float]:
    """L1 logistic regression, C by 5-fold CV on the log-loss; returns (coef, intercept)."""
    from sklearn.linear_model import LogisticRegressionCV

    if y.min() == y.max():
        p = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        return np.zeros(X.shape[1]), float(np.log(p / (1 - p)))
    cv = int(min(5, max(2, min((y == 1).sum(), (y == 0).sum()))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = LogisticRegressionCV(
            Cs=10,
            l1_ratios=(1.0,),
            solver="liblinear",
            intercept_scaling=10.0,
            scoring="neg_log_loss",
            cv=cv,
            random_state=seed,
            use_legacy_attributes=False,
        ).fit(X, y.astype(int))
    return np.asarray(m.coef_[0], dtype=float), float(np.asarray(m.intercept_).ravel()[0])


class Learner:
    """Base class: ``fit(Z, C, t, k, y)`` then ``predict(Z, C)`` -> ``(n, k)``."""

    name = "base"
    linear = False
    #: whether :meth:`export` can write the learner to the safe model file
    storable = True

    def __init__(self, binary: bool = False, seed: int = 0) -> None:
        self.binary = binary
        self.seed = seed

    def fit(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> Learner:
        raise NotImplementedError

    def predict(self, Z: Array, C: Array) -> Array:
        raise NotImplementedError

    def primal(self) -> dict[str, Any]:
        """``coef`` (k, p), ``intercept`` (k,), ``cov_coef`` (k, q), ``link``."""
        raise BrainmatchInputError(
            f"learner {self.name!r} is not linear: it has no coefficients (export() gives its "
            "trees for the model file)"
        )

    def penalties(self) -> list[float]:
        return []

    def export(self) -> dict[str, Any]:
        """The fitted model as numeric arrays: the linear part (:meth:`primal` keys) plus
        ``components`` (:class:`~brainmatch.selection.trees.Components` or None) and their
        per-arm ``weight`` (k, n_components); see :mod:`brainmatch.selection.trees`."""
        return {"components": None, "weight": None, **self.primal()}


def predict_exported(
    Z: Array,
    C: Array,
    spec: dict[str, Any],
    G: Array | None = None,
) -> Array:
    """Predictions (n, k) of an exported model; ``G`` = its components' outputs on
    ``[Z, C]`` (computed when None)."""
    eta = Z @ spec["coef"].T + spec["intercept"][None, :] + C @ spec["cov_coef"].T
    if spec.get("weight") is not None:
        if G is None:
            G = spec["components"].evaluate(np.column_stack([Z, C]))
        eta = eta + G @ spec["weight"].T
    link = spec["link"]
    if link == "logit":
        return _sigmoid(eta)
    if link == "identity-clipped":
        return np.clip(eta, 0.0, 1.0)
    return np.asarray(eta)


def _component(model: Any) -> Components:
    if isinstance(model, _LassoRegressor):
        return export_linear(model.coef_, model.intercept_)
    if isinstance(model, _LogisticClassifier):
        return export_linear(model.coef_, model.intercept_, logistic=True)
    return export_hgb(model)


class RidgeLearner(Learner):
    """The kernel ridge models of :class:`~brainmatch.selection.pipeline.ArmModels`."""

    linear = True

    def __init__(
        self,
        model: str = "interaction",
        binary: bool = False,
        seed: int = 0,
        select: str | int | None = "none",
    ) -> None:
        super().__init__(binary, seed)
        self.name = model
        self.model = model
        self.select = select

    def fit(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> RidgeLearner:
        from brainmatch.selection.screen import (
            ScreenedArmModels,
            default_select,
            make_arm_models,
        )

        width = k * (Z.shape[1] + 1) + C.shape[1]
        self.select_ = default_select(self.select, self.model, self.binary, width)
        self.arms_: Any = make_arm_models(self.model, self.select_, self.binary).fit(
            Z, C, t, k, y[:, None]
        )
        if isinstance(self.arms_, ScreenedArmModels):
            chosen = self.arms_.chosen(self.model)
            if chosen != self.model:
                self.chosen_ = chosen
        return self

    def predict(self, Z: Array, C: Array) -> Array:
        p = self.arms_.predict(Z, C)[:, :, 0]
        return np.clip(p, 0.0, 1.0) if self.binary else p

    def primal(self) -> dict[str, Any]:
        link = getattr(self.arms_, "link_", "identity-clipped" if self.binary else "identity")
        return {**self.arms_.primal(0), "link": link}

    def penalties(self) -> list[float]:
        return self.arms_.penalties()


class TLinear(Learner):
    """One lasso (binary: L1 logistic) per arm; covariates unpenalised (continuous)."""

    name = "t-linear"
    linear = True

    def fit(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> TLinear:
        p, q = Z.shape[1], C.shape[1]
        self.coef_, self.intercept_, self.cov_coef_ = (
            np.zeros((k, p)),
            np.zeros(k),
            np.zeros((k, q)),
        )
        for a in range(k):
            rows = t == a
            if self.binary:
                w, b = _logistic(np.column_stack([Z[rows], C[rows]]), y[rows], self.seed)
                self.coef_[a], self.cov_coef_[a], self.intercept_[a] = w[:p], w[p:], b
            else:
                beta, alpha = _lasso_fwl(Z[rows], _design(C[rows]), y[rows], self.seed)
                self.coef_[a], self.intercept_[a], self.cov_coef_[a] = beta, alpha[0], alpha[1:]
        return self

    def predict(self, Z: Array, C: Array) -> Array:
        eta = Z @ self.coef_.T + self.intercept_[None, :] + C @ self.cov_coef_.T
        return _sigmoid(eta) if self.binary else np.asarray(eta)

    def primal(self) -> dict[str, Any]:
        return {
            "coef": self.coef_,
            "intercept": self.intercept_,
            "cov_coef": self.cov_coef_,
            "link": "logit" if self.binary else "identity",
        }


class EnetInteraction(Learner):
    """Elastic net on ``[Z, Z * 1(arm = a) for every a]`` with unpenalised arm intercepts."""

    name = "enet-interaction"
    linear = True

    def fit(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> EnetInteraction:
        p = Z.shape[1]
        q = C.shape[1]
        onehot = np.eye(k)[t]
        X = np.hstack([Z] + [Z * onehot[:, [a]] for a in range(k)])
        if self.binary:
            w, b = _logistic(np.column_stack([X, onehot[:, 1:], C]), y, self.seed)
            beta, arm, cov = (
                w[: X.shape[1]],
                w[X.shape[1] : X.shape[1] + k - 1],
                w[-q:] if q else w[:0],
            )
            self.intercept_ = b + np.concatenate([[0.0], arm])
            self.cov_coef_ = np.tile(cov, (k, 1))
        else:
            beta, alpha = _lasso_fwl(
                X, np.column_stack([onehot, C]), y, self.seed, l1_ratio=(0.5, 1.0)
            )
            self.intercept_ = alpha[:k]
            self.cov_coef_ = np.tile(alpha[k:], (k, 1))
        shared = beta[:p]
        self.coef_ = np.vstack([shared + beta[p * (a + 1) : p * (a + 2)] for a in range(k)])
        return self

    predict = TLinear.predict
    primal = TLinear.primal


# --------------------------------------------------------------------------------------------
# meta-learners over a base regressor
# --------------------------------------------------------------------------------------------
def _regressor(base: str, seed: int) -> Any:
    if base == "hgb":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05, random_state=seed)
    return _LassoRegressor(seed)


def _classifier(base: str, seed: int) -> Any:
    if base == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, random_state=seed)
    return _LogisticClassifier(seed)


class _LassoRegressor:
    """Minimal regressor (fit / predict, sample weights) used as a meta-learner base."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, X: Array, y: Array, sample_weight: Array | None = None) -> _LassoRegressor:
        if sample_weight is not None:
            w = np.sqrt(sample_weight / sample_weight.mean())
            beta, alpha = _lasso_fwl(X * w[:, None], w[:, None], y * w, self.seed)
        else:
            beta, alpha = _lasso_fwl(X, np.ones((y.size, 1)), y, self.seed)
        self.coef_, self.intercept_ = beta, float(alpha[0])
        return self

    def predict(self, X: Array) -> Array:
        return np.asarray(X @ self.coef_ + self.intercept_)


class _LogisticClassifier:
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, X: Array, y: Array) -> _LogisticClassifier:
        self.coef_, self.intercept_ = _logistic(X, y, self.seed)
        return self

    def predict_proba(self, X: Array) -> Array:
        p = _sigmoid(X @ self.coef_ + self.intercept_)
        return np.column_stack([1 - p, p])


def _fit_outcome(base: str, X: Array, y: Array, binary: bool, seed: int) -> Any:
    if binary and np.unique(y).size == 2:
        return _classifier(base, seed).fit(X, y.astype(int))
    return _regressor(base, seed).fit(X, y)


def _predict_outcome(model: Any, X: Array) -> Array:
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X)[:, 1])
    return np.asarray(model.predict(X))


def _folds(t: NDArray[np.intp], n_folds: int, seed: int) -> list[NDArray[np.intp]]:
    """Fold index (stratified by arm) of every row."""
    rng = np.random.default_rng([seed, 17])
    fold = np.zeros(t.size, dtype=int)
    for a in np.unique(t):
        rows = np.flatnonzero(t == a)
        fold[rows] = rng.permutation(np.arange(rows.size) % n_folds)
    return [np.flatnonzero(fold == f) for f in range(n_folds)]


class MetaLearner(Learner):
    """T-, S-, X-, DR- and R-learners over a lasso (``linear``) or gradient-boosted base."""

    def __init__(self, name: str, binary: bool = False, seed: int = 0) -> None:
        super().__init__(binary, seed)
        self.name = name
        self.kind, self.base = name.split("-")

    def _X(self, Z: Array, C: Array) -> Array:
        return np.column_stack([Z, C])

    def _S(self, X: Array, t: NDArray[np.intp], k: int) -> Array:
        """S-learner design: features and arm indicators; a linear base also gets their
        products (without them a linear S-learner cannot vary the arm effect at all)."""
        onehot = np.eye(k)[t]
        if self.base == "hgb":
            return np.column_stack([X, onehot])
        return np.column_stack([X, onehot[:, 1:]] + [X * onehot[:, [a]] for a in range(1, k)])

    def fit(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> MetaLearner:
        X = self._X(Z, C)
        self.k_ = k
        self.p_, self.q_ = Z.shape[1], C.shape[1]
        s = self.seed
        if self.kind == "s":
            self.model_ = _fit_outcome(self.base, self._S(X, t, k), y, self.binary, s)
            return self
        # per-arm outcome models (the T-learner; also the reference arm of the others)
        self.mu_ = [_fit_outcome(self.base, X[t == a], y[t == a], self.binary, s) for a in range(k)]
        if self.kind == "t":
            return self
        e = _shares(t, k)
        self.tau_: list[Any] = []
        if self.kind == "x":
            mu = np.column_stack([_predict_outcome(m, X) for m in self.mu_])
            self.e_ = e
            for a in range(1, k):
                # imputed effects of arm a vs arm 0, one model on each arm's patients
                r1, r0 = t == a, t == 0
                m1 = _regressor(self.base, s).fit(X[r1], y[r1] - mu[r1, 0])
                m0 = _regressor(self.base, s).fit(X[r0], mu[r0, a] - y[r0])
                self.tau_.append((m1, m0))
            return self
        # DR and R: cross-fitted nuisances on the training rows
        mu_cf = np.zeros((t.size, k))
        for fold in _folds(t, 2, s):
            train = np.setdiff1d(np.arange(t.size), fold)
            for a in range(k):
                rows = train[t[train] == a]
                mu_cf[fold, a] = _predict_outcome(
                    _fit_outcome(self.base, X[rows], y[rows], self.binary, s), X[fold]
                )
        onehot = np.eye(k)[t]
        if self.kind == "dr":
            gamma = mu_cf + onehot / e[None, :] * (y[:, None] - mu_cf)
            for a in range(1, k):
                self.tau_.append(_regressor(self.base, s).fit(X, gamma[:, a] - gamma[:, 0]))
            return self
        # R-learner, one contrast (arm a vs 0) at a time on the patients of those two arms
        for a in range(1, k):
            rows = (t == a) | (t == 0)
            ea = e[a] / (e[a] + e[0])
            m = ea * mu_cf[rows, a] + (1 - ea) * mu_cf[rows, 0]
            w = (t[rows] == a) - ea
            pseudo = (y[rows] - m) / w
            self.tau_.append(_regressor(self.base, s).fit(X[rows], pseudo, sample_weight=w**2))
        return self

    def predict(self, Z: Array, C: Array) -> Array:
        X = self._X(Z, C)
        k = self.k_
        if self.kind == "s":
            out = [
                _predict_outcome(self.model_, self._S(X, np.full(X.shape[0], a), k))
                for a in range(k)
            ]
            return np.column_stack(out)
        mu = np.column_stack([_predict_outcome(m, X) for m in self.mu_])
        if self.kind == "t":
            return mu
        out = [mu[:, 0]]
        for a in range(1, k):
            if self.kind == "x":
                m1, m0 = self.tau_[a - 1]
                g = self.e_[a] / (self.e_[a] + self.e_[0])
                tau = (1 - g) * m1.predict(X) + g * m0.predict(X)
            else:
                tau = self.tau_[a - 1].predict(X)
            out.append(mu[:, 0] + tau)
        pred = np.column_stack(out)
        return np.clip(pred, 0.0, 1.0) if self.binary else pred

    @property
    def storable(self) -> bool:  # type: ignore[override]
        return self.kind != "s"

    def export(self) -> dict[str, Any]:
        """Per-arm outcome models and effect models as components: arm 0 = ``mu_0``;
        arm a = ``mu_a`` (T) or ``mu_0 + tau_a`` (X: the propensity-weighted pair)."""
        if self.kind == "s":
            raise BrainmatchInputError(
                f"learner {self.name!r} cannot be stored in the safe model file (its model "
                "takes the arm as an input); use the t-, x-, dr- or r- learner"
            )
        k = self.k_
        comps = [_component(m) for m in self.mu_]
        weights: list[list[tuple[int, float]]] = [[(a, 1.0)] for a in range(k)]
        if self.kind != "t":
            weights = [[(0, 1.0)] for _ in range(k)]
            for a in range(1, k):
                if self.kind == "x":
                    m1, m0 = self.tau_[a - 1]
                    g = self.e_[a] / (self.e_[a] + self.e_[0])
                    comps += [_component(m1), _component(m0)]
                    weights[a] += [(len(comps) - 2, 1 - g), (len(comps) - 1, g)]
                else:
                    comps.append(_component(self.tau_[a - 1]))
                    weights[a].append((len(comps) - 1, 1.0))
        W = np.zeros((k, len(comps)))
        for a, pairs in enumerate(weights):
            for e, w in pairs:
                W[a, e] += w
        return {
            "coef": np.zeros((k, self.p_)),
            "intercept": np.zeros(k),
            "cov_coef": np.zeros((k, self.q_)),
            "link": "identity-clipped" if self.binary else "identity",
            "components": Components.concat(comps, self.p_ + self.q_),
            "weight": W,
        }


class EconMLLearner(Learner):
    """EconML's ``DRLearner`` or ``CausalForestDML``; arm 0's outcome from a boosted model."""

    storable = False

    def export(self) -> dict[str, Any]:
        raise BrainmatchInputError(
            f"learner {self.name!r} (EconML) cannot be stored in the safe model file"
        )

    def __init__(self, name: str, binary: bool = False, seed: int = 0) -> None:
        super().__init__(binary, seed)
        self.name = name

    def fit(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> EconMLLearner:
        from sklearn.dummy import DummyClassifier
        from sklearn.ensemble import HistGradientBoostingRegressor

        X = np.column_stack([Z, C])
        self.k_ = k
        self.mu0_ = _fit_outcome("hgb", X[t == 0], y[t == 0], self.binary, self.seed)
        reg = HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.name == "econml-dr":
                from econml.dr import DRLearner

                self.model_ = DRLearner(
                    model_propensity=DummyClassifier(strategy="prior"),
                    model_regression=reg,
                    model_final=HistGradientBoostingRegressor(
                        max_iter=100, learning_rate=0.05, random_state=0
                    ),
                    cv=2,
                    random_state=self.seed,
                )
            else:
                from econml.dml import CausalForestDML

                self.model_ = CausalForestDML(
                    model_y=reg,
                    model_t=DummyClassifier(strategy="prior"),
                    discrete_treatment=True,
                    cv=2,
                    n_estimators=200,
                    inference=False,
                    n_jobs=1,
                    random_state=self.seed,
                )
            self.model_.fit(y, t, X=X)
        return self

    def predict(self, Z: Array, C: Array) -> Array:
        X = np.column_stack([Z, C])
        mu0 = _predict_outcome(self.mu0_, X)
        out = [mu0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for a in range(1, self.k_):
                out.append(mu0 + np.ravel(self.model_.effect(X, T0=0, T1=a)))
        pred = np.column_stack(out)
        return np.clip(pred, 0.0, 1.0) if self.binary else pred


def dr_cate_error(
    candidates: dict[str, Array], t: NDArray[np.intp], y: Array, e: Array
) -> dict[str, float]:
    """Doubly robust CATE error of every candidate's out-of-fold predictions (lower = better).

    Parameters
    ----------
    candidates : dict
        Name -> out-of-fold predictions ``(n, k)``.
    t, y : arrays
        Arm index and outcome.
    e : ndarray (k,)
        Probability of each arm (known in a randomised trial).
    """
    k = e.size
    mu = np.mean(list(candidates.values()), axis=0)
    onehot = np.eye(k)[t]
    gamma = mu + onehot / e[None, :] * (y[:, None] - mu)
    phi = gamma - gamma.mean(axis=1, keepdims=True)
    out = {}
    for name, pred in candidates.items():
        tau = pred - pred.mean(axis=1, keepdims=True)
        out[name] = float(((phi - tau) ** 2).sum(axis=1).mean())
    return out


def stack_weights(
    candidates: dict[str, Array], t: NDArray[np.intp], y: Array, e: Array
) -> dict[str, float]:
    """Convex weights (non-negative, summing to 1) over the candidates' out-of-fold
    predictions that minimise the doubly robust CATE error of the combination (the
    criterion of :func:`dr_cate_error`, same pseudo-effects ``phi``)."""
    from scipy.optimize import nnls

    k = e.size
    names = list(candidates)
    mu = np.mean(list(candidates.values()), axis=0)
    onehot = np.eye(k)[t]
    gamma = mu + onehot / e[None, :] * (y[:, None] - mu)
    phi = (gamma - gamma.mean(axis=1, keepdims=True)).ravel()
    A = np.column_stack(
        [(candidates[c] - candidates[c].mean(axis=1, keepdims=True)).ravel() for c in names]
    )
    scale = 1e3 * max(1.0, float(np.sqrt((A**2).sum() / max(1, A.shape[1]))))
    w, _ = nnls(np.vstack([A, scale * np.ones((1, len(names)))]), np.append(phi, scale))
    w = np.where(w > 1e-3, w, 0.0)
    w = w / w.sum() if w.sum() > 0 else np.full(len(names), 1.0 / len(names))
    return {c: float(v) for c, v in zip(names, w, strict=True)}


class StackedLearner(Learner):
    """A fixed convex combination of fitted learners' predictions (identity links)."""

    name = "stack"

    def __init__(self, names: list[str], weights: list[float], binary: bool, seed: int) -> None:
        super().__init__(binary, seed)
        self.names, self.weights = names, weights

    def fit(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> StackedLearner:
        self.models_ = [
            make_learner(c, self.binary, self.seed).fit(Z, C, t, k, y) for c in self.names
        ]
        self.linear = all(m.linear for m in self.models_)
        self.storable = all(m.storable for m in self.models_)
        return self

    def predict(self, Z: Array, C: Array) -> Array:
        return np.asarray(
            sum(w * m.predict(Z, C) for w, m in zip(self.weights, self.models_, strict=True))
        )

    def export(self) -> dict[str, Any]:
        specs = [m.export() for m in self.models_]
        links = {s["link"] for s in specs}
        if links != {"identity"}:
            raise BrainmatchInputError(f"cannot store a stack of learners with links {links}")
        out: dict[str, Any] = {
            key: sum(w * np.asarray(s[key]) for w, s in zip(self.weights, specs, strict=True))
            for key in ("coef", "intercept", "cov_coef")
        }
        out["link"] = "identity"
        parts = [
            (w, s) for w, s in zip(self.weights, specs, strict=True) if s["weight"] is not None
        ]
        if parts:
            d = out["coef"].shape[1] + out["cov_coef"].shape[1]
            out["components"] = Components.concat([s["components"] for _, s in parts], d)
            out["weight"] = np.hstack([w * s["weight"] for w, s in parts])
        else:
            out["components"] = out["weight"] = None
        return out

    def primal(self) -> dict[str, Any]:
        spec = self.export()
        if spec["weight"] is not None:
            return super().primal()
        return {k: spec[k] for k in ("coef", "intercept", "cov_coef", "link")}


class AutoLearner(Learner):
    """The candidate with the smallest inner-CV doubly robust CATE error, or (``stack``,
    continuous outcomes) the convex combination of the candidates minimising that error,
    refitted on all rows."""

    name = "auto"

    def __init__(
        self,
        binary: bool = False,
        seed: int = 0,
        candidates: tuple[str, ...] = AUTO_CANDIDATES,
        inner_folds: int = INNER_FOLDS,
        stack: bool = True,
    ) -> None:
        super().__init__(binary, seed)
        self.candidates = candidates
        self.inner_folds = inner_folds
        self.stack = stack

    def fit(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> AutoLearner:
        oof = {c: np.zeros((t.size, k)) for c in self.candidates}
        folds = _folds(t, self.inner_folds, self.seed)
        for fold in folds:
            train = np.setdiff1d(np.arange(t.size), fold)
            for c in self.candidates:
                m = make_learner(c, self.binary, self.seed).fit(
                    Z[train], C[train], t[train], k, y[train]
                )
                oof[c][fold] = m.predict(Z[fold], C[fold])
        e = _shares(t, k)
        stacking = self.stack and not self.binary and len(self.candidates) > 1
        if stacking:
            # the stack competes with its own cross-fitted error: weights fitted on the
            # other inner folds' out-of-fold predictions, scored on this fold's
            oof_stack = np.zeros((t.size, k))
            for fold in folds:
                rest = np.setdiff1d(np.arange(t.size), fold)
                w = stack_weights({c: v[rest] for c, v in oof.items()}, t[rest], y[rest], e)
                oof_stack[fold] = sum(w[c] * oof[c][fold] for c in self.candidates)
            self.scores_ = dr_cate_error({**oof, "stack": oof_stack}, t, y, e)
        else:
            self.scores_ = dr_cate_error(oof, t, y, e)
        self.chosen_ = min(
            self.candidates, key=lambda c: (self.scores_[c], self.candidates.index(c))
        )
        self.weights_ = {self.chosen_: 1.0}
        if stacking and self.scores_["stack"] < self.scores_[self.chosen_]:
            kept = {c: v for c, v in stack_weights(oof, t, y, e).items() if v > 0}
            if len(kept) > 1:
                self.weights_ = kept
                self.chosen_ = "stack(" + " + ".join(f"{v:.2f} {c}" for c, v in kept.items()) + ")"
        self.model_ = self._fresh().fit(Z, C, t, k, y)
        self.linear = self.model_.linear
        self.storable = self.model_.storable
        return self

    def _fresh(self) -> Learner:
        if len(self.weights_) == 1:
            return make_learner(next(iter(self.weights_)), self.binary, self.seed)
        return StackedLearner(
            list(self.weights_), list(self.weights_.values()), self.binary, self.seed
        )

    def refit_chosen(self, Z: Array, C: Array, t: NDArray[np.intp], k: int, y: Array) -> Learner:
        """The same choice (learner, or stack with its weights) fitted on other rows
        (the bootstrap refits of the final model)."""
        return self._fresh().fit(Z, C, t, k, y)

    def predict(self, Z: Array, C: Array) -> Array:
        return self.model_.predict(Z, C)

    def primal(self) -> dict[str, Any]:
        return self.model_.primal()

    def export(self) -> dict[str, Any]:
        return self.model_.export()

    def penalties(self) -> list[float]:
        return self.model_.penalties()


def make_learner(
    name: str,
    binary: bool = False,
    seed: int = 0,
    candidates: tuple[str, ...] | None = None,
    select: str | int | None = "none",
) -> Learner:
    """A fresh learner by name (see the module table).

    ``select`` applies to the ridge learners (``interaction``, ``per-arm``): feature
    screening as in :func:`brainmatch.selection.screen.default_select` (None: its default).
    """
    check_learner(name)
    if name == "auto":
        return AutoLearner(binary, seed, candidates or AUTO_CANDIDATES)
    if name in ("interaction", "per-arm"):
        return RidgeLearner(name, binary, seed, select)
    if name == "t-linear":
        return TLinear(binary, seed)
    if name == "enet-interaction":
        return EnetInteraction(binary, seed)
    if name in ECONML:
        return EconMLLearner(name, binary, seed)
    return MetaLearner(name, binary, seed)


def _pool_key(c: Components) -> str:
    """Digest of a pool's arrays (equal pools share one key)."""
    h = hashlib.sha256()
    for name, arr in c.to_arrays().items():
        h.update(f"{name}{arr.dtype}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def export_arrays(spec: dict[str, Any], boots: list[dict[str, Any]]) -> dict[str, NDArray[Any]]:
    """Model-file arrays of an exported learner and its bootstrap refits.

    Linear learners give ``coef``, ``intercept``, ``cov_coef`` and their ``boot_*`` stacks
    (as always); learners with components add one pool of every component (the final
    model's first, then each refit's) in :data:`brainmatch.selection.trees.TREE_ARRAYS`,
    with ``comp_weight`` (k, n_components) and ``boot_comp_weight`` (n_boot, k,
    n_components), zero outside each model's own components.  Equal tree-less components
    (the same hinge, square or cosine in several models) are stored once.
    """
    arrays: dict[str, NDArray[Any]] = {
        "coef": np.asarray(spec["coef"], dtype=float),
        "intercept": np.asarray(spec["intercept"], dtype=float),
        "cov_coef": np.asarray(spec["cov_coef"], dtype=float),
        "boot_coef": np.asarray([b["coef"] for b in boots], dtype=np.float32),
        "boot_intercept": np.asarray([b["intercept"] for b in boots], dtype=float),
        "boot_cov_coef": np.asarray([b["cov_coef"] for b in boots], dtype=float),
    }
    models = [spec, *boots]
    if all(m.get("components") is None for m in models):
        return arrays
    k = arrays["coef"].shape[0]
    d = arrays["coef"].shape[1] + arrays["cov_coef"].shape[1]
    parts: list[Components] = []
    # a pool shared by several models (a stack's refits; the RBF ridge's one random map,
    # also when the refits come back from Dask workers as copies) is stored once
    start: dict[str, int] = {}
    keys = [None if m.get("components") is None else _pool_key(m["components"]) for m in models]
    for m, key in zip(models, keys, strict=True):
        if key is not None and key not in start:
            start[key] = sum(part.n_components for part in parts)
            parts.append(m["components"])
    total = sum(part.n_components for part in parts)
    weights = np.zeros((len(models), k, total))
    for i, (m, key) in enumerate(zip(models, keys, strict=True)):
        if key is not None:
            n_c = m["components"].n_components
            weights[i, :, start[key] : start[key] + n_c] = m["weight"]
    # equal tree-less components of different pools (the products that the final model
    # and its refits each chose) are stored once, their weights added
    pool = Components.concat(parts, d)
    first = pool.equal_components()
    keep, column = np.unique(first, return_inverse=True)
    if keep.size < total:
        merged = np.zeros((keep.size, len(models) * k))
        np.add.at(merged, column.ravel(), weights.reshape(-1, total).T)
        weights = merged.T.reshape(len(models), k, keep.size)
        pool = pool.take(keep)
    arrays.update(pool.to_arrays())
    arrays["comp_weight"] = weights[0]
    arrays["boot_comp_weight"] = weights[1:]
    return arrays


def spec_from_arrays(
    arrays: dict[str, NDArray[Any]], link: str, bad: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The final model's and the bootstrap refits' specs from model-file arrays (validated:
    ``bad(message)`` returns the exception to raise)."""
    comps = None
    if "comp_weight" in arrays:
        d = arrays["coef"].shape[1] + arrays["cov_coef"].shape[1]
        comps = Components.from_arrays(arrays, d, bad)
        k, e = arrays["coef"].shape[0], comps.n_components
        b = arrays["boot_coef"].shape[0]
        w, bw = arrays.get("comp_weight"), arrays.get("boot_comp_weight")
        if w is None or bw is None or w.shape != (k, e) or bw.shape != (b, k, e):
            raise bad(
                f"'comp_weight' / 'boot_comp_weight' are not of shapes ({k}, {e}) / ({b}, {k}, {e})"
            )
        if w.dtype.kind != "f" or bw.dtype.kind != "f":
            raise bad("'comp_weight' / 'boot_comp_weight' are not floating-point arrays")
        if not (np.isfinite(w).all() and np.isfinite(bw).all()):
            raise bad("'comp_weight' holds NaN or infinite values")
    spec = {
        "coef": arrays["coef"].astype(float),
        "intercept": arrays["intercept"].astype(float),
        "cov_coef": arrays["cov_coef"].astype(float),
        "link": link,
        "components": comps,
        "weight": None if comps is None else arrays["comp_weight"].astype(float),
    }
    boots = [
        {
            "coef": arrays["boot_coef"][i].astype(float),
            "intercept": arrays["boot_intercept"][i].astype(float),
            "cov_coef": arrays["boot_cov_coef"][i].astype(float),
            "link": link,
            "components": comps,
            "weight": None if comps is None else arrays["boot_comp_weight"][i].astype(float),
        }
        for i in range(arrays["boot_coef"].shape[0])
    ]
    return spec, boots
