"""The methods paragraph of a durability validation (``results.json`` / ``metrics.json``
``description`` and the report's methods section)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from brainmatch.durability.validate import DurabilityResult


def methods_text(result: DurabilityResult) -> str:
    """Methods paragraph with the numbers of ``result``."""
    p, m = result.params, result.metrics
    g = m["policy_rmst_gain"]
    pen = p["penalizer"]
    cox_pen = {"per-arm": 0.5, "interaction": 0.5, "lasso-cox": 0.05}
    kind = {"lasso-cox": "an L1 (lasso)", "per-arm": "an L2", "interaction": "an L2"}
    descriptions = {
        "per-arm": "one ridge-penalised Cox model per arm",
        "lasso-cox": "one lasso-penalised Cox model per arm",
        "interaction": "one Cox model stratified by arm with arm-by-feature interactions",
        "pseudo": "a T-learner: per arm, a lasso (scikit-learn, penalty by 5-fold "
        "cross-validation) on jackknife pseudo-observations of the Kaplan-Meier relapse-free "
        "probability at 27 times up to the horizon (Andersen & Perme 2010)",
    }
    chosen = m.get("model_chosen") or {}
    sites = p.get("harmonised_sites")
    harm = (
        f", harmonised across {len(sites)} sites by ComBat (empirical Bayes) fitted inside "
        "every training fold"
        if sites
        else ""
    )
    if p["model"] == "auto":
        shares = ", ".join(f"{k} in {v:.0%}" for k, v in sorted(chosen.items()))
        model = (
            "the learner chosen in every training fold by inner 3-fold cross-validation of "
            "the policy's restricted mean survival time among ridge Cox per arm (penalty "
            "0.5), lasso Cox per arm (0.05) and a pseudo-observation lasso T-learner "
            f"(chosen: {shares})"
        )
    else:
        model = descriptions.get(p["model"], p["model"])
        if p["model"] in cox_pen:
            pen_value = cox_pen[p["model"]] if pen is None else pen
            pen_text = (
                "penalty chosen by inner 3-fold cross-validation"
                if pen == "auto"
                else f"{kind[p['model']]} penalty of {pen_value} on standardised coefficients"
            )
            model += f" (lifelines CoxPHFitter, Efron ties, {pen_text})"
    return (
        f"Time to relapse of {p['n']} patients ({p['n_events']} relapses) was modelled with "
        f"{model} on {p['n_features']} "
        f"features{harm}.  Each patient's relapse-free probability at {p['horizon']:g} "
        f"{p.get('time_unit', 'time units')} under every arm was predicted out of fold "
        f"({p['n_splits']}-fold cross-validation stratified by arm and event, repeated "
        f"{p['n_repeats']} times) and the arm with the highest was recommended.  "
        "Discrimination of the received arm's prediction is given by Harrell's and Uno's "
        "concordance (Uno et al. 2011) and the cumulative/dynamic AUC at the horizon, "
        "accuracy by the IPCW Brier score (Graf et al. 1999).  The policy's value is the "
        "restricted mean survival time to the horizon of the randomised patients whose arm "
        "matched the recommendation (Kaplan-Meier weighted by the inverse arm probability), "
        f"compared with the best single arm ({g['best_single_arm']}); its "
        f"{g['level']:.0%} CI is from {p['n_bootstrap']} bootstrap resamples with the "
        "recommendations held fixed."
        + (
            f"  A permutation test reran the whole cross-validation {p['n_permutations']} "
            "times with permuted feature rows."
            if p["n_permutations"]
            else ""
        )
    )
