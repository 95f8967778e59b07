"""The normative model: each brain measure's distribution in controls, given covariates.

:class:`NormativeModel` is a scikit-learn-style estimator: ``fit(covariates, features)``
on healthy controls, then ``zscores(covariates, features)`` for anyone.  Per feature it is
a Bayesian linear regression (see :mod:`brainmatch.normative._blr`) whose mean and log
noise variance depend on the same design: intercept, a cubic B-spline of each smooth
numeric covariate (age), dummies of categorical covariates (sex) and one column per site
(a batch effect in location and scale, fitted on controls only, as in Kia et al. 2021's
hierarchical BLR but with the site terms shrunk by the shared prior).

Sites:

- a site seen in the controls uses its own fitted location and scale;
- an unseen site can be *adapted* (:meth:`NormativeModel.adapt`) from a few of its own
  controls: its offset is the empirical-Bayes shrunken mean residual (prior variance:
  the between-site variance of the seen sites' offsets, at least 1 in standardised
  units) and its scale the variance ratio, shrunk towards the ratio pooled over the
  site's features;
- an unseen, unadapted site is scored against the average site, with the between-site
  variance added to the predictive variance, and is flagged (``site_status``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from brainmatch.errors import BrainmatchInputError
from brainmatch.normative._blr import fit_blr, predict_blr
from brainmatch.normative._design import DesignSpec, build_design, learn_design
from brainmatch.normative._shash import fit_shash, shash_logpdf, shash_z

#: Extreme deviation threshold (Marquand et al. 2019 count |z| > 2.6, p < 0.005 two-sided).
EXTREME_Z = 2.6
#: Fewest adaptation controls for an unseen site.
MIN_ADAPT = 3
#: Pseudo-count of the prior on an adapted site's per-feature variance ratio (centred on
#: the ratio pooled over the site's features).
ADAPT_PRIOR_COUNT = 5.0
#: Floor of the prior variance of an adapted site's offset (standardised units): weakly
#: informative, since the between-site variance of a few seen sites is a poor estimate.
ADAPT_PRIOR_SITE_VAR = 1.0
#: Controls per design column below which a fit is refused.
MIN_PER_COLUMN = 5


class NormativeModel:
    """Per-feature Bayesian linear regression with heteroskedastic noise and site effects.

    Parameters
    ----------
    covariates : sequence of str
        Covariate columns of the tables given to :meth:`fit` (e.g. ``("age", "sex")``).
        Empty: the reference is the controls' distribution, adjusted for nothing.
    site_column : str, optional
        Site (scanner) column, modelled as a batch effect in mean and variance.
    n_knots : int
        Knots of the cubic B-spline of each smooth numeric covariate.
    heteroskedastic : bool
        Model the log noise variance with the same design as the mean (default); False
        gives one noise variance per feature (classical BLR).
    max_iter : int
        Outer iterations of the fit.
    chunk_size : int
        Features fitted together (memory is about ``n x chunk_size x 8`` bytes x 6).
    var_ridge : float
        Prior precision of the log-variance weights (other than the intercept) on the
        standardised scale: a mild N(0, 1) prior steadies the variance of small samples;
        0 is plain type-II maximum likelihood (PCNtoolkit's unpenalised BLR).
    likelihood : {"normal", "shash"}
        ``"shash"`` fits, per feature, a sinh-arcsinh distribution to the controls'
        standardised residuals (:mod:`brainmatch.normative._shash`), so that skewed or
        heavy-tailed measures get quantile-matched deviations.

    Attributes
    ----------
    feature_names_ : list of str
    design_ : DesignSpec
    coef_, coef_cov_, noise_coef_, alpha_ : ndarray
        Fitted parameters on the standardised scale (see :class:`~._blr.BLRFit`).
    y_mean_, y_scale_ : ndarray, shape (F,)
        Standardisation of each feature in the controls.
    between_site_var_ : ndarray, shape (F,)
        Variance of the seen sites' offsets (standardised scale); 0 with one site.
    adapted_sites_ : dict
        Per adapted site: ``offset``, ``offset_var``, ``var_scale`` arrays and ``n``.
    n_controls_ : int
    """

    def __init__(
        self,
        covariates: tuple[str, ...] | list[str] = (),
        site_column: str | None = None,
        n_knots: int = 5,
        heteroskedastic: bool = True,
        max_iter: int = 30,
        chunk_size: int = 1000,
        var_ridge: float = 1.0,
        likelihood: str = "normal",
    ) -> None:
        self.covariates = covariates
        self.site_column = site_column
        self.n_knots = n_knots
        self.heteroskedastic = heteroskedastic
        self.max_iter = max_iter
        self.chunk_size = chunk_size
        self.var_ridge = var_ridge
        self.likelihood = likelihood

    # -- helpers ------------------------------------------------------------------------
    def _sites(self, X: pd.DataFrame, required: bool) -> NDArray[Any] | None:
        if not self.site_column:
            return None
        if self.site_column not in X.columns:
            if required:
                raise BrainmatchInputError(
                    f"site column {self.site_column!r} is missing from the covariates"
                )
            return None
        return X[self.site_column].astype(str).to_numpy()

    def _variance_design(self, design: NDArray[np.float64]) -> NDArray[np.float64]:
        return design if self.heteroskedastic else design[:, :1]

    def _check_features(self, Y: pd.DataFrame | NDArray[Any], fit: bool) -> NDArray[np.float64]:
        if isinstance(Y, pd.DataFrame):
            names = [str(c) for c in Y.columns]
            if fit:
                self.feature_names_ = names
            else:
                missing = [c for c in self.feature_names_ if c not in names]
                if missing:
                    raise BrainmatchInputError(
                        f"{len(missing)} of the model's {len(self.feature_names_)} features are "
                        f"not in the table: {', '.join(missing[:8])}"
                        f"{' ...' if len(missing) > 8 else ''}"
                    )
                Y = Y[self.feature_names_]
            # only the columns pandas did not already read as numbers are coerced (a
            # connectome table has thousands of columns: a per-column pass over all of them
            # dominated the normative stage)
            other = [
                c
                for c, dt in zip(Y.columns, Y.dtypes, strict=True)
                if not (pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt))
            ]
            if other:
                values = Y.copy()
                coerced = Y[other].apply(pd.to_numeric, errors="coerce")
                bad = [str(c) for c in other if (coerced[c].isna() & Y[c].notna()).any()]
                if bad:
                    raise BrainmatchInputError(
                        f"non-numeric values in feature(s): {', '.join(bad[:8])}"
                    )
                values[other] = coerced
                arr = values.to_numpy(float)
            else:
                arr = Y.to_numpy(float)
        else:
            arr = np.asarray(Y, dtype=float)
            if arr.ndim != 2:
                raise BrainmatchInputError(f"features must be a 2-D table, got shape {arr.shape}")
            if fit:
                self.feature_names_ = [f"feature{j}" for j in range(arr.shape[1])]
            elif arr.shape[1] != len(self.feature_names_):
                raise BrainmatchInputError(
                    f"expected {len(self.feature_names_)} features, got {arr.shape[1]}"
                )
        if np.isinf(arr).any():
            raise BrainmatchInputError("infinite values in the features")
        return arr

    # -- fitting ------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, Y: pd.DataFrame | NDArray[Any]) -> NormativeModel:
        """Fit on controls.

        Parameters
        ----------
        X : DataFrame
            Controls' covariates (the ``covariates`` and ``site_column`` columns).
        Y : DataFrame or ndarray, shape (n, F)
            Controls' features; missing values are left out of that feature's fit.

        Returns
        -------
        self
        """
        if self.likelihood not in ("normal", "shash"):
            raise BrainmatchInputError(
                f"likelihood {self.likelihood!r}: choose 'normal' or 'shash'"
            )
        y = self._check_features(Y, fit=True)
        n = y.shape[0]
        if len(X) != n:
            raise BrainmatchInputError(f"{len(X)} covariate rows for {n} feature rows")
        for c in self.covariates:
            if c not in X.columns:
                raise BrainmatchInputError(f"covariate column {c!r} is missing")
        sites = self._sites(X, required=True)
        self.design_ = learn_design(X, list(self.covariates), sites, n_knots=self.n_knots)
        p = self.design_.n_columns
        if n < max(MIN_PER_COLUMN * p, 10):
            raise BrainmatchInputError(
                f"too few controls ({n}) for {p} design columns "
                f"({', '.join(self.design_.columns)}): need at least "
                f"{max(MIN_PER_COLUMN * p, 10)}; use fewer covariates or knots (--n-knots)"
            )
        if sites is not None:
            counts = pd.Series(sites).value_counts()
            small = counts[counts < 2]
            if len(small):
                raise BrainmatchInputError(
                    f"site(s) {', '.join(map(str, small.index[:5]))} have a single control: a "
                    "site effect cannot be estimated from one person"
                )
        mask = ~np.isnan(y)
        n_obs = mask.sum(axis=0)
        if (n_obs < max(MIN_PER_COLUMN * p, 10)).any():
            bad = [self.feature_names_[j] for j in np.flatnonzero(n_obs < MIN_PER_COLUMN * p)]
            raise BrainmatchInputError(
                f"{len(bad)} feature(s) have too few non-missing controls: {', '.join(bad[:5])}"
            )
        design, _ = build_design(self.design_, X, sites)
        self.y_mean_ = np.nanmean(y, axis=0)
        self.y_scale_ = np.nanstd(y, axis=0)
        const = self.y_scale_ <= 1e-12 * np.maximum(np.abs(self.y_mean_), 1.0)
        if const.any():
            names = [self.feature_names_[j] for j in np.flatnonzero(const)]
            raise BrainmatchInputError(
                f"{len(names)} feature(s) are constant in the controls: {', '.join(names[:5])}"
            )
        z = (y - self.y_mean_) / self.y_scale_
        psi = self._variance_design(design)
        f = y.shape[1]
        coef = np.empty((f, p))
        cov = np.empty((f, p, p))
        noise = np.empty((f, psi.shape[1]))
        alpha = np.empty(f)
        self.n_iter_ = 0
        for start in range(0, f, self.chunk_size):
            sl = slice(start, min(start + self.chunk_size, f))
            m = mask[:, sl]
            res = fit_blr(
                design,
                psi,
                z[:, sl],
                None if m.all() else m,
                max_iter=self.max_iter,
                var_ridge=self.var_ridge,
            )
            coef[sl], cov[sl], noise[sl], alpha[sl] = (
                res.coef,
                res.coef_cov,
                res.noise_coef,
                res.alpha,
            )
            self.n_iter_ = max(self.n_iter_, res.n_iter)
        self.coef_, self.coef_cov_, self.noise_coef_, self.alpha_ = coef, cov, noise, alpha
        self.n_controls_ = n
        self.between_site_var_ = np.zeros(f)
        s = len(self.design_.sites)
        if s > 1:
            offsets = coef[:, p - s :]
            self.between_site_var_ = offsets.var(axis=1, ddof=1)
        self.adapted_sites_: dict[str, dict[str, Any]] = {}
        self.shash_ = None
        if self.likelihood == "shash":
            shash = np.empty((f, 4))
            for start in range(0, f, self.chunk_size):
                sl = slice(start, min(start + self.chunk_size, f))
                mean, noise_var, param_var = predict_blr(coef[sl], cov[sl], noise[sl], design, psi)
                shash[sl] = fit_shash((z[:, sl] - mean) / np.sqrt(noise_var + param_var))
            self.shash_ = shash
        return self

    # -- prediction ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise BrainmatchInputError("the normative model is not fitted yet")

    def site_status(self, X: pd.DataFrame) -> NDArray[Any]:
        """Per row: ``"seen"``, ``"adapted"``, ``"unseen"`` or ``"none"`` (no site model)."""
        self._check_fitted()
        if len(self.design_.sites) <= 1:
            return np.full(len(X), "none", dtype=object)
        sites = self._sites(X, required=False)
        if sites is None:
            return np.full(len(X), "unseen", dtype=object)
        out = np.full(len(X), "unseen", dtype=object)
        out[np.isin(sites, self.design_.sites)] = "seen"
        out[np.isin(sites, list(self.adapted_sites_))] = "adapted"
        return out

    def _predict_std(
        self, X: pd.DataFrame
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, Any]]:
        self._check_fitted()
        for c in self.covariates:
            if c not in X.columns:
                raise BrainmatchInputError(f"covariate column {c!r} is missing")
        sites = self._sites(X, required=False)
        design, info = build_design(self.design_, X, sites)
        mean, noise_var, param_var = predict_blr(
            self.coef_, self.coef_cov_, self.noise_coef_, design, self._variance_design(design)
        )
        status = self.site_status(X)
        info["site_status"] = status
        if sites is not None:
            for site, ad in self.adapted_sites_.items():
                rows = sites == site
                if rows.any():
                    mean[rows] += ad["offset"]
                    noise_var[rows] *= ad["var_scale"]
                    param_var[rows] += ad["offset_var"]
        unseen = status == "unseen"
        if unseen.any():
            param_var[unseen] += self.between_site_var_
        return mean, noise_var + param_var, info

    def predict(
        self, X: pd.DataFrame, return_std: bool = True
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Predictive mean and standard deviation of every feature for the rows of ``X``.

        Returns
        -------
        mean, std : ndarray, shape (n, F)
            On the features' own scale.
        """
        mean, var, _ = self._predict_std(X)
        return self.y_mean_ + mean * self.y_scale_, np.sqrt(var) * self.y_scale_

    def zscores(
        self, X: pd.DataFrame, Y: pd.DataFrame | NDArray[Any]
    ) -> tuple[NDArray[np.float64], dict[str, Any]]:
        """Deviation z-scores ``(y - predictive mean) / predictive sd``.

        Returns
        -------
        z : ndarray, shape (n, F)
            NaN where the feature is missing.
        info : dict
            ``site_status`` per row, ``extrapolated`` per row and ``out_of_range`` messages.
        """
        y = self._check_features(Y, fit=False)
        if len(X) != len(y):
            raise BrainmatchInputError(f"{len(X)} covariate rows for {len(y)} feature rows")
        mean, var, info = self._predict_std(X)
        z = ((y - self.y_mean_) / self.y_scale_ - mean) / np.sqrt(var)
        shash = getattr(self, "shash_", None)
        if shash is not None:
            z = shash_z(z, shash)
        return z, info

    def log_likelihood(
        self, X: pd.DataFrame, Y: pd.DataFrame | NDArray[Any]
    ) -> NDArray[np.float64]:
        """Predictive log density of every value (features' own scale), shape (n, F)."""
        y = self._check_features(Y, fit=False)
        mean, var, _ = self._predict_std(X)
        r = ((y - self.y_mean_) / self.y_scale_ - mean) / np.sqrt(var)
        shash = getattr(self, "shash_", None)
        if shash is not None:
            return shash_logpdf(r, shash) - 0.5 * np.log(var) - np.log(self.y_scale_)
        return -0.5 * (np.log(2 * np.pi * var) + r**2) - np.log(self.y_scale_)

    # -- unseen sites -------------------------------------------------------------------
    def adapt(self, X: pd.DataFrame, Y: pd.DataFrame | NDArray[Any]) -> NormativeModel:
        """Adapt the model to unseen sites from a few of their controls.

        Rows of sites already seen in the fit are ignored.  Each unseen site needs at least
        :data:`MIN_ADAPT` controls.

        Returns
        -------
        self
        """
        self._check_fitted()
        if len(self.design_.sites) <= 1 or not self.site_column:
            raise BrainmatchInputError(
                "the model has no site effects (fitted without a site column or on one site): "
                "there is nothing to adapt"
            )
        y = self._check_features(Y, fit=False)
        sites = self._sites(X, required=True)
        assert sites is not None
        new = sorted(set(sites) - set(self.design_.sites))
        if not new:
            raise BrainmatchInputError(
                "every adaptation control is from a site seen in the fit: nothing to adapt"
            )
        z = (y - self.y_mean_) / self.y_scale_
        frame = X.copy()
        for site in new:
            rows = sites == site
            k = int(rows.sum())
            if k < MIN_ADAPT:
                raise BrainmatchInputError(
                    f"site {site!r} has {k} adaptation control(s); at least {MIN_ADAPT} are needed"
                )
            sub = frame[rows].copy()
            sub[self.site_column] = "\0unseen"
            design = build_design(self.design_, sub, sub[self.site_column].to_numpy())[0]
            mean, noise_var, param_var = predict_blr(
                self.coef_, self.coef_cov_, self.noise_coef_, design, self._variance_design(design)
            )
            r = z[rows] - mean
            ok = ~np.isnan(r)
            kk = np.maximum(ok.sum(axis=0), 1)
            tau2 = np.maximum(self.between_site_var_, ADAPT_PRIOR_SITE_VAR)
            s2 = noise_var.mean(axis=0) + param_var.mean(axis=0)
            post_var = 1.0 / (1.0 / tau2 + kk / s2)
            offset = post_var * np.nansum(r, axis=0) / s2
            resid2 = np.nansum(np.where(ok, (r - offset) ** 2 / (noise_var + param_var), 0.0), 0)
            # variance ratio: shrunk towards the site's ratio pooled over all features (a
            # scanner's noise level is largely shared by its features)
            pooled = float(np.sum(resid2) / np.sum(kk))
            scale = (ADAPT_PRIOR_COUNT * pooled + resid2) / (ADAPT_PRIOR_COUNT + kk)
            self.adapted_sites_[str(site)] = {
                "offset": offset,
                "offset_var": post_var,
                "var_scale": scale,
                "n": k,
            }
        return self

    # -- persistence --------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON metadata that rebuild the fitted model (see :meth:`from_state`)."""
        self._check_fitted()
        arrays: dict[str, NDArray[Any]] = {
            "coef": self.coef_,
            "coef_cov": self.coef_cov_,
            "noise_coef": self.noise_coef_,
            "alpha": self.alpha_,
            "y_mean": self.y_mean_,
            "y_scale": self.y_scale_,
            "between_site_var": self.between_site_var_,
        }
        shash = getattr(self, "shash_", None)
        if shash is not None:
            arrays["shash"] = shash
        adapted: dict[str, int] = {}
        for i, (site, ad) in enumerate(sorted(self.adapted_sites_.items())):
            for key in ("offset", "offset_var", "var_scale"):
                arrays[f"adapt{i}_{key}"] = ad[key]
            adapted[site] = int(ad["n"])
        meta = {
            "params": {
                "covariates": list(self.covariates),
                "site_column": self.site_column,
                "n_knots": self.n_knots,
                "heteroskedastic": self.heteroskedastic,
                "max_iter": self.max_iter,
                "chunk_size": self.chunk_size,
                "var_ridge": self.var_ridge,
                "likelihood": self.likelihood,
            },
            "feature_names": self.feature_names_,
            "design": self.design_.to_dict(),
            "n_controls": self.n_controls_,
            "adapted_sites": adapted,
        }
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> NormativeModel:
        """Rebuild a fitted model from :meth:`get_state` output."""
        params = dict(meta["params"])
        params["covariates"] = tuple(params["covariates"])
        model = cls(**params)
        model.feature_names_ = list(meta["feature_names"])
        model.design_ = DesignSpec.from_dict(meta["design"])
        model.coef_ = arrays["coef"]
        model.coef_cov_ = arrays["coef_cov"]
        model.noise_coef_ = arrays["noise_coef"]
        model.alpha_ = arrays["alpha"]
        model.y_mean_ = arrays["y_mean"]
        model.y_scale_ = arrays["y_scale"]
        model.between_site_var_ = arrays["between_site_var"]
        model.shash_ = arrays.get("shash")
        model.n_controls_ = int(meta["n_controls"])
        model.adapted_sites_ = {}
        for i, (site, n) in enumerate(sorted(meta.get("adapted_sites", {}).items())):
            model.adapted_sites_[site] = {
                key: arrays[f"adapt{i}_{key}"] for key in ("offset", "offset_var", "var_scale")
            }
            model.adapted_sites_[site]["n"] = int(n)
        f = len(model.feature_names_)
        if model.coef_.shape != (f, model.design_.n_columns):
            raise BrainmatchInputError("the normative model's arrays do not match its metadata")
        return model
