"""``report.html`` of ``brainmatch durability``, ``train --time-column`` and ``recommend``
on a durability model, rendered from their result objects (the analysis never imports this
module: the CLI calls :func:`write_report` / :func:`write_recommend_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainmatch._io import write_text
from brainmatch.durability.methods import methods_text

if TYPE_CHECKING:
    from brainmatch.durability.validate import DurabilityResult


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


def write_report(result: DurabilityResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` of a durability validation; return its path."""
    path = Path(out_dir) / "report.html"
    write_text(path, render_report(result))
    return path


def write_recommend_report(result: Any, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` of a ``DurabilityRecommendation``; set and return
    ``result.report_path``."""
    path = Path(out_dir) / "report.html"
    write_text(path, render_recommend_report(result))
    result.report_path = path
    return path
