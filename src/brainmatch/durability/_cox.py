"""lifelines' ``CoxPHFitter`` with the elastic-net penalty's derivatives written out.

lifelines 0.30 differentiates its smoothed elastic-net penalty with autograd (a nested
``elementwise_grad`` for the Hessian's diagonal) at every Newton-Raphson step; for the
small models fitted here that took over half of each fit's time.  :func:`cox_fitter`
returns a ``CoxPHFitter`` whose Newton-Raphson loop is lifelines' own, line for line,
except that the penalty's gradient and Hessian diagonal are computed by the same sequence
of numpy operations autograd's backward passes perform, so every iterate, and hence every
fitted coefficient and baseline hazard, is bit-for-bit lifelines' (checked against
lifelines in ``tests/test_durability.py``).  Only ``l1_ratio`` 0 (ridge) and 1 (lasso) take
this path; any other value is left to lifelines itself.
"""

from __future__ import annotations

import time
import warnings
from functools import cache
from typing import Any

import numpy as np


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


@cache
def _classes() -> tuple[type, type]:
    from lifelines import exceptions, utils
    from lifelines.fitters.coxph_fitter import CoxPHFitter, SemiParametricPHFitter
    from scipy.linalg import LinAlgError, norm
    from scipy.linalg import solve as spsolve

    class _SemiParametric(SemiParametricPHFitter):
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
