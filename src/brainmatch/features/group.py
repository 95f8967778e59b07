"""Group outputs of ``brainmatch extract``: the features table rebuilt from the records.

``features.parquet`` / ``.tsv`` / ``.json`` are rebuilt from every matching record in
the output folder at the end of every run (whatever the modalities), so an interrupted
or partial run never leaves a table that disagrees with the per-unit outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch import __version__
from brainmatch._io import write_json, write_text
from brainmatch.errors import BrainmatchInputError
from brainmatch.features.bids import Unit
from brainmatch.features.config import ExtractConfig, feature_name
from brainmatch.features.denoise import connectivity
from brainmatch.features.outputs import write_matrix
from brainmatch.features.records import RECORDS, finite, read_record


def write_description(output_dir: Path, bids_dir: Path, derivatives: Path) -> None:
    path = output_dir / "dataset_description.json"
    write_json(
        path,
        {
            "Name": "brainmatch extract: region time series, connectivity and features",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {"Name": "brainmatch", "Version": __version__, "Description": "brainmatch extract"}
            ],
            "SourceDatasets": [
                {"URL": bids_dir.absolute().as_uri()},
                {"URL": derivatives.absolute().as_uri()},
            ],
        },
    )


def write_group(
    config: ExtractConfig, units: Sequence[Unit], failed: set[str], bids_dir: Path
) -> tuple[Path | None, Path | None, Path | None]:
    """Rebuild features.parquet/.tsv/.json from every matching record in the output folder."""
    want = config.options_hash()
    records = []
    current = {u.key for u in units}
    for path in sorted((config.output_dir / RECORDS).glob(f"sub-*_seg-{config.seg}.json")):
        rec = read_record(path)
        if rec is None or rec.get("options_sha256") != want:
            continue
        key = rec["participant_id"] + (f"_ses-{rec['session']}" if rec.get("session") else "")
        if key in failed or (key not in current and not path.exists()):
            continue
        records.append(rec)
    if not records:
        return None, None, None
    write_qc_table(config.output_dir, records)
    if "tangent" in config.connectivity:
        add_tangent(config, records)
    has_session = any(rec.get("session") for rec in records)
    records.sort(key=lambda r: (r["participant_id"], r.get("session") or ""))
    names = sorted({k for rec in records for k in rec["features"]})
    matrix = np.array(
        [[_num(rec["features"].get(k)) for k in names] for rec in records], dtype=np.float64
    ).reshape(len(records), len(names))
    ids = {"participant_id": [rec["participant_id"] for rec in records]}
    if has_session:
        ids["session"] = [rec.get("session") or "n/a" for rec in records]
    out = config.output_dir
    parquet, tsv, meta = out / "features.parquet", out / "features.tsv", out / "features.json"
    _write_parquet(ids, names, matrix, parquet)
    _write_wide_tsv(ids, names, matrix, tsv)
    from importlib.metadata import version

    write_json(
        meta,
        finite(
            {
                "Description": "One row per participant (and session); one column per feature.",
                "brainmatch_version": __version__,
                "nilearn_version": version("nilearn"),
                "atlas": {
                    "name": config.atlas.name,
                    "sha256": config.atlas_digest,
                    "n_regions": len(config.atlas.labels),
                },
                "strategy": config.clean.as_dict(),
                "connectivity": list(config.connectivity),
                "options": config.options_dict(),
                "options_sha256": want,
                "columns": _column_docs(names),
                "notes": (
                    [
                        "tconn__* (tangent) is fitted on every row of this table as a group "
                        "reference: for honest validation refit it inside each cross-validation "
                        "training fold."
                    ]
                    if "tangent" in config.connectivity
                    else []
                ),
                "inputs": {
                    rec["participant_id"]
                    + (f"_ses-{rec['session']}" if rec.get("session") else ""): rec["inputs"]
                    for rec in records
                },
            }
        ),
    )
    return parquet, tsv, meta


def _num(value: Any) -> float:
    return np.nan if value is None else float(value)


def _write_parquet(
    ids: dict[str, list[str]], names: list[str], matrix: np.ndarray, path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from brainmatch._io import atomic_open

    arrays = [pa.array(v, type=pa.string()) for v in ids.values()]
    arrays += [pa.array(matrix[:, j]) for j in range(matrix.shape[1])]
    table = pa.Table.from_arrays(arrays, names=[*ids, *names])
    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh)


def _write_wide_tsv(
    ids: dict[str, list[str]], names: list[str], matrix: np.ndarray, path: Path
) -> None:
    lines = ["\t".join([*ids, *names])]
    for i in range(matrix.shape[0]):
        cells = [v[i] for v in ids.values()]
        cells += ["n/a" if not math.isfinite(x) else f"{x:.10g}" for x in matrix[i].tolist()]
        lines.append("\t".join(cells))
    write_text(path, "\n".join(lines) + "\n")


def _column_docs(columns: Sequence[str]) -> dict[str, str]:
    docs = {
        "conn": "Fisher-z Pearson correlation (nilearn ConnectivityMeasure, Ledoit-Wolf) "
        "between two regions' cleaned series, averaged over runs",
        "pconn": "Fisher-z partial correlation between two regions",
        "tconn": "tangent-space connectivity (group reference: all rows)",
        "amp": "SD of the cleaned region signal, % of its mean intensity",
        "falff": "fractional amplitude of low-frequency fluctuations (0.01-0.08 Hz)",
        "vol": "FreeSurfer aseg volume / eTIV x 1000 (vol__eTIV_ml: eTIV in ml)",
        "task": "first-level GLM effect size (% signal change) of a contrast per region, "
        "task__<task>__<contrast>__<region>, mean over the task's runs",
        "dti": "diffusion tensor FA / MD / AD / RD (DIPY TensorModel semantics) averaged over "
        "a region (dti__<scalar>__<region>) or a Juelich white-matter tract (__wm_<tract>)",
        "ctx": "FreeSurfer aparc.stats in ENIGMA names: _thickavg (mm), _surfavg and _grayvol "
        "(/ eTIV x 1000), LThickness, RSurfArea ...",
    }
    out = {}
    for c in columns:
        prefix = c.split("__", 1)[0]
        if prefix in docs:
            out[prefix + "__*"] = docs[prefix]
    return out


def add_tangent(config: ExtractConfig, records: list[dict[str, Any]]) -> None:
    series, owners = [], []
    common: list[str] | None = None
    for rec in records:
        for run in rec["runs"]:
            common = (
                list(run["regions"])
                if common is None
                else [r for r in common if r in set(run["regions"])]
            )
    if not common or len(common) < 2:
        return
    for i, rec in enumerate(records):
        for run in rec["runs"]:
            ts = pd.read_csv(config.output_dir / run["timeseries"], sep="\t")
            series.append(ts[common].to_numpy(dtype=np.float64))
            owners.append((i, run["timeseries"]))
    if len(series) < 2:
        return
    mats = connectivity(series, "tangent")
    fnames = [feature_name(n) for n in common]
    iu = np.triu_indices(len(common), k=1)
    per: dict[int, list[np.ndarray]] = {}
    for (i, ts_name), mat in zip(owners, mats, strict=True):
        rel = config.output_dir / ts_name.replace(
            "_stat-mean_timeseries.tsv", "_stat-tangent_relmat.tsv"
        )
        write_matrix(rel, mat, common)
        per.setdefault(i, []).append(mat)
    for i, mats_i in per.items():
        mean = np.mean(mats_i, axis=0)
        for a, b in zip(*iu, strict=True):
            records[i]["features"][f"tconn__{fnames[a]}__{fnames[b]}"] = float(mean[a, b])


def read_features(output_dir: str | Path) -> pd.DataFrame:
    """Read ``features.parquet`` of an extract output folder."""
    path = Path(output_dir) / "features.parquet"
    if not path.exists():
        raise BrainmatchInputError("no features.parquet (run brainmatch extract first)", path)
    return pd.read_parquet(path)


def write_qc_table(output_dir: Path, records: list[dict[str, Any]]) -> Path:
    """``qc.tsv`` (+ ``qc.json``): one row per participant(-session), from the records."""
    from brainmatch._io import write_tsv
    from brainmatch.features.outputs import write_sidecar

    rows = []
    for rec in sorted(records, key=lambda r: (r["participant_id"], r.get("session") or "")):
        runs = [r.get("qc") or {} for r in rec.get("runs", [])]
        n_vol = sum(int(q.get("n_volumes") or 0) for q in runs)
        n_cens = sum(int(q.get("n_censored") or 0) for q in runs)

        def mean(key: str, qs: list[dict[str, Any]] = runs) -> float:
            vals = [float(q[key]) for q in qs if q.get(key) is not None]
            return float(np.mean(vals)) if vals else float("nan")

        dwi = rec.get("dwi_runs") or []
        rows.append(
            {
                "participant_id": rec["participant_id"],
                "session": rec.get("session") or "n/a",
                "n_rest_runs": len(runs),
                "n_task_runs": len(rec.get("task_runs") or []),
                "n_dwi_runs": len(dwi),
                "mean_fd": mean("mean_fd"),
                "pct_censored": 100.0 * n_cens / n_vol if n_vol else float("nan"),
                "coverage_mean": mean("coverage_mean"),
                "coverage_min": min(
                    (float(q["coverage_min"]) for q in runs if q.get("coverage_min") is not None),
                    default=float("nan"),
                ),
                "tsnr_median": mean("tsnr_median"),
                "dwi_non_positive_definite": sum(
                    int(d.get("n_non_positive_definite") or 0) for d in dwi
                )
                if dwi
                else float("nan"),
            }
        )
    path = output_dir / "qc.tsv"
    write_tsv(path, pd.DataFrame(rows), float_format="%.6g")
    write_sidecar(
        path,
        {
            "Description": "Quality control per participant (and session), from the records",
            "mean_fd": "mean framewise displacement (mm, fMRIPrep's column) over resting runs",
            "pct_censored": "% of resting-state volumes censored (scrubbing, non-steady state)",
            "coverage_mean": "mean over regions and runs of the share of a region's voxels "
            "with a changing signal",
            "coverage_min": "lowest region coverage in any run",
            "tsnr_median": "median over regions of the raw region mean's temporal SNR "
            "(mean / SD over kept volumes), averaged over runs",
            "dwi_non_positive_definite": "voxels whose tensor fit was not positive definite",
        },
    )
    return path


__all__ = [
    "add_tangent",
    "read_features",
    "write_description",
    "write_group",
    "write_qc_table",
]
