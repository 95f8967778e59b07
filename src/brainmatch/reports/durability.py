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
    """One-page HTML of a durability recommendation (a ``DurabilityRecommendation``), on
    the report base (``templates/durability_recommend.html``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainmatch.reports import figure_to_data_uri, render

    m = result.model
    patients = []
    for p in result.patients[:50]:
        fig, ax = plt.subplots(figsize=(5, 3))
        times = p["curves"]["times"]
        for arm in m["arms"]:
            ax.step(times, p["curves"][arm], where="post", label=arm)
        ax.set_xlabel(f"time ({m['time_unit']})")
        ax.set_ylabel("relapse-free probability")
        ax.set_ylim(0, 1.02)
        ax.legend()
        patients.append({**p, "figure": figure_to_data_uri(fig)})
    return render("durability_recommend.html", m=m, sel=m["selection"], patients=patients)


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
