"""lifelines' ``CoxPHFitter``, faster on the small models fitted here, same numbers.

lifelines 0.30 spends most of a small penalised fit in three places, each replaced in
:func:`cox_fitter`'s subclass by code that yields bit-for-bit lifelines' results (every
iterate, coefficient, baseline hazard and log-likelihood; checked against lifelines in
``tests/test_durability.py``):

* the smoothed elastic-net penalty's gradient and Hessian diagonal, which lifelines gets
  from autograd (a nested ``elementwise_grad``) at every Newton-Raphson step, are computed
  by the same sequence of numpy operations autograd's reverse passes perform (only for
  ``l1_ratio`` 0 (ridge) and 1 (lasso); other values are left to lifelines itself);
* Efron's gradient and Hessian (``_get_efron_values_single``, a Python loop over rows)
  use cumulative sums of the same terms in the same order (:func:`_efron_values`);
* the training data's summary for lifelines' plots (pandas ``describe``) is computed only
  when first asked for.
"""

from __future__ import annotations

import time
import warnings
from functools import cache
from typing import Any

import numpy as np
from numpy import arange, dot, einsum, exp, log, multiply, zeros


def _penalty_derivatives(
    beta: Any, a: float, n: int, penalizer: float, l1_ratio: float
) -> tuple[Any, Any]:
    """Gradient and Hessian diagonal of lifelines' penalty
    ``n * sum(penalizer * (l1 * soft_abs(beta, a) + 0.5 * (1 - l1) * beta**2))`` with
    ``soft_abs(x, a) = (logaddexp(0, -a x) + logaddexp(0, a x)) / a``, evaluated in the
    order autograd's (nested) reverse pass evaluates them."""
    g_inner = penalizer * np.full(beta.shape, n * 1.0)
    g_s = (1 / a) * (l1_ratio * g_inner)
    w = (0.5 * (1 - l1_ratio) * g_inner) * 2
    u1 = -a * beta
    e1 = np.exp(u1 - np.logaddexp(0, u1))
    u2 = a * beta
    e2 = np.exp(u2 - np.logaddexp(0, u2))
    grad = (-a) * (g_s * e1) + a * (g_s * e2) + w * beta**1.0
    ones = np.ones_like(beta)

    def branch(sign_a: float, e: Any) -> Any:
        gv = e * (g_s * (sign_a * ones))
        return sign_a * (gv + (-gv) * e)

    hess = branch(-a, e1) + branch(a, e2) + (w * ones) * 1.0 * beta**0.0
    return grad, hess


def _efron_values(X: Any, T: Any, E: Any, weights: Any, beta: Any) -> tuple[Any, Any, Any]:
    """lifelines' ``_get_efron_values_single`` (Hessian, gradient and log partial
    likelihood with Efron's ties; rows sorted by time) without its loop over rows: the
    risk-set sums are cumulative sums of the same terms in the same order, the blocks with
    one event are computed at once, tied blocks by lifelines' own code, and the blocks'
    contributions are accumulated in lifelines' order, so the result is bit-for-bit
    lifelines'."""
    X = np.asarray(X, dtype=float)
    T = np.asarray(T)
    E = np.asarray(E)
    weights = np.asarray(weights, dtype=float)
    n, d = X.shape
    scores = weights * exp(dot(X, beta))
    phi_x_is = scores[:, None] * X
    phi_x_x_is = X[:, :, None] * phi_x_is[:, None, :]
    # running risk-set sums of the reverse scan (sequential, as lifelines' loop adds)
    risk_phi = np.cumsum(scores[::-1])[::-1]
    risk_phi_x = np.cumsum(phi_x_is[::-1], axis=0)[::-1]
    risk_phi_x_x = np.cumsum(phi_x_x_is[::-1], axis=0)[::-1]
    # blocks of equal times; each block's first (smallest) index is where lifelines sums
    starts = np.flatnonzero(np.r_[True, T[1:] != T[:-1]])
    ends = np.r_[starts[1:], n]
    ev = E.astype(bool)
    n_ev = np.add.reduceat(ev.astype(np.intp), starts)
    keep = n_ev > 0
    starts, ends, n_ev = starts[keep][::-1], ends[keep][::-1], n_ev[keep][::-1]  # scan order
    m = starts.size
    grad_terms = np.empty((2 * m, d))
    ll_terms = np.empty(2 * m)
    hess_terms = np.empty((m, d, d))
    single = n_ev == 1
    # single-event blocks, vectorised
    if single.any():
        s = starts[single]
        # the event row of each single-event block
        ev_pos = np.flatnonzero(ev)
        ev_idx = ev_pos[np.searchsorted(ev_pos, s)]
        w = weights[ev_idx]
        wa = (0.0 + w) / 1
        xds = zeros((1, d)) + w[:, None] * X[ev_idx]
        denom = 1.0 / risk_phi[s]
        a1 = risk_phi_x_x[s] * denom[:, None, None]
        summand = risk_phi_x[s] * denom[:, None]
        a2 = summand[:, :, None] * summand[:, None, :]
        k = np.flatnonzero(single)
        grad_terms[2 * k] = xds
        grad_terms[2 * k + 1] = -(wa[:, None] * summand)
        ll_terms[2 * k] = np.array([dot(x, beta) for x in xds])
        ll_terms[2 * k + 1] = wa * log(denom)
        hess_terms[k] = wa[:, None, None] * (a2 - a1)
    for j in np.flatnonzero(~single):
        a, b = starts[j], ends[j]
        x_death_sum = zeros((d,))
        tie_phi = 0
        tie_phi_x = zeros((d,))
        tie_phi_x_x = zeros((d, d))
        weight_count = 0.0
        tied_death_counts = 0
        for i in range(b - 1, a - 1, -1):
            if E[i]:
                x_death_sum = x_death_sum + weights[i] * X[i]
                tie_phi = tie_phi + scores[i]
                tie_phi_x = tie_phi_x + phi_x_is[i]
                tie_phi_x_x = tie_phi_x_x + multiply.outer(X[i], phi_x_is[i])
                tied_death_counts += 1
                weight_count += weights[i]
        weighted_average = weight_count / tied_death_counts
        increasing_proportion = arange(tied_death_counts) / tied_death_counts
        denom = 1.0 / (risk_phi[a] - increasing_proportion * tie_phi)
        numer = risk_phi_x[a] - multiply.outer(increasing_proportion, tie_phi_x)
        a1 = einsum("ab,i->ab", risk_phi_x_x[a], denom) - einsum(
            "ab,i->ab", tie_phi_x_x, increasing_proportion * denom
        )
        summand = numer * denom[:, None]
        a2 = summand.T.dot(summand)
        grad_terms[2 * j] = x_death_sum
        grad_terms[2 * j + 1] = -(weighted_average * summand.sum(0))
        ll_terms[2 * j] = dot(x_death_sum, beta)
        ll_terms[2 * j + 1] = weighted_average * log(denom).sum()
        hess_terms[j] = weighted_average * (a2 - a1)
    if m == 0:
        return zeros((d, d)), zeros((d,)), 0
    gradient = np.cumsum(np.vstack([zeros((1, d)), grad_terms]), axis=0)[-1]
    log_lik = np.cumsum(np.r_[0.0, ll_terms])[-1]
    hessian = np.cumsum(np.concatenate([zeros((1, d, d)), hess_terms]), axis=0)[-1]
    return hessian, gradient, log_lik


@cache
def _classes() -> tuple[type, type]:
    from lifelines import exceptions, utils
    from lifelines.fitters.coxph_fitter import CoxPHFitter, SemiParametricPHFitter
    from scipy.linalg import LinAlgError, norm
    from scipy.linalg import solve as spsolve

    class _SemiParametric(SemiParametricPHFitter):
        _defer_central_values = True

        def _compute_central_values_of_raw_training_data(
            self, df: Any, strata: Any = None, name: str = "baseline"
        ) -> Any:
            # lifelines summarises the training data (pandas describe, a fifth of a small
            # fit's time) for its plots only: done when first asked for
            if self._defer_central_values:
                self._central_values_of = (df, strata, name)
                return None
            return super()._compute_central_values_of_raw_training_data(df, strata, name)

        @property
        def _central_values(self) -> Any:
            if self.__dict__.get("_central_values_") is None and hasattr(
                self, "_central_values_of"
            ):
                self._defer_central_values = False
                try:
                    self._central_values_ = self._compute_central_values_of_raw_training_data(
                        *self._central_values_of
                    )
                finally:
                    self._defer_central_values = True
            return self.__dict__.get("_central_values_")

        @_central_values.setter
        def _central_values(self, value: Any) -> None:
            self._central_values_ = value

        def _get_efron_values_single(
            self, X: Any, T: Any, E: Any, weights: Any, entries: Any, beta: Any
        ) -> Any:
            return _efron_values(X.values, T.values, E.values, weights.values, beta)

        def _newton_raphson_for_efron_model(
            self,
            X: Any,
            T: Any,
            E: Any,
            weights: Any,
            entries: Any,
            initial_point: Any = None,
            show_progress: bool = True,
            step_size: float = 0.95,
            precision: float = 1e-07,
            r_precision: float = 1e-9,
            max_steps: int = 500,
        ) -> Any:
            CONVERGENCE_DOCS = (
                "Please see the following tips in the lifelines documentation: https://"
                "lifelines.readthedocs.io/en/latest/Examples.html#problems-with-convergence-"
                "in-the-cox-proportional-hazard-model"
            )
            n, d = X.shape
            pen, l1 = self.penalizer, self.l1_ratio

            def soft_abs(x: Any, a: float) -> Any:
                return 1 / a * (np.logaddexp(0, -a * x) + np.logaddexp(0, a * x))

            def elastic_net_penalty(beta: Any, a: float) -> Any:
                return n * (pen * (l1 * (soft_abs(beta, a)) + 0.5 * (1 - l1) * (beta**2))).sum()

            get_gradients = self._choose_gradient_calculator(T, X, entries)
            if initial_point is not None:
                assert initial_point.shape == (d,)
                beta = initial_point
            else:
                beta = np.zeros((d,))
            step_sizer = utils.StepSizer(step_size)
            step_size = step_sizer.next()
            delta = np.zeros_like(beta)
            converging = True
            ll_, previous_ll_ = 0.0, 0.0
            start = time.time()
            i = 0
            while converging:
                beta += step_size * delta
                i += 1
                if self.strata is None:
                    h, g, ll_ = get_gradients(X, T, E, weights, entries, beta)
                else:
                    g = np.zeros_like(beta)
                    h = np.zeros((beta.shape[0], beta.shape[0]))
                    ll_ = 0
                    for _h, _g, _ll in self._partition_by_strata_and_apply(
                        X, T, E, weights, entries, get_gradients, beta
                    ):
                        g += _g
                        h += _h
                        ll_ += _ll
                if i == 1 and np.all(beta == 0):
                    self._ll_null_ = ll_
                if isinstance(self.penalizer, np.ndarray) or self.penalizer > 0:
                    a = 1.3**i
                    ll_ -= elastic_net_penalty(beta, a)
                    d_pen, dd_pen = _penalty_derivatives(beta, a, n, pen, l1)
                    g -= d_pen
                    h[np.diag_indices(d)] -= dd_pen
                try:
                    inv_h_dot_g_T = spsolve(-h, g, assume_a="pos", check_finite=False)
                except (ValueError, LinAlgError) as e:
                    self._check_values_post_fitting(X, T, E, weights)
                    if "infs or NaNs" in str(e):
                        raise exceptions.ConvergenceError(
                            "Hessian or gradient contains nan or inf value(s). Convergence "
                            f"halted. {CONVERGENCE_DOCS}",
                            e,
                        ) from e
                    if isinstance(e, LinAlgError):
                        raise exceptions.ConvergenceError(
                            "Convergence halted due to matrix inversion problems. Suspicion "
                            f"is high collinearity. {CONVERGENCE_DOCS}",
                            e,
                        ) from e
                    raise
                delta = inv_h_dot_g_T
                if np.any(np.isnan(delta)):
                    self._check_values_post_fitting(X, T, E, weights)
                    raise exceptions.ConvergenceError(
                        f"delta contains nan value(s). Convergence halted. {CONVERGENCE_DOCS}"
                    )
                hessian = h
                norm_delta = norm(delta) if delta.size > 0 else 0
                newton_decrement = g.dot(inv_h_dot_g_T) / 2
                if show_progress:
                    print(
                        f"\rIteration {i}: norm_delta = {norm_delta:.2e}, step_size = "
                        f"{step_size:.4f}, log_lik = {ll_:.5f}, newton_decrement = "
                        f"{newton_decrement:.2e}, seconds_since_start = "
                        f"{time.time() - start:.1f}"
                    )
                if norm_delta < precision:
                    converging, success = False, True
                elif previous_ll_ != 0 and abs(ll_ - previous_ll_) / (-previous_ll_) < r_precision:
                    converging, success = False, True
                elif newton_decrement < precision:
                    converging, success = False, True
                elif i >= max_steps:
                    converging, success = False, False
                elif step_size <= 0.00001:
                    converging, success = False, False
                elif abs(ll_) < 0.0001 and norm_delta > 1.0:
                    warnings.warn(
                        "The log-likelihood is getting suspiciously close to 0 and the delta "
                        "is still large. There may be complete separation in the dataset.",
                        exceptions.ConvergenceWarning,
                        stacklevel=2,
                    )
                    converging, success = False, False
                previous_ll_ = ll_
                step_size = step_sizer.update(norm_delta).next()
            if show_progress and success:
                print(f"Convergence success after {i} iterations.")
            elif show_progress and not success:
                print("Convergence failed. See any warning messages.")
            if success and norm_delta > 0.1:
                self._check_values_post_fitting(X, T, E, weights)
                warnings.warn(
                    "Newton-Raphson convergence completed successfully but norm(delta) is "
                    f"still high, {norm_delta:.3f}.",
                    exceptions.ConvergenceWarning,
                    stacklevel=2,
                )
            elif not success:
                self._check_values_post_fitting(X, T, E, weights)
                warnings.warn(
                    f"Newton-Raphson failed to converge sufficiently. {CONVERGENCE_DOCS}",
                    exceptions.ConvergenceWarning,
                    stacklevel=2,
                )
            return beta, ll_, hessian

    class _CoxPH(CoxPHFitter):
        def _fit_model_breslow(self, *args: Any, **kwargs: Any) -> Any:
            model = _SemiParametric(
                penalizer=self.penalizer,
                l1_ratio=self.l1_ratio,
                strata=self.strata,
                alpha=self.alpha,
                label=self._label,
            )
            if utils.CensoringType.is_right_censoring(self):
                model.fit(*args, **kwargs)
                return model
            raise ValueError("Left or interval censoring is not supported")

    return _CoxPH, CoxPHFitter


def cox_fitter(penalizer: float = 0.0, l1_ratio: float = 0.0) -> Any:
    """An unfitted lifelines ``CoxPHFitter`` (Breslow baseline), fast path for
    ``l1_ratio`` 0 or 1 (same results as lifelines)."""
    fast, plain = _classes()
    cls = fast if l1_ratio in (0.0, 1.0) else plain
    return cls(penalizer=penalizer, l1_ratio=l1_ratio)
