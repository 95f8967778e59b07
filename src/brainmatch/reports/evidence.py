"""Reports of meta-analyses and network meta-analyses, rendered from their result objects.

Both use the report base (:mod:`brainmatch.reports`): one template environment, one
stylesheet, one number formatter, and figures embedded so that ``report.html`` is one
self-contained file that can be e-mailed on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainmatch._io import write_text
from brainmatch.reports import file_to_data_uri, render

if TYPE_CHECKING:
    from brainmatch.evidence.analysis import MetaAnalysis, NetworkMetaAnalysis


def _figures(out: Path, names: list[str]) -> list[dict[str, str]]:
    return [{"name": n, "uri": file_to_data_uri(out / n)} for n in names if (out / n).is_file()]


def write_meta_report(
    result: MetaAnalysis,
    data: dict[str, Any],
    out: Path,
    figures: list[str],
    figure_notes: list[str],
) -> Path:
    """Write ``out/report.html`` for a :class:`~brainmatch.evidence.analysis.MetaAnalysis`.

    Parameters
    ----------
    result : MetaAnalysis
    data : dict
        ``result.to_dict()``.
    out : Path
        Folder holding the figures (embedded, not linked).
    figures : list of str
        Figure files (SVG) in ``out``.
    figure_notes : list of str
        Notes shown under the figures.

    Returns
    -------
    Path
    """
    settings = result.settings
    loo = result.leave_one_out
    html = render(
        "meta.html",
        title=settings.get("title") or f"Meta-analysis of {Path(settings['input']).name}",
        input=settings["input"],
        selection=" & ".join(settings.get("select") or []),
        r=data,
        model=result.model,
        level=result.fit.level,
        warnings=result.warnings,
        subgroups=data.get("subgroups"),
        subgroup_column=settings.get("subgroup"),
        regression=data.get("meta_regression"),
        figures=_figures(out, figures),
        figure_notes=figure_notes,
        egger=data.get("egger"),
        trimfill=data.get("trimfill"),
        loo=loo,
        loo_note=settings.get("loo_note"),
        loo_min=min((x["estimate"] for x in loo), default=0.0),
        loo_max=max((x["estimate"] for x in loo), default=0.0),
        methods=result.methods,
        citations=result.citations,
    )
    path = out / "report.html"
    write_text(path, html)
    return path


def write_nma_report(
    result: NetworkMetaAnalysis, data: dict[str, Any], out: Path, figures: list[str]
) -> Path:
    """Write ``out/report.html`` for a :class:`~brainmatch.evidence.analysis.NetworkMetaAnalysis`.

    Parameters
    ----------
    result : NetworkMetaAnalysis
    data : dict
        ``result.to_dict()``.
    out : Path
        Folder holding the figures.
    figures : list of str
        Figure files (SVG) in ``out``.

    Returns
    -------
    Path
    """
    from brainmatch._io import json_safe

    league = result.fit.league_table("random")
    rows = [
        [(str(league.iloc[i, j]), i == j) for j in range(league.shape[1])]
        for i in range(league.shape[0])
    ]
    settings = result.settings
    html = render(
        "nma.html",
        title=settings.get("title") or f"Network meta-analysis of {Path(settings['input']).name}",
        input=settings["input"],
        selection=" & ".join(settings.get("select") or []),
        warnings=result.warnings,
        s=data,
        d=data["design_by_treatment"],
        effects=json_safe(result.fit.effects_table("random").to_dict("records")),
        league=rows,
        figures=_figures(out, figures),
        methods=result.methods,
        citations=result.citations,
    )
    path = out / "report.html"
    write_text(path, html)
    return path
