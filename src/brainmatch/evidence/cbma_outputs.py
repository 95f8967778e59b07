"""Data outputs of ``brainmatch cbma``: NIfTI maps, tables and ``results.json``.

Written by :meth:`CBMAResult.save <brainmatch.evidence.cbma.CBMAResult.save>` and
:meth:`CBMAComparison.save <brainmatch.evidence.cbma.CBMAComparison.save>`; the
figures and ``report.html`` are rendered from the results by :mod:`brainmatch.reports.cbma`
(this package never imports report code).

Every file is written atomically (:mod:`brainmatch._io`, :func:`brainmatch._nifti.save_image`):
a reader never sees half a file, and a failure leaves earlier outputs untouched.
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainmatch._io import json_safe, write_json, write_tsv
from brainmatch._nifti import save_image

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


def map_file(key: str) -> str:
    """File name of the map ``key`` of a result's ``maps``."""
    return MAP_FILES.get(key, f"desc-{re.sub(r'[^A-Za-z0-9]', '', key)}_map.nii.gz")


def _write_result_files(result: CBMAResult, out_dir: Path, prefix: str = "") -> list[str]:
    files = []
    for key, img in result.maps.items():
        fname = prefix + map_file(key)
        data = np.asarray(img.dataobj, dtype=np.float32)
        save_image(nib.Nifti1Image(data, img.affine), out_dir / fname)
        files.append(fname)
    write_tsv(out_dir / f"{prefix}clusters.tsv", result.clusters, float_format="%.6g")
    files.append(f"{prefix}clusters.tsv")
    if result.contributions is not None and not result.contributions.empty:
        write_tsv(out_dir / f"{prefix}contributions.tsv", result.contributions, float_format="%.6g")
        files.append(f"{prefix}contributions.tsv")
    return files


def save_result(result: CBMAResult, out_dir: Path) -> Path:
    """Write one analysis: maps, ``clusters.tsv``, ``contributions.tsv``,
    ``experiments.tsv`` and ``results.json``.  Returns ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _write_result_files(result, out_dir)
    write_tsv(out_dir / "experiments.tsv", result.experiments, float_format="%.6g")
    summary = result.summary()
    summary["files"] = {
        "maps": [f for f in files if f.endswith(".nii.gz")],
        "clusters": "clusters.tsv",
        "experiments": "experiments.tsv",
    }
    write_json(out_dir / "results.json", json_safe(summary))
    return out_dir


def comparison_experiments(results: dict[str, CBMAResult]) -> pd.DataFrame:
    """The experiments of a comparison (those of its subtraction: both sets, labelled)."""
    return next(
        (r.experiments for r in results.values() if r.kind == "subtraction"),
        pd.concat([r.experiments for r in results.values()], ignore_index=True),
    )


def save_comparison(results: dict[str, CBMAResult], out_dir: Path) -> Path:
    """Write two main effects, their subtraction and conjunction into one folder.

    Files of each analysis carry a prefix (``A_``, ``B_``, ``contrast_``,
    ``conjunction_``); ``results.json`` holds every summary and the file names.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, Any] = {}
    for prefix, result in results.items():
        files = _write_result_files(result, out_dir, prefix=f"{prefix}_")
        summaries[prefix] = {**result.summary(), "files": files}
    write_tsv(out_dir / "experiments.tsv", comparison_experiments(results), float_format="%.6g")
    write_json(out_dir / "results.json", json_safe(summaries))
    return out_dir


def result_html(result: CBMAResult) -> str:
    """A compact HTML summary of one result (for notebooks: ``_repr_html_``)."""
    warn = "".join(
        f'<p style="color:#a00"><b>Warning:</b> {html.escape(w)}</p>' for w in result.warnings
    )
    clusters = result.clusters
    if clusters.empty:
        table = "<p>No significant cluster.</p>"
    else:
        cols = [c for c in ("cluster_id", "x", "y", "z", "volume_mm3", "peak_z", "p_fwe", "label")]
        shown = clusters[[c for c in cols if c in clusters]].copy()
        if "p_fwe" in shown:
            shown["p_fwe"] = [
                "" if (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"
                for v in shown["p_fwe"]
            ]
        table = shown.to_html(index=False, escape=True, border=0, float_format="{:.4g}".format)
    return (
        f"<div><h4>cbma {html.escape(result.kind)}: {html.escape(result.name)}</h4>{warn}"
        f'<div style="overflow-x:auto">{table}</div></div>'
    )


def load_summary(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` written by :func:`save_result` (plain JSON, no code)."""
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


__all__ = [
    "MAP_FILES",
    "comparison_experiments",
    "load_summary",
    "map_file",
    "result_html",
    "save_comparison",
    "save_result",
]
