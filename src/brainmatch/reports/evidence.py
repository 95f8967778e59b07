"""Reports of meta-analyses and network meta-analyses, rendered from their result objects.

Both use the report base (:mod:`brainmatch.reports`): one template environment, one
stylesheet, one number formatter, and figures embedded so that ``report.html`` is one
self-contained file that can be e-mailed on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from brainmatch._io import write_text
from brainmatch.reports import file_to_data_uri, render

if TYPE_CHECKING:
    from brainmatch.evidence.analysis import MetaAnalysis, NetworkMetaAnalysis


def _figures(out: Path, names: list[str]) -> list[dict[str, str]]:
    return [{"name": n, "uri": file_to_data_uri(out / n)} for n in names if (out / n).is_file()]


#: figures ``NetworkMetaAnalysis.save`` draws, in report order
NMA_FIGURES = ("network.svg", "nma_forest.svg")


def write_meta_report(result: MetaAnalysis, out: str | Path) -> Path:
    """Write ``out/report.html`` for a :class:`~brainmatch.evidence.analysis.MetaAnalysis`.

    Call it after ``result.save(out)``: the figures the save drew are embedded (not
    linked).  The folder is claimed for ``meta`` while writing (a no-op inside the
    command's own claim), so ``report.html`` is recorded as that command's file.

    Parameters
    ----------
    result : MetaAnalysis
    out : str or Path
        The folder ``result.save`` wrote.

    Returns
    -------
    Path
    """
    from brainmatch._outdir import claim_output

    with claim_output(out, "meta") as claim:
        return _write_meta_report(result, claim.path)


def _write_meta_report(result: MetaAnalysis, out: Path) -> Path:
    data = result.to_dict()
    figures = result.figure_files
    figure_notes = result.figure_notes
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


def write_nma_report(result: NetworkMetaAnalysis, out: str | Path) -> Path:
    """Write ``out/report.html`` for a :class:`~brainmatch.evidence.analysis.NetworkMetaAnalysis`.

    Call it after ``result.save(out)`` (figures embedded; folder claimed for ``nma``).

    Parameters
    ----------
    result : NetworkMetaAnalysis
    out : str or Path
        The folder ``result.save`` wrote.

    Returns
    -------
    Path
    """
    from brainmatch._outdir import claim_output

    with claim_output(out, "nma") as claim:
        return _write_nma_report(result, claim.path)


def _write_nma_report(result: NetworkMetaAnalysis, out: Path) -> Path:
    from brainmatch._io import json_safe

    data = result.to_dict()
    figures = list(NMA_FIGURES)

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
