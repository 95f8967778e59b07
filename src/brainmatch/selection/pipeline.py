"""Everything fitted on data, fitted inside each training fold.

:class:`Preprocessor` (no outcomes used): median imputation of missing features, encoding
and imputation of covariates, ComBat site harmonisation (:class:`~brainmatch.harmonize.ComBat`),
removal of covariate (confound) effects from the features, and standardisation.

:class:`ArmModels`: potential outcomes under every arm, from either

- ``"per-arm"``: one ridge model per arm, fitted on that arm's patients only, or
- ``"interaction"``: one ridge model on all patients with treatment-by-feature
  interactions (the Personalized Advantage Index approach of DeRubeis et al. 2014): each
  arm's coefficients are a shared part plus an arm-specific part, equally penalised.

Arm intercepts, the baseline score and covariates enter unpenalised; the penalty is chosen
per model (per arm) by exact leave-one-out inside the training fold
(:class:`~brainmatch.selection._ridge.KernelRidgeLOO`).  Targets are a matrix: column 0 the
real outcomes, the others permuted ones, all fitted at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError
from brainmatch.harmonize import ComBat
from brainmatch.selection import _logistic
from brainmatch.selection._logistic import LogisticInteractionLOO, _sigmoid
from brainmatch.selection._ridge import ArmBlockFactor, KernelRidgeLOO

MODELS = ("interaction", "per-arm")


class Preprocessor:
    """Outcome-free preprocessing fitted on a training fold.

    Parameters
    ----------
    harmonize : bool
        Apply ComBat across sites (needs ``sites`` in :meth:`fit`).
    n_outcome_only : int
        How many leading covariate columns enter only the outcome model (the baseline score)
        and are not removed from the features.
    """

    def __init__(self, harmonize: bool = True, n_outcome_only: int = 0) -> None:
        self.harmonize = harmonize
        self.n_outcome_only = n_outcome_only

    # -- covariates --------------------------------------------------------------------
    def _fit_covariates(self, cov: pd.DataFrame) -> None:
        spec: list[dict[str, Any]] = []
        for name in cov.columns:
            col = cov[name]
            num = pd.to_numeric(col, errors="coerce")
            if (num.isna() & col.notna()).sum() == 0 and col.notna().any():
                mean = float(num.mean())
                sd = float(num.std(ddof=0)) or 1.0
                spec.append(
                    {
                        "name": str(name),
                        "kind": "numeric",
                        "mean": mean,
                        "sd": sd,
                        "min": float(num.min()),
                        "max": float(num.max()),
                    }
                )
            else:
                values = col.dropna().astype(str)
                levels = sorted(values.unique().tolist())
                if not levels:
                    raise BrainmatchInputError(f"covariate {name!r} has no values")
                mode = values.value_counts().index[0]
                spec.append(
                    {"name": str(name), "kind": "categorical", "levels": levels, "mode": str(mode)}
                )
        self.covariate_spec_ = spec

    def encode_covariates(self, cov: pd.DataFrame) -> NDArray[np.float64]:
        """Numeric design of the covariates (standardised; dummies without the first level)."""
        cols: list[NDArray[np.float64]] = []
        n = len(cov)
        for item in self.covariate_spec_:
            name = item["name"]
            if name not in cov.columns:
                raise BrainmatchInputError(f"covariate column {name!r} is missing")
            col = cov[name]
            if item["kind"] == "numeric":
                num = pd.to_numeric(col, errors="coerce")
                bad = num.isna() & col.notna()
                if bad.any():
                    raise BrainmatchInputError(
                        f"covariate {name!r} must be numeric, found {col[bad].iloc[0]!r}"
                    )
                v = num.fillna(item["mean"]).to_numpy(dtype=float)
                cols.append(((v - item["mean"]) / item["sd"]).reshape(n, 1))
            else:
                v = col.astype(object).where(col.notna(), item["mode"]).astype(str).to_numpy()
                for level in item["levels"][1:]:
                    cols.append((v == level).astype(float).reshape(n, 1))
        return np.hstack(cols) if cols else np.zeros((n, 0))

    def _n_outcome_only_cols(self) -> int:
        k = 0
        for item in self.covariate_spec_[: self.n_outcome_only]:
            k += 1 if item["kind"] == "numeric" else len(item["levels"]) - 1
        return k

    # -- fit / transform ----------------------------------------------------------------
    def fit_transform(
        self,
        X: NDArray[np.float64],
        cov: pd.DataFrame,
        sites: NDArray[np.str_] | None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Fit on a training fold; return standardised features and the covariate design."""
        med = (
            np.nanmedian(np.where(np.isnan(X).all(axis=0), 0.0, X), axis=0)
            if np.isnan(X).any()
            else np.median(X, axis=0)
        )
        self.medians_ = np.where(np.isfinite(med), med, 0.0)
        self._fit_covariates(cov)
        self.combat_: ComBat | None = None
        if self.harmonize and sites is not None:
            self.combat_ = ComBat()
        Z, C = self._transform(X, cov, sites, fit=True)
        return Z, C

    def transform(
        self,
        X: NDArray[np.float64],
        cov: pd.DataFrame,
        sites: NDArray[np.str_] | None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Apply to new patients (any number, seen or unseen sites)."""
        return self._transform(X, cov, sites, fit=False)

    def _transform(
        self,
        X: NDArray[np.float64],
        cov: pd.DataFrame,
        sites: NDArray[np.str_] | None,
        fit: bool,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        Xi = np.where(np.isnan(X), self.medians_, X)
        C = self.encode_covariates(cov)
        confounds = C[:, self._n_outcome_only_cols() :]
        if self.combat_ is not None:
            if sites is None:
                raise BrainmatchInputError("the model harmonises sites: a site label is needed")
            if fit:
                Xi = self.combat_.fit_transform(Xi, sites=sites, covariates=confounds)
            else:
                Xi = self.combat_.transform(Xi, sites=sites, covariates=confounds)
        A = np.column_stack([np.ones(Xi.shape[0]), confounds])
        if fit:
            self.confound_coef_ = np.linalg.lstsq(A, Xi, rcond=None)[0]
        Xr = Xi - A[:, 1:] @ self.confound_coef_[1:]
        if fit:
            self.mean_ = Xr.mean(axis=0)
            sd = Xr.std(axis=0)
            self.sd_ = np.where(sd > 1e-12, sd, 1.0)
        return (Xr - self.mean_) / self.sd_, C


def interaction_factor(Z: NDArray[np.float64], t: NDArray[np.intp], k: int) -> NDArray[np.float64]:
    """Rank-``k p`` factor ``F`` of the interaction kernel: ``F F' = Z Z' (1 + same arm) / p``.

    Block ``b`` (``p`` columns) of row ``i`` is ``z_i (1(t_i = b) + c) / sqrt(p)`` with
    ``c = (sqrt(k + 1) - 1) / k``, so that ``2 c + k c^2 = 1``.
    """
    p = Z.shape[1]
    c = (np.sqrt(k + 1.0) - 1.0) / k
    onehot = np.eye(k)[t]
    return np.hstack([Z * (onehot[:, [b]] + c) for b in range(k)]) / np.sqrt(p)


def arm_design(C: NDArray[np.float64], arm: int, k: int, model: str) -> NDArray[np.float64]:
    """Unpenalised design of rows ``C`` under ``arm`` (arm intercept + covariates)."""
    n = C.shape[0]
    if model == "per-arm":
        return np.column_stack([np.ones(n), C])
    onehot = np.zeros((n, k))
    onehot[:, arm] = 1.0
    return np.column_stack([onehot, C])


class ArmModels:
    """Potential-outcome models of every arm, fitted on one training set.

    Parameters
    ----------
    model : {"interaction", "per-arm"}
    """

    def __init__(self, model: str = "interaction") -> None:
        if model not in MODELS:
            raise BrainmatchInputError(f"model={model!r}: expected one of {', '.join(MODELS)}")
        self.model = model

    def fit(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
    ) -> ArmModels:
        """Fit on standardised features ``Z``, covariate design ``C``, arm index ``t``.

        ``Y`` is ``(n, n_columns)``: each column is fitted independently.
        """
        self.k_, self.p_ = k, Z.shape[1]
        self.Z_, self.t_, self.C_ = Z, t, C
        n, p = Z.shape
        self.solvers_: list[KernelRidgeLOO] = []
        self.primal_ = False
        if self.model == "interaction" and k * p < n:
            # primal: the interaction kernel G (1 + same arm) has the rank-kp factor
            # interaction_factor(Z, t, k) (the (k+1)p columns [Z, Z * 1(arm = a)] span the
            # same space), so one kp x kp eigendecomposition replaces the n x n one
            self.primal_ = True
            D = np.column_stack([np.eye(k)[t], C])
            factor = ArmBlockFactor(Z, t, k)
            self.solvers_.append(KernelRidgeLOO(None, D, factor=factor).fit(Y))
            return self
        if self.model == "per-arm" and all(p < int((t == a).sum()) for a in range(k)):
            self.primal_ = True
            for a in range(k):
                rows = np.flatnonzero(t == a)
                D = arm_design(C[rows], a, k, self.model)
                solver = KernelRidgeLOO(None, D, factor=Z[rows] / np.sqrt(p))
                self.solvers_.append(solver.fit(Y[rows]))
            return self
        G = Z @ Z.T / p
        if self.model == "per-arm":
            for a in range(k):
                rows = np.flatnonzero(t == a)
                D = arm_design(C[rows], a, k, self.model)
                self.solvers_.append(KernelRidgeLOO(G[np.ix_(rows, rows)], D).fit(Y[rows]))
        else:
            same = (t[:, None] == t[None, :]).astype(float)
            D = np.column_stack([np.eye(k)[t], C])
            self.solvers_.append(KernelRidgeLOO(G * (1.0 + same), D).fit(Y))
        return self

    def _weights(self, a: int) -> NDArray[np.float64]:
        """Primal feature weights ``(p, n_columns)`` of arm ``a`` (primal path)."""
        p, k = self.p_, self.k_
        if self.model == "per-arm":
            return np.asarray(self.solvers_[a].w / np.sqrt(p))
        w = self.solvers_[0].w
        c = (np.sqrt(k + 1.0) - 1.0) / k
        shared = w.reshape(k, p, -1).sum(axis=0)
        return np.asarray((w[a * p : (a + 1) * p] + c * shared) / np.sqrt(p))

    def predict(self, Z: NDArray[np.float64], C: NDArray[np.float64]) -> NDArray[np.float64]:
        """Predicted outcome ``(n_test, k, n_columns)`` under every arm."""
        if self.primal_:
            s0 = 0 if self.model == "interaction" else None
            return np.stack(
                [
                    Z @ self._weights(a)
                    + arm_design(C, a, self.k_, self.model)
                    @ self.solvers_[a if s0 is None else s0].alpha
                    for a in range(self.k_)
                ],
                axis=1,
            )
        Gt = Z @ self.Z_.T / self.p_
        out = []
        for a in range(self.k_):
            D = arm_design(C, a, self.k_, self.model)
            if self.model == "per-arm":
                rows = np.flatnonzero(self.t_ == a)
                out.append(self.solvers_[a].predict(Gt[:, rows], D))
            else:
                Kt = Gt * (1.0 + (self.t_ == a)[None, :])
                out.append(self.solvers_[0].predict(Kt, D))
        return np.stack(out, axis=1)

    def primal(self, column: int = 0) -> dict[str, NDArray[np.float64]]:
        """Per-arm coefficients in feature space for one target column.

        Returns
        -------
        dict
            ``coef`` (k, p) on standardised features, ``intercept`` (k,), ``cov_coef``
            (k, n_covariate_columns); prediction = ``Z @ coef[a] + intercept[a] + C @ cov_coef[a]``.
        """
        k, p = self.k_, self.p_
        coef = np.zeros((k, p))
        intercept = np.zeros(k)
        cov_coef: list[NDArray[np.float64]] = []
        for a in range(k):
            if self.primal_:
                coef[a] = self._weights(a)[:, column]
                s = self.solvers_[a if self.model == "per-arm" else 0]
                intercept[a] = s.alpha[0 if self.model == "per-arm" else a, column]
                first_cov = 1 if self.model == "per-arm" else k
                cov_coef.append(s.alpha[first_cov:, column])
            elif self.model == "per-arm":
                s = self.solvers_[a]
                rows = np.flatnonzero(self.t_ == a)
                coef[a] = self.Z_[rows].T @ s.c[:, column] / p
                intercept[a] = s.alpha[0, column]
                cov_coef.append(s.alpha[1:, column])
            else:
                s = self.solvers_[0]
                w = s.c[:, column] * (1.0 + (self.t_ == a))
                coef[a] = self.Z_.T @ w / p
                intercept[a] = s.alpha[a, column]
                cov_coef.append(s.alpha[k:, column])
        return {"coef": coef, "intercept": intercept, "cov_coef": np.vstack(cov_coef)}

    def penalties(self) -> list[float]:
        """Chosen penalty (real targets) of each fitted solver."""
        return [float(s.lambdas[s.choice[0]]) for s in self.solvers_]

    def loo_predict(self, Y: NDArray[np.float64]) -> NDArray[np.float64]:
        """Exact leave-one-out predictions ``(n, k, n_columns)`` of the training rows under
        every arm, at each column's penalty.

        Row ``i``'s prediction under arm ``a`` from the fit without row ``i`` is ``f(x_i, a)
        - h_a(i) e_i / (1 - h_ii)`` (:meth:`KernelRidgeLOO.cross_hat
        <brainmatch.selection._ridge.KernelRidgeLOO.cross_hat>`), so no refit is needed:
        one product of the training rows, recoded to each arm, with the fit's
        eigenvectors.  ``per-arm``: the other arms' models never saw row ``i``, so only its
        own arm's prediction changes.  ``Y`` must be the targets given to :meth:`fit`.
        """
        Z, t, C, k = self.Z_, self.t_, self.C_, self.k_
        n = t.size
        Y = Y.reshape(n, -1)
        f = self.predict(Z, C)  # (n, k, m)
        rows_all = np.arange(n)
        e = Y - f[rows_all, t]
        if self.model == "per-arm":
            out = f.copy()
            for a, solver in enumerate(self.solvers_):
                rows = np.flatnonzero(t == a)
                D = arm_design(C[rows], a, k, self.model)
                h = solver.cross_hat(D, solver.own_w())
                out[rows, a] -= h * e[rows] / np.maximum(1.0 - h, 1e-8)
            return out
        solver = self.solvers_[0]
        D = np.column_stack([np.eye(k)[t], C])
        h_own = solver.cross_hat(D, solver.own_w())
        ratio = e / np.maximum(1.0 - h_own, 1e-8)
        out = f - h_own[:, None, :] * ratio[:, None, :]  # right for each row's own arm
        # the other arms: only the rows not in arm a need its recoded design (for a row in
        # arm a, h_a(i) = h_ii)
        if self.primal_:
            assert solver.V is not None
            for a in range(k):
                ro = np.flatnonzero(t != a)
                D_a = arm_design(C[ro], a, k, self.model)
                FaV = ArmBlockFactor(Z[ro], np.full(ro.size, a, dtype=t.dtype), k).dot(solver.V)
                h_a = solver.cross_hat(D_a, solver.cross_w(D_a, FaV), ro)
                out[ro, a] = f[ro, a] - h_a * ratio[ro]
            return out
        assert solver.K is not None
        MU = solver.mu()
        KU = solver.K @ MU
        same = t[:, None] == t[None, :]
        for a in range(k):
            ro, ra = np.flatnonzero(t != a), np.flatnonzero(t == a)
            Gro = solver.K[ro] / (1.0 + same[ro])
            KaU = Gro @ MU + Gro[:, ra] @ MU[ra]
            D_a = arm_design(C[ro], a, k, self.model)
            h_a = solver.cross_hat(D_a, solver.cross_w(D_a, KaU, KU), ro)
            out[ro, a] = f[ro, a] - h_a * ratio[ro]
        return out

    def loo_sse(self) -> NDArray[np.float64]:
        """Exact leave-one-out squared error ``(n_columns,)`` at each column's penalty.

        Summed over the training rows (each row's outcome under its own arm), so it is on
        the scale of an inner-CV sum of squared errors over the same rows.
        """
        if self.model == "per-arm":
            return np.asarray(
                sum(int((self.t_ == a).sum()) * self.solvers_[a].loo_mse for a in range(self.k_))
            )
        return np.asarray(self.t_.size * self.solvers_[0].loo_mse)


class LogisticArmModels:
    """Binary outcomes: the ``interaction`` design with a logit link (ridge-logistic).

    Same interface as :class:`ArmModels`; :meth:`predict` returns probabilities in
    ``(0, 1)`` and :meth:`primal` coefficients on the log-odds scale.  Every target column
    is fitted at once by batched Newton (:class:`~brainmatch.selection._logistic.
    LogisticInteractionLOO`), its penalty chosen by approximate leave-one-out deviance.
    """

    model = "interaction"

    def fit(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
    ) -> LogisticArmModels:
        """Fit on standardised features ``Z``, covariate design ``C``, arm index ``t``."""
        self.k_, self.p_ = k, Z.shape[1]
        self.q_ = C.shape[1]
        self.ridge_: ArmModels | None = None
        self.link_ = "logit"
        if k * (self.p_ + 1) + self.q_ > _logistic.MAX_WIDTH:
            # too wide for (columns, r, r) Newton systems: the linear-probability ridge
            self.ridge_ = ArmModels("interaction").fit(Z, C, t, k, Y)
            self.link_ = "identity-clipped"
            return self
        X = np.column_stack([np.eye(k)[t], C, interaction_factor(Z, t, k)])
        self.solver_ = LogisticInteractionLOO(X, k + self.q_).fit(Y)
        return self

    def _eta(self, Z: NDArray[np.float64], C: NDArray[np.float64], a: int) -> NDArray[np.float64]:
        n, k = Z.shape[0], self.k_
        X = np.column_stack(
            [np.eye(k)[np.full(n, a)], C, interaction_factor(Z, np.full(n, a, dtype=np.intp), k)]
        )
        return np.asarray(X @ self.solver_.coef.T)

    def predict(self, Z: NDArray[np.float64], C: NDArray[np.float64]) -> NDArray[np.float64]:
        """Predicted probability ``(n_test, k, n_columns)`` under every arm."""
        if self.ridge_ is not None:
            return np.clip(self.ridge_.predict(Z, C), 0.0, 1.0)
        return np.stack([_sigmoid(self._eta(Z, C, a)) for a in range(self.k_)], axis=1)

    def primal(self, column: int = 0) -> dict[str, NDArray[np.float64]]:
        """Per-arm log-odds coefficients (see :meth:`ArmModels.primal`)."""
        if self.ridge_ is not None:
            return self.ridge_.primal(column)
        k, p, q = self.k_, self.p_, self.q_
        beta = self.solver_.coef[column]
        w = beta[k + q :].reshape(k, p)
        c = (np.sqrt(k + 1.0) - 1.0) / k
        coef = (w + c * w.sum(axis=0)[None, :]) / np.sqrt(p)
        return {
            "coef": coef,
            "intercept": beta[:k].copy(),
            "cov_coef": np.tile(beta[k : k + q], (k, 1)),
        }

    def penalties(self) -> list[float]:
        """Chosen penalty (real targets)."""
        if self.ridge_ is not None:
            return self.ridge_.penalties()
        return [float(self.solver_.lambdas[self.solver_.choice[0]])]
