"""QC reportlets of ``brainmatch extract``, rendered on the report base.

One self-contained HTML file per participant(-session),
``sub-<id>/[ses-<id>/]figures/sub-<id>[_ses-<id>]_desc-qc_bold.html``: per resting-state
run its QC numbers (:func:`brainmatch.features.qc.run_measures`) and figure
(:func:`brainmatch.features.qc.run_figure`: framewise displacement with the censored volumes,
carpet plot, region coverage), through ``reports/templates/qc.html`` (one stylesheet, one
number formatter).  Extraction stores both in each unit's record; :func:`write_reportlets`
renders them after the run (the CLI calls it), so the analysis never imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainmatch._io import write_text
from brainmatch.features.records import RECORDS, read_record
from brainmatch.reports import render


def render_reportlet(key: str, runs: list[dict[str, Any]]) -> str:
    """The HTML of one reportlet.

    Parameters
    ----------
    key : str
        The participant(-session), e.g. ``sub-001_ses-pre``.
    runs : list of dict
        Per run: ``name``, ``qc`` (measures) and ``figure`` (inline SVG, may be empty).

    Returns
    -------
    str
    """
    return render("qc.html", key=key, runs=runs)


def write_reportlets(output_dir: str | Path) -> list[Path]:
    """Write the QC reportlet of every participant(-session) recorded in ``output_dir``.

    ``output_dir`` is an output folder of ``brainmatch extract`` (or the ``features``
    folder ``recommend`` / ``profile`` extract into).  Each unit's record names its
    reportlet and holds its runs' measures and figures; where records of several
    extractions (other atlases) name the same reportlet, the newest record wins, as it
    did when extraction wrote the reportlet itself.

    Parameters
    ----------
    output_dir : str or Path

    Returns
    -------
    list of Path
        The reportlets written.
    """
    out = Path(output_dir)
    folder = out / RECORDS
    if not folder.is_dir():
        return []
    pages: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    records = sorted(folder.glob("sub-*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    for path in records:
        rec = read_record(path)
        if rec is None:
            continue
        runs = [r for r in rec.get("runs") or [] if r.get("qc_report")]
        if not runs:
            continue
        key = rec["participant_id"] + (f"_ses-{rec['session']}" if rec.get("session") else "")
        pages[runs[0]["qc_report"]] = (
            key,
            [
                {"name": r.get("name", ""), "qc": r.get("qc") or {}, "figure": r.get("qc_figure")}
                for r in runs
            ],
        )
    written = []
    for rel, (key, runs) in sorted(pages.items()):
        path = out / rel
        write_text(path, render_reportlet(key, runs))
        written.append(path)
    return written


__all__ = ["render_reportlet", "write_reportlets"]
