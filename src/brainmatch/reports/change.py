"""Outputs of ``brainmatch change``: tables, ``results.json``, figures and ``report.html``.

Rendered from a :class:`~brainmatch.change.analysis.ChangeResult`; the analysis never
imports this module.  Every file is written atomically.
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
_OWN = {
    "results.json",
    "change.tsv",
    "circuits.tsv",
    "association.tsv",
    "model.tsv",
    "report.html",
    "null_distribution.tsv",
}


CHANGE_COLS = [
    *["arm", "session", "feature", "region", "estimate", "ci_low", "ci_high"],
    *["p", "p_fdr", "p_fwe"],
]
CIRCUIT_COLS = [
    *["circuit", "measure", "effect", "arm", "session", "estimate", "ci_low", "ci_high"],
    *["stat", "p", "p_fdr", "p_fwe"],
]
ASSOC_COLS = ["arm", "feature", "region", "r", "ci_low", "ci_high", "p", "p_fdr", "n"]


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


def _glass(result: ChangeResult, measure: str) -> tuple[str, bytes, str]:
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
    panels: list[tuple[str, Any, str]] = []
    caption_bits = []
    sig_sets = {}
    for arm in (a, b):
        s = t[(t["effect"] == "change") & (t["arm"] == arm)]
        sig = s[s["p_fdr"] < alpha]
        sig_sets[arm] = set(sig["region"])
        values = dict(zip(sig["region"], sig["stat"], strict=True))
        panels.append(
            (f"{arm}: {measure} change (z, FDR q < {alpha})", region_map(atlas, values), "cold_hot")
        )
    c = t[(t["effect"] == "contrast") & (t["arm"] == f"{a} - {b}")]
    sig_c = c[c["p_fdr"] < alpha]
    panels.append(
        (
            f"{a} - {b}: interaction (z, FDR q < {alpha})",
            region_map(atlas, dict(zip(sig_c["region"], sig_c["stat"], strict=True))),
            "cold_hot",
        )
    )
    overlap: dict[str, float] = {}
    for r in sig_sets[a] | sig_sets[b]:
        overlap[r] = (1.0 if r in sig_sets[a] else 0.0) + (2.0 if r in sig_sets[b] else 0.0)
    panels.append(
        (
            f"overlap: 1 = {a} only, 2 = {b} only, 3 = both; outline: affect network",
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
        caption_bits.append(title)
    svg_buf, png_buf = io.StringIO(), io.BytesIO()
    fig.savefig(svg_buf, format="svg", bbox_inches="tight")
    fig.savefig(png_buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    svg = svg_buf.getvalue()
    return svg[svg.find("<svg") :], png_buf.getvalue(), "; ".join(caption_bits)


def _null_figure(result: ChangeResult) -> str | None:
    if not result.null_maxima.size:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainmatch.reports import figure_to_data_uri

    inter = result.interaction()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(result.null_maxima, bins=40, color="#99a", edgecolor="white")
    thr = float(np.quantile(result.null_maxima, 1 - result.params["alpha"]))
    ax.axvline(thr, color="k", ls="--", label=f"FWE {result.params['alpha']} threshold {thr:.1f}")
    if len(inter):
        ax.axvline(float(inter["stat"].max()), color="#c33", label="largest observed")
    ax.set_xlabel("largest interaction chi-square over features (permuted arm labels)")
    ax.set_ylabel("permutations")
    ax.legend(fontsize=8)
    return figure_to_data_uri(fig)


def _fmt(df: pd.DataFrame, cols: list[str], n: int = 30) -> list[dict[str, str]]:
    out = []
    for rec in df.head(n)[cols].to_dict(orient="records"):
        row = {}
        for k, v in rec.items():
            if isinstance(v, float):
                row[k] = (
                    "" if not np.isfinite(v) else (f"{v:.3g}" if k.startswith("p") else f"{v:.3f}")
                )
            else:
                row[k] = str(v)
        out.append(row)
    return out


def save_result(result: ChangeResult, out_dir: Path, *, report: bool = True) -> Path:
    """Write every output of ``result`` into ``out_dir``."""
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
    figures = []
    measure = map_measure(result)
    if result.atlas is not None and result.params.get("contrast") and measure:
        svg, png, caption = _glass(result, measure)
        write_text(out_dir / "desc-change_glassbrain.svg", svg)
        write_bytes(out_dir / "desc-change_glassbrain.png", png)
        figures.append({"svg": svg, "caption": caption})
    elif result.atlas is None:
        summary["notes"] = [
            *summary["notes"],
            "no atlas image known for these features (pass --atlas): no glass-brain figure",
        ]
    from brainmatch import __version__

    summary["brainmatch_version"] = __version__
    write_json(out_dir / "results.json", summary)
    if report:
        from brainmatch.reports import render

        alpha = result.params["alpha"]
        inter = result.interaction()
        cols = ["feature", "measure", "region", "region_2", "stat", "p", "p_fdr", "p_fwe"]
        changes = result.table[
            (result.table["effect"] == "change") & (result.table["p_fdr"] < alpha)
        ]
        changes = changes.sort_values("p")
        assoc = result.association
        if len(assoc):
            assoc = assoc[assoc["p_fdr"] < alpha].sort_values("p")
        circ = result.circuits
        text = render(
            "change.html",
            params=result.params,
            description=result.description,
            notes=summary["notes"],
            excluded=len(result.excluded),
            top=_fmt(inter, cols),
            n_fwe=int((inter["p_fwe"] < alpha).sum()),
            n_fdr=int((inter["p_fdr"] < alpha).sum()),
            changes=_fmt(changes, CHANGE_COLS, 40),
            circuits=_fmt(circ, CIRCUIT_COLS, 100) if len(circ) else [],
            association=_fmt(assoc, ASSOC_COLS, 40) if len(assoc) else [],
            has_association=bool(result.params.get("symptom_change")),
            routes=summary["routes"],
            figures=figures,
            null_figure=_null_figure(result),
            references=summary["references"],
        )
        write_text(out_dir / "report.html", text)
    return out_dir
