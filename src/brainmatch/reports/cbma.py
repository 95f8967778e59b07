"""Figures and ``report.html`` of ``brainmatch cbma``, rendered from its results.

The data outputs (NIfTI maps, tables, ``results.json``) are written by the results'
``save`` (:mod:`brainmatch.evidence.cbma_outputs`); call :func:`write_report` /
:func:`write_comparison_report` after it.  The report uses the report base
(:mod:`brainmatch.reports`): the one template environment (``reports/templates/cbma.html``
extends ``base.html`` and its stylesheet) and the shared p-value formatter.  Every file is
written atomically (:mod:`brainmatch._io`).
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainmatch._io import write_bytes, write_text
from brainmatch.evidence.cbma_outputs import comparison_experiments, map_file
from brainmatch.reports import fmt_p, render

if TYPE_CHECKING:
    from brainmatch.evidence.cbma import CBMAResult


def _glass_brain_svg(
    img: nib.Nifti1Image | None,
    title: str,
    threshold: float | None,
    foci: pd.DataFrame | None = None,
    cmap: str = "hot",
    plot_abs: bool = True,
) -> tuple[str, bytes]:
    """A glass-brain figure as (inline SVG text, PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    fig = plt.figure(figsize=(11, 3.2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn warns about empty maps: expected here
        display = plotting.plot_glass_brain(
            img,
            threshold=threshold,
            display_mode="lyrz",
            colorbar=img is not None,
            cmap=cmap,
            figure=fig,
            title=title,
            plot_abs=plot_abs,
        )
    if foci is not None and len(foci):
        display.add_markers(foci[["x", "y", "z"]].to_numpy(), marker_color="#1f5fbf", marker_size=8)
    svg_buf, png_buf = io.StringIO(), io.BytesIO()
    fig.savefig(svg_buf, format="svg", bbox_inches="tight")
    fig.savefig(png_buf, format="png", dpi=110, bbox_inches="tight")
    display.close()
    plt.close(fig)
    svg = svg_buf.getvalue()
    svg = svg[svg.find("<svg") :]  # drop the XML prolog for inline use
    return svg, png_buf.getvalue()


def _has_voxels(img: nib.Nifti1Image | None, threshold: float = 0.0, absolute: bool = True) -> bool:
    if img is None:
        return False
    data = np.asarray(img.dataobj)
    data = np.abs(data) if absolute else data
    return bool(np.any(data > threshold))


def _figures(result: CBMAResult, out_dir: Path, prefix: str) -> list[dict[str, str]]:
    """Glass-brain figures of one analysis; a map with nothing to show gets a sentence
    instead of an empty brain."""
    import gc

    # nilearn calls gc.collect() for every image it loads; with a large heap (NiMARE,
    # matplotlib) each call costs seconds.  Frozen objects are not rescanned.
    frozen = gc.get_freeze_count() > 0
    if not frozen:
        gc.freeze()
    try:
        return _draw_figures(result, out_dir, prefix)
    finally:
        if not frozen:
            gc.unfreeze()


def _draw_figures(result: CBMAResult, out_dir: Path, prefix: str) -> list[dict[str, str]]:
    figures: list[dict[str, str]] = []
    z = result.maps.get("z_fwe_cluster")
    two_sided = result.kind == "subtraction"
    if _has_voxels(z):
        assert z is not None
        svg, png = _glass_brain_svg(
            z,
            f"{result.name}: significant clusters (z)",
            1e-6,
            cmap="cold_hot" if two_sided else "hot",
            plot_abs=not two_sided,
        )
        caption = (
            "z inside clusters significant at cluster-level FWE"
            if result.kind != "conjunction"
            else "minimum z over voxels significant in both analyses"
        )
        figures.append(_write_figure(out_dir, f"{prefix}desc-glass_figure", svg, png, caption))
    elif result.kind == "conjunction":
        figures.append(
            {
                "svg": "",
                "caption": "No voxel lies in clusters significant in both analyses; "
                "nothing to draw.",
            }
        )
    else:
        from scipy import stats

        p_thr = result.params.get("voxel_thresh", 0.001)
        thr = float(stats.norm.isf(p_thr / 2 if two_sided else p_thr))
        if _has_voxels(result.maps.get("z"), thr):
            svg, png = _glass_brain_svg(
                result.maps["z"],
                f"{result.name}: uncorrected z",
                thr,
                cmap="cold_hot" if two_sided else "hot",
                plot_abs=not two_sided,
            )
            caption = (
                f"No significant cluster. Uncorrected |z| above {thr:.2f} "
                "(p < cluster-forming threshold) shown for orientation only."
            )
            figures.append(_write_figure(out_dir, f"{prefix}desc-glass_figure", svg, png, caption))
        else:
            figures.append(
                {
                    "svg": "",
                    "caption": "No significant cluster, and no voxel passes the "
                    f"cluster-forming threshold (p < {p_thr:g}); nothing to draw.",
                }
            )
    if result.kind == "main" and len(result.foci):
        svg, png = _glass_brain_svg(
            None, f"{result.name}: {len(result.foci)} foci", None, foci=result.foci
        )
        figures.append(
            _write_figure(
                out_dir,
                f"{prefix}desc-foci_figure",
                svg,
                png,
                "Foci of the included experiments (MNI).",
            )
        )
    return figures


def _write_figure(out_dir: Path, name: str, svg: str, png: bytes, caption: str) -> dict[str, str]:
    write_bytes(out_dir / f"{name}.png", png)
    write_text(out_dir / f"{name}.svg", svg)
    return {"svg": svg, "caption": caption}


def _clusters_html(clusters: pd.DataFrame) -> str:
    if clusters.empty:
        return ""
    shown = clusters.copy()
    for col, fmt in (
        ("x", "{:.0f}"),
        ("y", "{:.0f}"),
        ("z", "{:.0f}"),
        ("volume_mm3", "{:.0f}"),
        ("peak_stat", "{:.4g}"),
        ("peak_z", "{:.2f}"),
        ("p_fwe", "p"),
        ("affect_overlap", "{:.0%}"),
    ):
        if col in shown:
            shown[col] = [
                (
                    ""
                    if (isinstance(v, float) and math.isnan(v))
                    else (fmt_p(v) if fmt == "p" else fmt.format(v))
                )
                for v in shown[col]
            ]
    # atlas names use underscores: spaces let a narrow column wrap between words
    for col in ("label", "regions"):
        if col in shown:
            shown[col] = [str(v).replace("_", " ") for v in shown[col]]
    return shown.to_html(index=False, escape=True, border=0)


def _contributions_html(result: CBMAResult, top: int = 5) -> str:
    """Per cluster, the experiments that drive it most (leave-one-experiment-out)."""
    table = result.contributions
    if table is None or table.empty:
        return ""
    shown = (
        table[(table["contribution"] > 0) | (table["n_foci_in_cluster"] > 0)]
        .groupby("cluster_id", sort=True)
        .head(top)
        .copy()
    )
    shown["contribution"] = [f"{v:.0%}" for v in shown["contribution"]]
    return shown.to_html(index=False, escape=True, border=0)


def _heading(result: CBMAResult) -> str:
    kinds = {
        "main": "Main effect",
        "subtraction": "Contrast (subtraction)",
        "conjunction": "Conjunction",
    }
    return f"{kinds[result.kind]}: {result.name}"


def _section(
    result: CBMAResult, out_dir: Path, prefix: str, files: list[str], heading: str
) -> dict[str, Any]:
    return {
        "heading": heading,
        "result": result,
        "clusters_html": _clusters_html(result.clusters),
        "contributions_html": _contributions_html(result),
        "figures": _figures(result, out_dir, prefix),
        "files": files,
    }


def _render(
    title: str, sections: list[dict[str, Any]], experiments: pd.DataFrame, references: list[str]
) -> str:
    import nimare

    from brainmatch.evidence.cbma import REFERENCES

    return render(
        "cbma.html",
        title=title,
        sections=sections,
        experiments_html=experiments.to_html(index=False, escape=True, border=0),
        references=[REFERENCES[k] for k in references],
        nimare_version=nimare.__version__,
    )


def write_report(result: CBMAResult, out_dir: str | Path) -> Path:
    """Write the glass-brain figures (SVG + PNG) and ``report.html`` of one analysis.

    Call it after ``result.save(out_dir)``; returns the report's path.
    """
    out_dir = Path(out_dir)
    sections = [_section(result, out_dir, "", _files(result, out_dir, ""), _heading(result))]
    path = out_dir / "report.html"
    write_text(path, _render(result.name, sections, result.experiments, result.references))
    return path


def write_comparison_report(results: dict[str, CBMAResult], out_dir: str | Path) -> Path:
    """Write the figures and one ``report.html`` of a two-set comparison (after its save).

    ``results`` is ``CBMAComparison.results`` (prefix -> analysis); returns the report's path.
    """
    out_dir = Path(out_dir)
    sections = []
    refs: list[str] = []
    for prefix, result in results.items():
        files = _files(result, out_dir, f"{prefix}_")
        sections.append(_section(result, out_dir, f"{prefix}_", files, heading=_heading(result)))
        refs += [r for r in result.references if r not in refs]
    title = " vs ".join(r.name for r in results.values() if r.kind == "main")
    path = out_dir / "report.html"
    write_text(path, _render(title, sections, comparison_experiments(results), refs))
    return path


def _files(result: CBMAResult, out_dir: Path, prefix: str) -> list[str]:
    """The data files ``save`` wrote for ``result`` (listed in the report)."""
    names = [prefix + map_file(k) for k in result.maps]
    names += [f"{prefix}clusters.tsv", f"{prefix}contributions.tsv"]
    return [n for n in names if (out_dir / n).is_file()]


__all__ = ["write_comparison_report", "write_report"]
