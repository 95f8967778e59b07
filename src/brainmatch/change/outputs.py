"""Data outputs of ``brainmatch change``: tables, ``results.json`` and the glass brains.

Written by :meth:`~brainmatch.change.analysis.ChangeResult.save`; ``report.html`` is
rendered from the result by :func:`brainmatch.reports.change.write_report`.  Every file
is written atomically.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from brainmatch._io import write_bytes, write_json, write_text, write_tsv
from brainmatch.errors import BrainmatchInputError

if TYPE_CHECKING:
    from brainmatch.change.analysis import ChangeResult

GENERATOR = "brainmatch change"
#: the glass-brain figure (SVG; a PNG twin beside it)
GLASS_FIGURE = "desc-change_glassbrain.svg"


def check_output_dir(out_dir: Path) -> None:
    """Refuse a file, or a non-empty folder that an earlier ``brainmatch change`` did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise BrainmatchInputError("--out: exists and is not a folder", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            gen = json.loads((out_dir / "results.json").read_text()).get("generated_by")
        except (OSError, ValueError, AttributeError):
            gen = None
        if gen != GENERATOR:
            raise BrainmatchInputError(
                "--out: folder is not empty and holds no earlier brainmatch change output; "
                "choose a new or empty folder",
                out_dir,
            )


def map_measure(result: ChangeResult) -> str | None:
    """The region-level measure the figures show (amplitude first)."""
    present = set(result.table["measure"])
    for m in ("amp", "falff", "vol"):
        if m in present:
            return m
    return None


def routes(result: ChangeResult) -> dict[str, Any]:
    """Regions each arm of the primary contrast changed (FDR), their overlap and affect share."""
    contrast = result.params.get("contrast")
    measure = map_measure(result)
    if not contrast or measure is None:
        return {}
    alpha = result.params["alpha"]
    t = result.table
    last = result.params["sessions"][-1]
    affect = set(result.circuit_members.get("affect network", []))
    out: dict[str, Any] = {"measure": measure, "session": last}
    changed = {}
    for arm in contrast:
        sel = t[
            (t["effect"] == "change")
            & (t["arm"] == arm)
            & (t["measure"] == measure)
            & (t["session"] == last)
            & (t["p_fdr"] < alpha)
        ]
        regions = sel["region"].tolist()
        changed[arm] = regions
        out[arm] = {
            "regions": regions,
            "direction": {
                r: ("up" if e > 0 else "down")
                for r, e in zip(sel["region"], sel["estimate"], strict=True)
            },
            "in_affect_network": [r for r in regions if r in affect],
        }
    out["overlap"] = sorted(set(changed[contrast[0]]) & set(changed[contrast[1]]))
    return out


def glass_titles(result: ChangeResult, measure: str) -> list[str]:
    """Titles of the glass-brain panels: each arm's change, the contrast, the overlap."""
    a, b = result.params["contrast"]
    alpha = result.params["alpha"]
    return [
        f"{a}: {measure} change (z, FDR q < {alpha})",
        f"{b}: {measure} change (z, FDR q < {alpha})",
        f"{a} - {b}: interaction (z, FDR q < {alpha})",
        f"overlap: 1 = {a} only, 2 = {b} only, 3 = both; outline: affect network",
    ]


def glass_caption(result: ChangeResult) -> str | None:
    """Caption of the glass-brain figure, or None when :func:`save_result` draws none."""
    measure = map_measure(result)
    if result.atlas is None or not result.params.get("contrast") or not measure:
        return None
    return "; ".join(glass_titles(result, measure))


def result_notes(result: ChangeResult) -> list[str]:
    """The result's notes plus those about the outputs (shown in results.json and the report)."""
    notes = list(result.to_dict()["notes"])
    if result.atlas is None:
        notes.append(
            "no atlas image known for these features (pass --atlas): no glass-brain figure"
        )
    return notes


def _glass(result: ChangeResult, measure: str) -> tuple[str, bytes]:
    """Glass brains: each arm's change (z, FDR-thresholded), their contrast and the overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    from brainmatch.atlases import affect_atlas
    from brainmatch.change.regions import region_map

    atlas = result.atlas
    a, b = result.params["contrast"]
    alpha = result.params["alpha"]
    last = result.params["sessions"][-1]
    t = result.table[(result.table["measure"] == measure) & (result.table["session"] == last)]
    titles = glass_titles(result, measure)
    panels: list[tuple[str, Any, str]] = []
    sig_sets = {}
    for i, arm in enumerate((a, b)):
        s = t[(t["effect"] == "change") & (t["arm"] == arm)]
        sig = s[s["p_fdr"] < alpha]
        sig_sets[arm] = set(sig["region"])
        values = dict(zip(sig["region"], sig["stat"], strict=True))
        panels.append((titles[i], region_map(atlas, values), "cold_hot"))
    c = t[(t["effect"] == "contrast") & (t["arm"] == f"{a} - {b}")]
    sig_c = c[c["p_fdr"] < alpha]
    panels.append(
        (
            titles[2],
            region_map(atlas, dict(zip(sig_c["region"], sig_c["stat"], strict=True))),
            "cold_hot",
        )
    )
    overlap: dict[str, float] = {}
    for r in sig_sets[a] | sig_sets[b]:
        overlap[r] = (1.0 if r in sig_sets[a] else 0.0) + (2.0 if r in sig_sets[b] else 0.0)
    panels.append(
        (
            titles[3],
            region_map(atlas, overlap),
            "viridis",
        )
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.9 * len(panels)))
    affect_mask = affect_atlas().image
    for ax, (title, img, cmap) in zip(axes, panels, strict=True):
        data = np.asarray(img.dataobj)
        empty = not np.any(data != 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs: dict[str, Any] = {
                "display_mode": "lyrz",
                "axes": ax,
                "title": title + (" (none)" if empty else ""),
            }
            if cmap == "viridis":
                disp = plotting.plot_glass_brain(
                    None if empty else img,
                    cmap="viridis",
                    vmin=0,
                    vmax=3,
                    colorbar=not empty,
                    threshold=0.5,
                    plot_abs=False,
                    **kwargs,
                )
                bin_mask = (np.asarray(affect_mask.dataobj) > 0).astype(np.int8)
                from nibabel import Nifti1Image

                disp.add_contours(
                    Nifti1Image(bin_mask, affect_mask.affine),
                    levels=[0.5],
                    colors="k",
                    linewidths=0.6,
                )
            else:
                vmax = float(np.nanmax(np.abs(data))) if not empty else 1.0
                plotting.plot_glass_brain(
                    None if empty else img,
                    cmap="cold_hot",
                    plot_abs=False,
                    colorbar=not empty,
                    threshold=1e-6,
                    vmax=vmax,
                    vmin=-vmax,
                    **kwargs,
                )
    svg_buf, png_buf = io.StringIO(), io.BytesIO()
    fig.savefig(svg_buf, format="svg", bbox_inches="tight")
    fig.savefig(png_buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    svg = svg_buf.getvalue()
    return svg[svg.find("<svg") :], png_buf.getvalue()


def save_result(result: ChangeResult, out_dir: Path) -> Path:
    """Write the data outputs of ``result`` into ``out_dir``: ``change.tsv``,
    ``circuits.tsv``, ``association.tsv``, ``model.tsv``, ``null_distribution.tsv``,
    ``results.json`` and the glass-brain figure (SVG + PNG)."""
    check_output_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tsv(out_dir / "change.tsv", result.table, float_format="%.6g")
    if len(result.circuits):
        write_tsv(out_dir / "circuits.tsv", result.circuits, float_format="%.6g")
    if len(result.association):
        write_tsv(out_dir / "association.tsv", result.association, float_format="%.6g")
    write_tsv(out_dir / "model.tsv", result.model, float_format="%.6g")
    if result.null_maxima.size:
        write_tsv(
            out_dir / "null_distribution.tsv",
            pd.DataFrame({"max_chi2": result.null_maxima}),
            float_format="%.6g",
        )
    summary = {"generated_by": GENERATOR, **result.to_dict(), "routes": routes(result)}
    summary["notes"] = result_notes(result)
    measure = map_measure(result)
    if glass_caption(result) is not None and measure is not None:
        svg, png = _glass(result, measure)
        write_text(out_dir / GLASS_FIGURE, svg)
        write_bytes(out_dir / GLASS_FIGURE.replace(".svg", ".png"), png)
    from brainmatch import __version__

    summary["brainmatch_version"] = __version__
    write_json(out_dir / "results.json", summary)
    return out_dir
