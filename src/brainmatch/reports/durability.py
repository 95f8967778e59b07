"""``report.html`` of ``brainmatch durability`` (rendered from a DurabilityResult)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def render_report(result: DurabilityResult) -> str:
    """The HTML report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainmatch.reports import figure_to_data_uri, render

    cal = result.metrics["calibration_horizon"]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], color="#999", lw=1)
    ax.plot([c["predicted"] for c in cal], [c["observed"] for c in cal], "o-", color="#335")
    ax.set_xlabel("predicted relapse-free probability")
    ax.set_ylabel("observed (Kaplan-Meier)")
    ax.set_title(f"calibration at {result.params['horizon']:g}")
    calibration = figure_to_data_uri(fig)
    metrics: dict[str, Any] = result.metrics
    return render(
        "durability.html",
        params=result.params,
        m=metrics,
        g=metrics["policy_rmst_gain"],
        notes=result.notes,
        description=methods_text(result),
        calibration=calibration,
    )


def render_recommend_report(result: Any) -> str:
    """One-page HTML of a durability recommendation (a ``DurabilityRecommendation``)."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainmatch.reports import figure_to_data_uri

    m = result.model
    sel = m["selection"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>brainmatch recommend "
        "(durability)</title><style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "td,th{padding:2px 8px;text-align:right}</style></head><body>",
        "<h1>Relapse-free probability by treatment</h1>",
        f"<p>Model: {html.escape(m['path'])} (brainmatch {html.escape(m['brainmatch_version'])})"
        f", horizon {m['horizon']:g} {html.escape(m['time_unit'])}.  Validation: policy RMST "
        f"gain {sel['policy_rmst_gain']:.2f} {html.escape(m['time_unit'])} "
        f"[{sel['policy_rmst_gain_ci'][0]:.2f}, {sel['policy_rmst_gain_ci'][1]:.2f}] over "
        f"{html.escape(sel['best_single_arm'])}, permutation p "
        f"{'not run' if sel['permutation_p'] is None else format(sel['permutation_p'], '.3g')}"
        f"; selection {'supported' if sel['selection_supported'] else 'NOT supported'}.</p>",
    ]
    for p in result.patients[:50]:
        fig, ax = plt.subplots(figsize=(5, 3))
        times = p["curves"]["times"]
        for arm in m["arms"]:
            ax.step(times, p["curves"][arm], where="post", label=arm)
        ax.set_xlabel(f"time ({m['time_unit']})")
        ax.set_ylabel("relapse-free probability")
        ax.set_ylim(0, 1.02)
        ax.legend()
        uri = figure_to_data_uri(fig)
        plt.close(fig)
        rows = "".join(
            f"<tr><th>{html.escape(a)}</th><td>{q['probability']:.3f}</td><td>"
            + (f"{q['interval'][0]:.3f} to {q['interval'][1]:.3f}" if q["interval"] else "n/a")
            + "</td></tr>"
            for a, q in p["relapse_free"].items()
        )
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in p["no_preference_reasons"])
        parts.append(
            f"<h2>{html.escape(p['participant_id'])}: {html.escape(p['statement'])}</h2>"
            f"<table><tr><th>arm</th><th>relapse-free at {m['horizon']:g}</th>"
            f"<th>{p['interval_level']:.0%} bootstrap interval</th></tr>{rows}</table>"
            f"<img src='{uri}' alt='relapse-free curves'>"
            + (f"<ul>{reasons}</ul>" if reasons else "")
        )
    parts.append("</body></html>")
    return "".join(parts)
