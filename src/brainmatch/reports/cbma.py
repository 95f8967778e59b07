"""Outputs of ``brainmatch cbma``: NIfTI maps, tables, ``results.json`` and the HTML report.

The report uses the report base (:mod:`brainmatch.reports`): the one template
environment (``reports/templates/cbma.html`` extends ``base.html`` and its stylesheet),
the shared p-value formatter and the one JSON cleaner, :func:`brainmatch._io.json_safe`.

Every file is written atomically (:mod:`brainmatch._io`, :func:`brainmatch._nifti.save_image`):
a reader never sees half a file, and a failure leaves earlier outputs untouched.
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainmatch._io import json_safe, write_bytes, write_json, write_text, write_tsv
from brainmatch._nifti import save_image
from brainmatch.reports import fmt_p, render

if TYPE_CHECKING:
    from brainmatch.evidence.cbma import CBMAResult

#: Map key -> file name (BIDS-derivative-like descriptions).
MAP_FILES = {
    "stat": "desc-stat_map.nii.gz",
    "z": "desc-z_map.nii.gz",
    "logp_voxel_fwe": "desc-logpVoxelFWE_map.nii.gz",
    "logp_cluster_fwe": "desc-logpClusterFWE_map.nii.gz",
    "z_fwe_cluster": "desc-zClusterFWE_map.nii.gz",
}


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


def _write_result_files(result: CBMAResult, out_dir: Path, prefix: str = "") -> list[str]:
    files = []
    for key, img in result.maps.items():
        fname = prefix + MAP_FILES.get(key, f"desc-{re.sub(r'[^A-Za-z0-9]', '', key)}_map.nii.gz")
        data = np.asarray(img.dataobj, dtype=np.float32)
        save_image(nib.Nifti1Image(data, img.affine), out_dir / fname)
        files.append(fname)
    write_tsv(out_dir / f"{prefix}clusters.tsv", result.clusters, float_format="%.6g")
    files.append(f"{prefix}clusters.tsv")
    if result.contributions is not None and not result.contributions.empty:
        write_tsv(out_dir / f"{prefix}contributions.tsv", result.contributions, float_format="%.6g")
        files.append(f"{prefix}contributions.tsv")
    return files


def save_result(result: CBMAResult, out_dir: Path, *, report: bool = True) -> Path:
    """Write one analysis: maps, ``clusters.tsv``, ``experiments.tsv``, ``results.json``,
    figures and ``report.html``.  Returns ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _write_result_files(result, out_dir)
    write_tsv(out_dir / "experiments.tsv", result.experiments, float_format="%.6g")
    summary = result.summary()
    summary["files"] = {
        "maps": [f for f in files if f.endswith(".nii.gz")],
        "clusters": "clusters.tsv",
        "experiments": "experiments.tsv",
        "report": "report.html" if report else None,
    }
    write_json(out_dir / "results.json", json_safe(summary))
    if report:
        sections = [_section(result, out_dir, "", files, heading=_heading(result))]
        write_text(
            out_dir / "report.html",
            _render(result.name, sections, result.experiments, result.references),
        )
    return out_dir


def save_comparison(results: dict[str, CBMAResult], out_dir: Path) -> Path:
    """Write two main effects, their subtraction and conjunction into one folder.

    Files of each analysis carry a prefix (``A_``, ``B_``, ``contrast_``,
    ``conjunction_``); ``results.json`` holds every summary and ``report.html`` every
    section.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    summaries: dict[str, Any] = {}
    refs: list[str] = []
    for prefix, result in results.items():
        files = _write_result_files(result, out_dir, prefix=f"{prefix}_")
        summaries[prefix] = {**result.summary(), "files": files}
        sections.append(_section(result, out_dir, f"{prefix}_", files, heading=_heading(result)))
        refs += [r for r in result.references if r not in refs]
    experiments = next(
        (r.experiments for r in results.values() if r.kind == "subtraction"),
        pd.concat([r.experiments for r in results.values()], ignore_index=True),
    )
    write_tsv(out_dir / "experiments.tsv", experiments, float_format="%.6g")
    write_json(out_dir / "results.json", json_safe(summaries))
    title = " vs ".join(r.name for r in results.values() if r.kind == "main")
    write_text(out_dir / "report.html", _render(title, sections, experiments, refs))
    return out_dir


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


def result_html(result: CBMAResult) -> str:
    """A compact HTML summary of one result (for notebooks: ``_repr_html_``)."""
    import html

    warn = "".join(
        f'<p style="color:#a00"><b>Warning:</b> {html.escape(w)}</p>' for w in result.warnings
    )
    table = _clusters_html(result.clusters) or "<p>No significant cluster.</p>"
    return (
        f"<div><h4>cbma {html.escape(result.kind)}: {html.escape(result.name)}</h4>{warn}"
        f'<div style="overflow-x:auto">{table}</div></div>'
    )


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` written by :func:`save_result` (plain JSON, no code)."""
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


__all__ = ["MAP_FILES", "load_summary", "result_html", "save_comparison", "save_result"]
