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
    pen_text = (
        "chosen by inner 3-fold cross-validation"
        if pen == "auto"
        else f"an L2 penalty of {pen} on standardised coefficients"
    )
    model = (
        "one Cox model per arm"
        if p["model"] == "per-arm"
        else "one Cox model stratified by arm with arm-by-feature interactions"
    )
    return (
        f"Time to relapse of {p['n']} patients ({p['n_events']} relapses) was modelled with "
        f"{model} (lifelines CoxPHFitter, Efron ties, {pen_text}) on {p['n_features']} "
        f"features.  Each patient's relapse-free probability at {p['horizon']:g} "
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
