"""Linear mixed models with random intercepts and slopes: statsmodels ``MixedLM``, checked.

statsmodels' ``MixedLM`` is the engine (it reproduces lme4 on the ``dietox`` data, see
``tests/test_sessions_mixed.py``).  Random-slope models often stop at a point where the
optimiser reports failure or a singular random-effects covariance.  :func:`fit_mixed`
therefore accepts statsmodels' default optimiser (BFGS) only when it converges without
warnings; otherwise it tries L-BFGS, Powell, Nelder-Mead and CG as well, restarts BFGS and
L-BFGS from the best point found, and keeps the converged fit with the highest (restricted)
log-likelihood, never a degenerate one (non-finite likelihood), recording what it tried.
When no optimiser converges with random slopes, it falls back to independent (diagonal)
random effects, then to random intercepts only, and says so.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from brainmatch.errors import BrainmatchInputError

OPTIMISERS = ("bfgs", "lbfgs", "powell", "nm", "cg")


@dataclass
class MixedFit:
    """One fitted linear mixed model (all numbers on the outcome's scale).

    Attributes
    ----------
    formula, re_formula : str
        Fixed-effects formula and random-effects formula (per ``group``).
    params, bse : Series
        Fixed-effect estimates and standard errors.
    cov_params : DataFrame
        Covariance of the fixed-effect estimates.
    cov_re : DataFrame
        Random-effects covariance matrix.
    scale : float
        Residual variance.
    llf : float
        (Restricted) log-likelihood at the optimum.
    reml : bool
        REML (True) or ML.
    converged : bool
        Whether the reported optimiser converged.
    optimiser : str
        The optimiser whose fit is reported.
    random : str
        ``"slopes"``, ``"diagonal"`` or ``"intercept"``: the random-effects structure used.
    n_obs, n_groups : int
        Rows and participants used.
    notes : list of str
        What was tried and any warnings.
    """

    formula: str
    re_formula: str
    params: pd.Series
    bse: pd.Series
    cov_params: pd.DataFrame
    cov_re: pd.DataFrame
    scale: float
    llf: float
    reml: bool
    converged: bool
    optimiser: str
    random: str
    n_obs: int
    n_groups: int
    level: float = 0.95
    notes: list[str] = field(default_factory=list)
    fitted: np.ndarray | None = None

    def table(self) -> pd.DataFrame:
        """Fixed effects: estimate, SE, z, p and Wald confidence interval."""
        z = stats.norm.ppf(0.5 + self.level / 2)
        est, se = self.params, self.bse
        with np.errstate(divide="ignore", invalid="ignore"):
            zval = est / se
        return pd.DataFrame(
            {
                "term": est.index,
                "estimate": est.to_numpy(),
                "se": se.to_numpy(),
                "z": zval.to_numpy(),
                "p": 2 * stats.norm.sf(np.abs(zval.to_numpy())),
                "ci_lb": (est - z * se).to_numpy(),
                "ci_ub": (est + z * se).to_numpy(),
            }
        )

    def contrast(self, weights: dict[str, float]) -> dict[str, float]:
        """Estimate, SE, CI and p of a linear combination of fixed effects."""
        w = pd.Series(0.0, index=self.params.index)
        for k, v in weights.items():
            if k not in w.index:
                raise KeyError(k)
            w[k] = v
        est = float(w @ self.params)
        se = float(np.sqrt(w @ self.cov_params.loc[w.index, w.index] @ w))
        z = stats.norm.ppf(0.5 + self.level / 2)
        p = float(2 * stats.norm.sf(abs(est / se))) if se > 0 else float("nan")
        return {
            "estimate": est,
            "se": se,
            "ci_lb": float(est - z * se),
            "ci_ub": float(est + z * se),
            "p": p,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "formula": self.formula,
            "re_formula": self.re_formula,
            "random": self.random,
            "fixed_effects": self.table().to_dict("records"),
            "random_effects_cov": {
                str(i): {str(j): float(self.cov_re.loc[i, j]) for j in self.cov_re.columns}
                for i in self.cov_re.index
            },
            "scale": self.scale,
            "loglik": self.llf,
            "reml": self.reml,
            "converged": self.converged,
            "optimiser": self.optimiser,
            "n_obs": self.n_obs,
            "n_groups": self.n_groups,
            "notes": list(self.notes),
        }


def _one_fit(
    model: Any, method: str, reml: bool, free: Any | None, start: Any | None = None
) -> tuple[Any | None, list[str]]:
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        try:
            kw: dict[str, Any] = {"reml": reml, "method": [method]}
            if free is not None:
                kw["free"] = free
            if start is not None:
                kw["start_params"] = start
            res = model.fit(**kw)
        except (np.linalg.LinAlgError, ValueError, ZeroDivisionError) as exc:
            return None, [f"{method}: failed ({type(exc).__name__}: {exc})"]
    for item in w:
        msg = str(item.message).splitlines()[0]
        if msg not in caught:
            caught.append(msg)
    return res, caught


def _fitted(res: Any) -> np.ndarray | None:
    """Fitted values (fixed + predicted random effects); None when the random-effects
    covariance is singular (a variance at its boundary of zero), where statsmodels cannot
    predict random effects."""
    try:
        return np.asarray(res.fittedvalues)
    except (ValueError, np.linalg.LinAlgError):
        return None


def fit_mixed(
    data: pd.DataFrame,
    formula: str,
    group: str,
    re_formula: str | None = None,
    *,
    reml: bool = True,
    level: float = 0.95,
    optimisers: tuple[str, ...] = OPTIMISERS,
) -> MixedFit:
    """Fit a linear mixed model with statsmodels, trying optimisers until one converges.

    Parameters
    ----------
    data : DataFrame
        Long-format data (rows with missing values in the model's columns must already
        be dropped).
    formula : str
        Patsy formula of the fixed effects, e.g. ``"y ~ session_c + augmented"``.
    group : str
        Column identifying the participant (random-effects grouping).
    re_formula : str, optional
        Random-effects formula, e.g. ``"~session_c"`` for random intercepts and slopes
        (default: random intercepts only).
    reml : bool
        Restricted maximum likelihood (default) or maximum likelihood.
    level : float
        Confidence level of the Wald intervals.
    optimisers : tuple of str
        ``statsmodels`` optimisers to try, in order.

    Returns
    -------
    MixedFit
    """
    import statsmodels.formula.api as smf
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    if data[group].nunique() < 3:
        raise BrainmatchInputError(
            f"a mixed model needs at least 3 participants; got {data[group].nunique()}"
        )
    attempts: list[tuple[str, str | None, str]] = [("slopes", re_formula, "")]
    if re_formula is not None and re_formula.strip() not in ("~1", "1"):
        attempts += [("diagonal", re_formula, "diag"), ("intercept", None, "")]
    notes: list[str] = []
    for random, ref, kind in attempts:
        model = smf.mixedlm(formula, data, groups=data[group], re_formula=ref)
        free = None
        if kind == "diag":
            k_re = model.k_re
            free = MixedLMParams.from_components(np.ones(model.k_fe), np.eye(k_re))
        best: tuple[Any, str, list[str]] | None = None

        def consider(res: Any, caught: list[str], method: str, label: str) -> bool:
            """Keep ``res`` if it is usable and better; True when it is a clean fit."""
            nonlocal best
            if res is None:
                notes.extend(caught)
                return False
            finite = np.isfinite(res.llf) and np.all(np.isfinite(res.bse_fe))
            if not (bool(res.converged) and finite):
                notes.append(
                    f"{label}: "
                    + ("did not converge" if finite else "degenerate fit (non-finite likelihood)")
                )
                return False
            if best is None or res.llf > best[0].llf + 1e-8:
                best = (res, method, caught)
            return not any(
                w in c.lower() for c in caught for w in ("converge", "boundary", "singular")
            )

        for i, method in enumerate(optimisers):
            res, caught = _one_fit(model, method, reml, free)
            # the first optimiser converging cleanly is statsmodels' own answer: accept it;
            # otherwise every optimiser is tried and the highest likelihood kept
            if consider(res, caught, method, f"{random} / {method}") and i == 0:
                break
        else:
            if best is not None:
                # polish: restart the gradient optimisers from the best point found
                start, first = best[0].params_object, best[1]
                for method in ("bfgs", "lbfgs"):
                    res, caught = _one_fit(model, method, reml, free, start)
                    consider(res, caught, f"{first}+{method}", f"{random} / {first}+{method}")
        if best is not None:
            res, method, caught = best
            notes.extend(f"{random} / {method}: {c}" for c in caught)
            if random != "slopes":
                kind_text = (
                    "independent (diagonal) random effects"
                    if random == "diagonal"
                    else "random-intercept"
                )
                notes.append(
                    f"random slopes did not converge with any optimiser; reported the "
                    f"{kind_text} model"
                )
            fe = res.fe_params
            names = list(fe.index)
            cov = res.cov_params().loc[names, names]
            return MixedFit(
                formula=formula,
                re_formula=ref or "~1",
                params=fe.copy(),
                bse=pd.Series(np.sqrt(np.diag(cov.to_numpy())), index=names),
                cov_params=cov,
                cov_re=res.cov_re.copy(),
                scale=float(res.scale),
                llf=float(res.llf),
                reml=reml,
                converged=True,
                optimiser=method,
                random=random,
                n_obs=int(res.nobs),
                n_groups=len(model.group_labels),
                level=level,
                notes=notes,
                fitted=_fitted(res),
            )
    raise BrainmatchInputError(
        f"the mixed model {formula!r} did not converge with any optimiser ({'; '.join(notes[-5:])})"
    )
