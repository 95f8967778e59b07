"""HTML reports of normative fits and scores (rendered from the result objects)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np

from brainmatch import __version__
from brainmatch._io import write_text
from brainmatch.reports import figure_to_data_uri

if TYPE_CHECKING:
    from brainmatch.normative.analysis import NormativeFitResult, NormativeScoreResult

_ENV = jinja2.Environment(
    loader=jinja2.ChoiceLoader(
        [
            jinja2.PackageLoader("brainmatch", "normative/templates"),
            jinja2.PackageLoader("brainmatch", "reports/templates"),
        ]
    ),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for humans (``n/a`` for missing)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "n/a" if not math.isfinite(float(value)) else f"{float(value):.{digits}g}"
    return str(value)


_ENV.filters["fmt"] = fmt


def plt_module() -> Any:
    """matplotlib.pyplot with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render(template: str, **context: Any) -> str:
    """Render a template of ``normative/templates`` (or the shared ``reports/templates``)."""
    return _ENV.get_template(template).render(version=__version__, **context)


def _calibration_figure(metrics: Any) -> str | None:
    if metrics is None or len(metrics) == 0 or "share_abs_z_below_1_96" not in metrics:
        return None
    plt = plt_module()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    axes[0].hist(metrics["mean_z"], bins=40, color="#58c")
    axes[0].set_title("mean z per feature", fontsize=9)
    axes[1].hist(metrics["sd_z"], bins=40, color="#58c")
    axes[1].set_title("SD of z per feature", fontsize=9)
    axes[2].hist(metrics["share_abs_z_below_1_96"], bins=40, color="#58c")
    axes[2].axvspan(0.93, 0.97, color="#9c9", alpha=0.4)
    axes[2].set_title("share |z| < 1.96 (target 0.93-0.97)", fontsize=9)
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.suptitle("held-out controls", fontsize=10)
    return figure_to_data_uri(fig)


def write_fit_report(result: NormativeFitResult, path: Path) -> Path:
    """The fit's report: data, calibration on held-out controls, worst features, warnings."""
    m = result.fit_metrics
    worst = []
    if len(m):
        dev = (m["share_abs_z_below_1_96"] - 0.95).abs()
        worst = m.assign(_d=dev).sort_values("_d", ascending=False).head(15).to_dict("records")
    html = render(
        "normative_fit.html",
        s=result.summary,
        warnings=result.warnings,
        figure=_calibration_figure(m),
        worst=worst,
        medians={
            k: float(np.nanmedian(m[k])) for k in ("explained_variance", "msll", "smse", "rho")
        }
        if len(m)
        else {},
    )
    write_text(path, html)
    return path


def write_score_report(result: NormativeScoreResult, path: Path) -> Path:
    """The score's report: per person extreme counts and circuit calls, warnings."""
    c = result.circuits
    called = c[c["call"] != ""].sort_values("mean_z", key=lambda s: -s.abs()).head(60)
    html = render(
        "normative_score.html",
        people=result.people.head(200).to_dict("records"),
        n_people=len(result.people),
        called=called.to_dict("records"),
        warnings=result.warnings,
        model=result.model_summary,
    )
    write_text(path, html)
    return path
