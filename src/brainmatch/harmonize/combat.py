"""ComBat site harmonisation (Johnson 2007; Fortin 2017, 2018) as a transformer.

The estimates follow neuroCombat 0.2.12 (Fortin's reference implementation, which
neuroHarmonize 2.5.2 wraps), parametric empirical Bayes, so that
:meth:`ComBat.fit_transform` reproduces its adjusted data, with or without a reference
site (``ref_batch``, Stein et al. 2015 "M-ComBat": the reference site's data are left
unchanged and the other sites are brought to its location and scale).  The *apply* step
is our own, because neuroHarmonize's ``harmonizationApply`` fails on a batch that lacks
any training site (one new patient) or holds an unseen site:

- a patient from a site seen in training is adjusted with that site's learned location
  and scale, whatever the rest of the batch holds (a batch of one works);
- a site unseen in training is handled by ``unseen_site``: ``"estimate"`` (default)
  estimates the new site's location and scale from the batch itself against the
  training standardisation, as ``harmonizationLearn(..., orig_model=...)`` does, when
  the batch holds at least ``min_new_site_size`` of its patients, and otherwise leaves
  them unadjusted (``"passthrough"``); ``"error"`` refuses.  Only features are used, never
  outcomes, so estimating a test site's parameters does not leak outcome information.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from brainmatch.errors import BrainmatchInputError

_UNSEEN = ("estimate", "passthrough", "error")


def _aprior(delta_hat: NDArray[np.float64]) -> NDArray[np.float64]:
    m = delta_hat.mean(axis=1)
    s2 = delta_hat.var(axis=1, ddof=1)
    return (2 * s2 + m**2) / s2


def _bprior(delta_hat: NDArray[np.float64]) -> NDArray[np.float64]:
    m = delta_hat.mean(axis=1)
    s2 = delta_hat.var(axis=1, ddof=1)
    return (m * s2 + m**3) / s2


def _eb_adjust(
    s_data: NDArray[np.float64],
    groups: list[NDArray[np.intp]],
    eb: bool,
    conv: float = 1e-4,
    max_iter: int = 1000,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Location/scale estimates per group (rows of ``s_data``), shrunk by parametric EB."""
    gamma_hat = np.array([s_data[g].mean(axis=0) for g in groups])
    delta_hat = np.array([s_data[g].var(axis=0, ddof=1) for g in groups])
    if not eb or s_data.shape[1] < 2:
        return gamma_hat, delta_hat
    gamma_bar = gamma_hat.mean(axis=1)
    t2 = gamma_hat.var(axis=1, ddof=1)
    a = _aprior(delta_hat)
    b = _bprior(delta_hat)
    gamma_star = np.empty_like(gamma_hat)
    delta_star = np.empty_like(delta_hat)
    for i, g in enumerate(groups):
        sdat = s_data[g]
        n = np.full(sdat.shape[1], float(sdat.shape[0]))
        g_old, d_old = gamma_hat[i].copy(), delta_hat[i].copy()
        for _ in range(max_iter):
            g_new = (t2[i] * n * gamma_hat[i] + d_old * gamma_bar[i]) / (t2[i] * n + d_old)
            sum2 = ((sdat - g_new) ** 2).sum(axis=0)
            d_new = (0.5 * sum2 + b[i]) / (n / 2.0 + a[i] - 1.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                change = max(
                    np.nanmax(np.abs(g_new - g_old) / np.abs(g_old)),
                    np.nanmax(np.abs(d_new - d_old) / d_old),
                )
            g_old, d_old = g_new, d_new
            if not change > conv:
                break
        gamma_star[i], delta_star[i] = g_old, d_old
    return gamma_star, delta_star


class ComBat(TransformerMixin, BaseEstimator):
    """Remove additive and multiplicative site effects from features, fitted on training data.

    Parameters
    ----------
    eb : bool, default True
        Shrink the per-site estimates towards their mean across features (empirical Bayes).
    unseen_site : {"estimate", "passthrough", "error"}, default "estimate"
        What :meth:`transform` does with a site absent from training (see module notes).
    min_new_site_size : int, default 5
        Smallest number of patients of an unseen site needed to estimate its parameters.
    ref_batch : str or None, default None
        A training site to use as the reference (as neuroCombat's / neuroHarmonize's
        ``ref_batch``): the grand mean and pooled variance are that site's, its data are
        returned unchanged, and every other site is adjusted towards it.

    Attributes
    ----------
    sites_ : ndarray of str
        Training sites.
    ref_site_ : str or None
        The reference site, when ``ref_batch`` is set.
    grand_mean_ : ndarray of shape (n_features,)
    var_pooled_ : ndarray of shape (n_features,)
    beta_covariates_ : ndarray of shape (n_covariates, n_features)
        Covariate effects (preserved, not removed).
    gamma_ : ndarray of shape (n_sites, n_features)
        Standardised additive site effects (EB estimates when ``eb``).
    delta_ : ndarray of shape (n_sites, n_features)
        Standardised multiplicative site effects.
    n_features_in_ : int

    Notes
    -----
    ``fit(X, sites=..., covariates=...)``: ``sites`` is one label per row, ``covariates`` an
    optional numeric array whose effects on the features ComBat preserves (e.g. age, sex).
    """

    def __init__(
        self,
        eb: bool = True,
        unseen_site: str = "estimate",
        min_new_site_size: int = 5,
        ref_batch: str | None = None,
    ) -> None:
        self.eb = eb
        self.unseen_site = unseen_site
        self.min_new_site_size = min_new_site_size
        self.ref_batch = ref_batch

    @staticmethod
    def _prepare(
        X: ArrayLike,
        sites: ArrayLike,
        covariates: ArrayLike | None,
    ) -> tuple[NDArray[np.float64], NDArray[np.str_], NDArray[np.float64]]:
        Xa = np.asarray(X, dtype=float)
        if Xa.ndim != 2:
            raise BrainmatchInputError(f"ComBat expects a 2D feature array, got {Xa.ndim}D")
        if not np.isfinite(Xa).all():
            raise BrainmatchInputError("ComBat cannot harmonise missing values: impute first")
        s = np.asarray(sites).astype(str)
        if s.shape != (Xa.shape[0],):
            raise BrainmatchInputError(
                f"ComBat: {s.size} site labels for {Xa.shape[0]} rows of features"
            )
        if covariates is None:
            C = np.zeros((Xa.shape[0], 0))
        else:
            C = np.asarray(covariates, dtype=float).reshape(Xa.shape[0], -1)
            if not np.isfinite(C).all():
                raise BrainmatchInputError("ComBat covariates contain missing values")
        return Xa, s, C

    def fit(
        self, X: ArrayLike, y: Any = None, *, sites: ArrayLike, covariates: ArrayLike | None = None
    ) -> ComBat:
        """Learn site effects from training data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sites : array-like of shape (n_samples,)
        covariates : array-like of shape (n_samples, n_covariates), optional

        Returns
        -------
        self
        """
        self._fit(X, sites, covariates)
        return self

    def _fit(
        self,
        X: ArrayLike,
        sites: ArrayLike,
        covariates: ArrayLike | None,
    ) -> NDArray[np.float64]:
        if self.unseen_site not in _UNSEEN:
            raise BrainmatchInputError(
                f"ComBat unseen_site={self.unseen_site!r}: expected one of {', '.join(_UNSEEN)}"
            )
        Xa, s, C = self._prepare(X, sites, covariates)
        labels, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
        small = [f"{lab} ({c})" for lab, c in zip(labels, counts, strict=True) if c < 2]
        if small:
            raise BrainmatchInputError(
                "ComBat needs at least 2 patients per site to estimate its variance; "
                f"too few in: {', '.join(small)}"
            )
        ref: int | None = None
        if self.ref_batch is not None:
            hits = np.flatnonzero(labels == str(self.ref_batch))
            if hits.size == 0:
                raise BrainmatchInputError(
                    f"ComBat ref_batch={self.ref_batch!r} is not one of the training sites "
                    f"({', '.join(labels.tolist())})"
                )
            ref = int(hits[0])
        n, n_sites = Xa.shape[0], labels.size
        B = np.zeros((n, n_sites))
        B[np.arange(n), inverse] = 1.0
        design = np.hstack([B, C])
        coef = np.linalg.lstsq(design, Xa, rcond=None)[0]
        resid = Xa - design @ coef
        if ref is None:
            grand_mean = (counts / n) @ coef[:n_sites]
            var_pooled = (resid**2).mean(axis=0)
        else:
            # the reference site's own intercept and residual variance (M-ComBat)
            grand_mean = coef[ref].copy()
            var_pooled = (resid[inverse == ref] ** 2).mean(axis=0)
        var_pooled[var_pooled <= 0] = 1.0  # constant feature: nothing to scale
        mod_mean = C @ coef[n_sites:]
        s_data = (Xa - grand_mean - mod_mean) / np.sqrt(var_pooled)
        groups = [np.flatnonzero(inverse == i) for i in range(n_sites)]
        gamma, delta = _eb_adjust(s_data, groups, self.eb and Xa.shape[1] > 1)
        delta[delta <= 0] = 1.0
        if ref is not None:
            gamma[ref], delta[ref] = 0.0, 1.0
        self.sites_ = labels
        self.ref_site_ = None if ref is None else str(labels[ref])
        self.grand_mean_ = grand_mean
        self.var_pooled_ = var_pooled
        self.beta_covariates_ = coef[n_sites:]
        self.gamma_ = gamma
        self.delta_ = delta
        self.n_features_in_ = Xa.shape[1]
        out = (s_data - gamma[inverse]) / np.sqrt(delta[inverse])
        adjusted = np.asarray(out * np.sqrt(var_pooled) + grand_mean + mod_mean)
        if ref is not None:
            adjusted[inverse == ref] = Xa[inverse == ref]  # exactly, not up to rounding
        return adjusted

    def fit_transform(self, X: ArrayLike, y: Any = None, **fit_params: Any) -> NDArray[np.float64]:
        """Fit and return the harmonised training data (as neuroHarmonize's learn step)."""
        return self._fit(X, fit_params["sites"], fit_params.get("covariates"))

    def site_status(self, sites: ArrayLike) -> dict[str, str]:
        """Say how :meth:`transform` would treat each site in ``sites`` (batch-dependent).

        Returns
        -------
        dict
            site -> ``"trained"``, ``"estimated"`` (unseen, enough patients in the batch)
            or ``"unadjusted"`` (unseen, too few to estimate).
        """
        check_is_fitted(self, "gamma_")
        s = np.asarray(sites).astype(str)
        out: dict[str, str] = {}
        for lab in np.unique(s):
            if lab in set(self.sites_.tolist()):
                out[str(lab)] = "trained"
            elif self.unseen_site == "estimate" and (s == lab).sum() >= max(
                2, self.min_new_site_size
            ):
                out[str(lab)] = "estimated"
            else:
                out[str(lab)] = "unadjusted"
        return out

    def transform(
        self, X: ArrayLike, *, sites: ArrayLike, covariates: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """Harmonise features of any batch (one patient, seen or unseen sites).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        sites : array-like of shape (n_samples,)
        covariates : array-like of shape (n_samples, n_covariates), optional
            Required when the model was fitted with covariates.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self, "gamma_")
        Xa, s, C = self._prepare(X, sites, covariates)
        if Xa.shape[1] != self.n_features_in_:
            raise BrainmatchInputError(
                f"ComBat was fitted on {self.n_features_in_} features, got {Xa.shape[1]}"
            )
        if C.shape[1] != self.beta_covariates_.shape[0]:
            raise BrainmatchInputError(
                f"ComBat was fitted with {self.beta_covariates_.shape[0]} covariates, "
                f"got {C.shape[1]}"
            )
        mod_mean = C @ self.beta_covariates_
        sd = np.sqrt(self.var_pooled_)
        s_data = (Xa - self.grand_mean_ - mod_mean) / sd
        out = s_data.copy()
        keep = np.zeros(Xa.shape[0], dtype=bool)
        index = {lab: i for i, lab in enumerate(self.sites_.tolist())}
        status = self.site_status(s)
        for lab, how in status.items():
            rows = np.flatnonzero(s == lab)
            if how == "trained":
                i = index[lab]
                out[rows] = (s_data[rows] - self.gamma_[i]) / np.sqrt(self.delta_[i])
                if lab == getattr(self, "ref_site_", None):
                    keep[rows] = True
            elif self.unseen_site == "error":
                raise BrainmatchInputError(
                    f"site {lab!r} was not seen in training (sites: {', '.join(index)})"
                )
            elif how == "estimated":
                g, d = _eb_adjust(s_data, [rows], self.eb and Xa.shape[1] > 1)
                d[d <= 0] = 1.0
                out[rows] = (s_data[rows] - g[0]) / np.sqrt(d[0])
            # "unadjusted": leave the standardised data as it is (gamma 0, delta 1)
        adjusted = np.asarray(out * sd + self.grand_mean_ + mod_mean)
        adjusted[keep] = Xa[keep]  # the reference site is returned unchanged
        return adjusted
