"""``report.html`` of ``brainmatch change``, rendered from a ``ChangeResult``.

The data outputs (tables, ``results.json``, the glass-brain figure) are written by
:meth:`~brainmatch.change.analysis.ChangeResult.save` (:mod:`brainmatch.change.outputs`);
this module only renders the report, embedding the figure the save wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from brainmatch._io import write_text
from brainmatch.change.outputs import GLASS_FIGURE, glass_caption, result_notes, routes
from brainmatch.reports import figure_to_data_uri, render

if TYPE_CHECKING:
    from brainmatch.change.analysis import ChangeResult

CHANGE_COLS = [
    *["arm", "session", "feature", "region", "estimate", "ci_low", "ci_high"],
    *["p", "p_fdr", "p_fwe"],
]
CIRCUIT_COLS = [
    *["circuit", "measure", "effect", "arm", "session", "estimate", "ci_low", "ci_high"],
    *["stat", "p", "p_fdr", "p_fwe"],
]
ASSOC_COLS = ["arm", "feature", "region", "r", "ci_low", "ci_high", "p", "p_fdr", "n"]


def _null_figure(result: ChangeResult) -> str | None:
    if not result.null_maxima.size:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_report(result: ChangeResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` for ``result`` (after ``result.save(out_dir)``).

    Parameters
    ----------
    result : ChangeResult
    out_dir : str or Path
        The folder ``result.save`` wrote; its glass-brain figure is embedded.

    Returns
    -------
    Path
        The report.
    """
    out_dir = Path(out_dir)
    alpha = result.params["alpha"]
    inter = result.interaction()
    cols = ["feature", "measure", "region", "region_2", "stat", "p", "p_fdr", "p_fwe"]
    changes = result.table[(result.table["effect"] == "change") & (result.table["p_fdr"] < alpha)]
    changes = changes.sort_values("p")
    assoc = result.association
    if len(assoc):
        assoc = assoc[assoc["p_fdr"] < alpha].sort_values("p")
    circ = result.circuits
    figures = []
    caption = glass_caption(result)
    if caption is not None and (out_dir / GLASS_FIGURE).is_file():
        figures.append({"svg": (out_dir / GLASS_FIGURE).read_text(), "caption": caption})
    data = result.to_dict()
    text = render(
        "change.html",
        params=result.params,
        description=result.description,
        notes=result_notes(result),
        excluded=len(result.excluded),
        top=_fmt(inter, cols),
        n_fwe=int((inter["p_fwe"] < alpha).sum()),
        n_fdr=int((inter["p_fdr"] < alpha).sum()),
        changes=_fmt(changes, CHANGE_COLS, 40),
        circuits=_fmt(circ, CIRCUIT_COLS, 100) if len(circ) else [],
        association=_fmt(assoc, ASSOC_COLS, 40) if len(assoc) else [],
        has_association=bool(result.params.get("symptom_change")),
        routes=routes(result),
        figures=figures,
        null_figure=_null_figure(result),
        references=data["references"],
    )
    path = out_dir / "report.html"
    write_text(path, text)
    return path
