"""Out-of-fold validation of a survival treatment selector (``brainmatch durability``).

Repeated stratified k-fold (strata: arm x event): every patient's relapse-free probability
at the horizon under every arm is predicted by models that never saw that patient.  From
those predictions:

- discrimination of the received arm's prediction: Harrell's and Uno's concordance,
  the cumulative/dynamic AUC at the horizon;
- accuracy and calibration at the horizon: IPCW Brier score (and the Brier score of the
  arm's Kaplan-Meier estimate, the null reference), predicted vs observed by quintile;
- the policy's value: restricted mean survival time (RMST) to the horizon of "give each
  patient the arm with the highest predicted relapse-free probability", estimated from
  the randomised patients who received the recommended arm (Kaplan-Meier weighted by
  1 / P(arm)), minus the RMST of the best single arm; bootstrap CI;
- a permutation test of that gain: the rows of the feature matrix are permuted (breaking
  any link between features and survival under each arm) and the whole cross-validation
  is rerun.
"""

from __future__ import annotations

import html
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from brainmatch.durability import metrics as M
from brainmatch.durability.selector import SurvivalSelector
from brainmatch.errors import BrainmatchInputError


def _folds(strata: NDArray[Any], k: int, rng: np.random.Generator) -> NDArray[np.intp]:
    fold = np.empty(strata.size, dtype=np.intp)
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        fold[idx] = np.arange(idx.size) % k
    return fold


def oof_predictions(
    X: NDArray[np.float64],
    t: NDArray[np.float64],
    e: NDArray[np.float64],
    arm: NDArray[Any],
    *,
    horizon: float,
    model: str,
    penalizer: float | str | None,
    n_splits: int,
    n_repeats: int,
    seed: int,
    chosen: list[str] | None = None,
    sites: NDArray[Any] | None = None,
) -> NDArray[np.float64]:
    """Out-of-fold relapse-free probability at ``horizon`` under every arm, averaged over
    repeats: shape (n, n_arms).  ``chosen`` receives each fold's fitted learner (the
    choice of ``model="auto"``).  With ``sites``, ComBat is fitted in every training fold."""
    arms = sorted(np.unique(arm))
    rng = np.random.default_rng(seed)
    strata = np.array([f"{a}|{int(v)}" for a, v in zip(arm, e, strict=True)])
    out = np.zeros((X.shape[0], len(arms)))
    for _ in range(n_repeats):
        fold = _folds(strata, n_splits, rng)
        for f in range(n_splits):
            test = fold == f
            sel = SurvivalSelector(horizon=horizon, model=model, penalizer=penalizer)
            tr_sites = None if sites is None else sites[~test]
            sel.fit(X[~test], t[~test], e[~test], arm[~test], sites=tr_sites)
            out[test] += sel.predict_rfs(X[test], sites=None if sites is None else sites[test])
            if chosen is not None:
                chosen.append(sel.model_)
    return out / n_repeats


def policy_rmst(
    t: NDArray[np.float64], e: NDArray[np.float64], arm: NDArray[Any], rec: NDArray[Any], tau: float
) -> float:
    """RMST to ``tau`` under the policy ``rec`` (IPW Kaplan-Meier of the concordant patients)."""
    arms, counts = np.unique(arm, return_counts=True)
    prob = dict(zip(arms, counts / counts.sum(), strict=True))
    follow = arm == rec
    if not follow.any():
        return float("nan")
    w = np.array([1.0 / prob[a] for a in arm[follow]])
    return M.rmst(t[follow], e[follow], tau, w)


def _gain(
    t: NDArray[np.float64], e: NDArray[np.float64], arm: NDArray[Any], rec: NDArray[Any], tau: float
) -> tuple[float, float, str]:
    best_arm, best = "", -np.inf
    for a in np.unique(arm):
        v = M.rmst(t[arm == a], e[arm == a], tau)
        if v > best:
            best_arm, best = str(a), v
    return policy_rmst(t, e, arm, rec, tau) - best, best, best_arm


@dataclass
class DurabilityResult:
    """Out-of-fold validation of a survival treatment selector.

    Attributes
    ----------
    predictions : DataFrame
        Per patient: out-of-fold relapse-free probability at the horizon under each arm
        (``rfs__<arm>``), the recommendation and the received arm.
    metrics : dict
        Concordance, AUC, Brier, calibration, policy RMST gain with CI, permutation p.
    params : dict
    notes : list of str
    """

    predictions: pd.DataFrame
    metrics: dict[str, Any]
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        from brainmatch.change.analysis import _json_safe

        return _json_safe({**self.params, "metrics": self.metrics, "notes": self.notes})

    def save(self, out_dir: str | Path) -> Path:
        """Write ``predictions.tsv`` and ``results.json`` into ``out_dir`` (``report.html``:
        :func:`brainmatch.reports.durability.write_report`)."""
        from brainmatch._io import write_json, write_tsv

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise BrainmatchInputError("--out: exists and is not a folder", out)
        if out.is_dir() and any(out.iterdir()):
            import json

            try:
                gen = json.loads((out / "results.json").read_text()).get("generated_by")
            except (OSError, ValueError, AttributeError):
                gen = None
            if gen != "brainmatch durability":
                raise BrainmatchInputError(
                    "--out: folder is not empty and holds no earlier brainmatch durability "
                    "output; choose a new or empty folder",
                    out,
                )
        out.mkdir(parents=True, exist_ok=True)
        write_tsv(out / "predictions.tsv", self.predictions, float_format="%.6g")
        from brainmatch.durability.methods import methods_text

        write_json(
            out / "results.json",
            {
                "generated_by": "brainmatch durability",
                **self.to_dict(),
                "description": methods_text(self),
            },
        )
        return out

    def _repr_html_(self) -> str:
        m = self.metrics
        g = m["policy_rmst_gain"]
        return (
            f"<p><b>brainmatch durability</b> (horizon {self.params['horizon']:g}): "
            f"Harrell's C {m['harrell_c']:.3f}, Uno's C {m['uno_c']:.3f}, AUC(t) "
            f"{m['auc_horizon']:.3f}, Brier {m['brier_horizon']:.3f}; policy RMST gain "
            f"{g['estimate']:.2f} [{g['ci_low']:.2f}, {g['ci_high']:.2f}], permutation p "
            f"{html.escape(str(m.get('permutation_p')))}.</p>"
        )


def validate_durability(
    X: Any,
    time: Any,
    event: Any,
    arm: Any,
    *,
    ids: Any = None,
    sites: Any = None,
    horizon: float = 52.0,
    model: str = "lasso-cox",
    penalizer: float | str | None = None,
    n_splits: int = 5,
    n_repeats: int = 2,
    n_bootstrap: int = 500,
    n_permutations: int = 0,
    level: float = 0.95,
    seed: int = 0,
) -> DurabilityResult:
    """Validate treatment selection by relapse-free survival out of fold.

    Parameters
    ----------
    X : array-like (n, p)
        Features (e.g. brain features and baseline covariates).
    time, event : array-like (n,)
        Time to relapse or censoring (> 0) and the event indicator (1 = relapse).
    arm : array-like (n,)
        Randomised arm.
    ids : array-like, optional
        Participant IDs for the predictions table.
    sites : array-like, optional
        Site of each patient: features are harmonised by ComBat fitted inside every
        training fold (the test fold's patients are transformed with it).
    horizon : float
        Time at which relapse-free probability is compared, and the RMST restriction.
    model, penalizer
        See :class:`SurvivalSelector`.
    n_splits, n_repeats : int
        Stratified k-fold, repeated.
    n_bootstrap : int
        Bootstrap resamples of the policy gain's CI (the out-of-fold recommendations held
        fixed).
    n_permutations : int
        Reruns of the whole cross-validation with permuted feature rows (0: none).
    level : float
    seed : int

    Returns
    -------
    DurabilityResult
    """
    start = _time.perf_counter()
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise BrainmatchInputError("features: need a complete numeric matrix (impute first)")
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=float)
    arm = np.asarray(arm).astype(str)
    n = X.shape[0]
    if t.shape != (n,) or e.shape != (n,) or arm.shape != (n,):
        raise BrainmatchInputError("time, event and arm need one value per row of the features")
    notes: list[str] = []
    censored = 1.0 - e.mean()
    if censored > 0.9:
        raise BrainmatchInputError(
            f"{censored:.0%} of patients are censored (only {int(e.sum())} events): too few "
            "relapses to model survival; lengthen follow-up"
        )
    if censored > 0.7:
        notes.append(f"heavy censoring: {censored:.0%} of patients censored")
    if (t >= horizon).mean() < 0.1:
        raise BrainmatchInputError(
            f"--horizon {horizon:g}: fewer than 10 % of patients are followed that long; "
            "choose a shorter horizon"
        )
    arms = sorted(np.unique(arm))
    kw = {
        "horizon": horizon,
        "model": model,
        "penalizer": penalizer,
        "n_splits": n_splits,
        "n_repeats": n_repeats,
    }
    site_arr = None if sites is None else np.asarray(sites).astype(str)
    if site_arr is not None and site_arr.shape != (n,):
        raise BrainmatchInputError("sites: need one value per row of the features")
    chosen: list[str] = []
    rfs = oof_predictions(
        X,
        t,
        e,
        arm,
        seed=seed,
        chosen=chosen,
        sites=site_arr,
        **kw,  # type: ignore[arg-type]
    )
    rec = np.array(arms)[np.argmax(rfs, axis=1)]
    received = rfs[np.arange(n), [arms.index(a) for a in arm]]
    risk = -received
    gain, best, best_arm = _gain(t, e, arm, rec, horizon)
    rng = np.random.default_rng(seed + 1)
    boots = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        boots.append(_gain(t[idx], e[idx], arm[idx], rec[idx], horizon)[0])
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a]) if boots else (np.nan, np.nan)
    km_brier = []
    for arm_name in arms:
        m = arm == arm_name
        kt, ks = M.kaplan_meier(t[m], e[m])
        km_brier.append((m, float(M.step_at(kt, ks, np.array([horizon]))[0])))
    null_pred = np.zeros(n)
    for m, s in km_brier:
        null_pred[m] = s
    metrics: dict[str, Any] = {
        "harrell_c": M.harrell_c(t, e, risk),
        "uno_c": M.uno_c(t, e, risk, tau=horizon),
        "auc_horizon": M.time_auc(t, e, risk, horizon),
        "brier_horizon": M.brier(t, e, received, horizon),
        "brier_horizon_km": M.brier(t, e, null_pred, horizon),
        "calibration_horizon": M.calibration_at(t, e, received, horizon),
        "policy_rmst_gain": {
            "estimate": gain,
            "ci_low": float(lo),
            "ci_high": float(hi),
            "level": level,
            "best_single_arm": best_arm,
            "best_single_arm_rmst": best,
            "policy_rmst": policy_rmst(t, e, arm, rec, horizon),
        },
        "recommended_share": {a_: float((rec == a_).mean()) for a_ in arms},
        "model_chosen": {c: chosen.count(c) / len(chosen) for c in sorted(set(chosen))},
    }
    if n_permutations:
        null = []
        prng = np.random.default_rng(seed + 2)
        for b in range(n_permutations):
            perm = prng.permutation(n)  # a patient's features move with their site
            rp = oof_predictions(
                X[perm],
                t,
                e,
                arm,
                seed=seed + 10 + b,
                sites=None if site_arr is None else site_arr[perm],
                **kw,  # type: ignore[arg-type]
            )
            null.append(_gain(t, e, arm, np.array(arms)[np.argmax(rp, axis=1)], horizon)[0])
        metrics["permutation_p"] = (1 + sum(v >= gain for v in null)) / (1 + n_permutations)
        metrics["permutation_null_gain_mean"] = float(np.mean(null))
    pred = pd.DataFrame({"participant_id": ids if ids is not None else np.arange(n)})
    for k, a_ in enumerate(arms):
        pred[f"rfs__{a_}"] = rfs[:, k]
    pred["recommended"] = rec
    pred["received"] = arm
    pred["time"] = t
    pred["event"] = e.astype(int)
    params = {
        "horizon": horizon,
        "model": model,
        "penalizer": penalizer,
        "n_splits": n_splits,
        "n_repeats": n_repeats,
        "n_bootstrap": n_bootstrap,
        "n_permutations": n_permutations,
        "arms": arms,
        "n": n,
        "n_events": int(e.sum()),
        "n_features": X.shape[1],
        "harmonised_sites": None if site_arr is None else sorted(set(site_arr.tolist())),
        "seed": seed,
        "seconds": round(_time.perf_counter() - start, 2),
    }
    return DurabilityResult(predictions=pred, metrics=metrics, params=params, notes=notes)
