"""The ``dwi`` modality: QSIPrep DWI -> diffusion tensor FA / MD / AD / RD per region and tract.

Per run: the gradient table is checked against the image (counts, a b0, unit
directions, enough directions), the brain mask against its grid, the atlas (``--atlas``)
and the tract atlas (``juelich-wm`` by default) are resampled to the DWI grid, then one
lean job (:class:`~brainmatch.features.dtifit.TensorJob`) streams the DWI, fits the
tensors as DIPY's ``TensorModel`` (WLS by default) in the voxels the summaries need and
returns per-region sums.  Outputs, QSIRecon-style, per atlas and scalar:
``<stem>_seg-<atlas>_stat-mean_desc-<fa|md|ad|rd>_dwimap.tsv`` (+ JSON sidecar);
features ``dti__<scalar>__<region>`` and ``dti__<scalar>__wm_<tract>``, averaged over
runs.  Non-positive-definite tensors are counted (record and sidecar), not an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainmatch.atlases import Atlas, resample_atlas
from brainmatch.errors import BrainmatchInputError
from brainmatch.features.bids import DwiRun, Unit
from brainmatch.features.config import (
    MIN_REGION_COVERAGE,
    ExtractConfig,
    bids_label,
    feature_name,
)
from brainmatch.features.dtifit import SCALARS, TensorJob, check_gradients, design_matrix
from brainmatch.features.outputs import write_region_table, write_sidecar
from brainmatch.features.schedule import Steps

_DESCRIPTIONS = {
    "fa": "fractional anisotropy",
    "md": "mean diffusivity (mm^2/s)",
    "ad": "axial diffusivity, largest eigenvalue (mm^2/s)",
    "rd": "radial diffusivity, mean of the two smaller eigenvalues (mm^2/s)",
}


def inputs(unit: Unit) -> list[Path]:
    """Every existing input of the unit's DWI runs (DWI, bval, bvec, mask, sidecar)."""
    files: list[Path] = []
    for run in unit.dwi:
        if run.scalar_maps:  # summarised from QSIRecon's maps: those are the inputs
            group: tuple[Path | None, ...] = (*(p for _, p in run.scalar_maps), run.mask)
        else:
            group = (run.dwi, run.bval, run.bvec, run.mask, run.sidecar)
        for f in group:
            if f is not None and f.exists():
                files.append(f)
    return files


def streamed(unit: Unit) -> set[str]:
    """Inputs hashed by the workers while they read them (the DWIs that are fitted)."""
    return {str(r.dwi) for r in unit.dwi if not r.scalar_maps}


def _read_table(path: Path) -> np.ndarray:
    try:
        return np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as exc:
        raise BrainmatchInputError(f"cannot read the gradient table: {exc}", path) from None


def _header(run: DwiRun) -> tuple[tuple[int, int, int], np.ndarray, int]:
    from brainmatch.features.niftistream import NiftiStream

    with NiftiStream(run.dwi) as s:
        if s.n_volumes < 7:
            raise BrainmatchInputError(
                f"expected a 4D DWI series with at least 7 volumes, got shape {s.shape} x "
                f"{s.n_volumes}",
                run.dwi,
            )
        return s.shape, s.affine, s.n_volumes


def _mask(run: DwiRun, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray | None:
    if run.mask is None:
        return None
    try:
        img = nib.load(run.mask)
        mask = np.asarray(img.dataobj)  # type: ignore[attr-defined]
    except Exception as exc:
        raise BrainmatchInputError(f"cannot read the brain mask: {exc}", run.mask) from None
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if mask.shape != shape or not np.allclose(img.affine, affine, atol=1e-3):  # type: ignore[attr-defined]
        raise BrainmatchInputError(
            f"brain mask grid {mask.shape} does not match the DWI's {shape} ({run.dwi.name})",
            run.mask,
        )
    return mask > 0


def _labels_on_grid(
    atlas: Atlas,
    digest: str,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    config: ExtractConfig,
    path: Path,
) -> tuple[np.ndarray, list[int], list[str]]:
    try:
        labels3d = resample_atlas(atlas, shape, affine, digest, cache=config.cache_dir)
    except Exception as exc:  # nilearn's BoundingBoxError and friends
        raise BrainmatchInputError(
            f"the DWI grid does not match the {atlas.name} atlas space ({type(exc).__name__})",
            path,
        ) from None
    values = [int(v) for v in atlas.labels["index"]]
    names = [str(n) for n in atlas.labels["name"]]
    return labels3d, values, names


def run_steps(run: DwiRun, config: ExtractConfig) -> Steps:
    """One DWI run: checks, the tensor job, region means, TSVs.

    Returns ``{"features", "outputs", "fingerprint", "n_fitted", "n_non_pd", ...}``.
    """
    if run.scalar_maps:
        return (yield from _from_maps(run, config))
    shape, affine, n_volumes = _header(run)
    bvals, bvecs = check_gradients(
        _read_table(run.bval),
        _read_table(run.bvec),
        n_volumes,
        config.dwi.b0_threshold,
        path=run.bval,
    )
    design = design_matrix(bvals, bvecs)
    mask = _mask(run, shape, affine)
    atlases = _atlases(config)
    grids = [_labels_on_grid(a, d, shape, affine, config, run.dwi) for _, _, a, d in atlases]
    inside = np.zeros(shape, dtype=bool)
    for labels3d, _, _ in grids:
        inside |= labels3d > 0
    if mask is not None:
        inside &= mask
    voxels = np.flatnonzero(inside.ravel(order="F")).astype(np.int64)
    columns, n_regions = _columns(grids, voxels)
    _check_coverage(columns, n_regions, shape, affine, config, run)
    summary = yield TensorJob(
        run.dwi,
        design,
        voxels,
        tuple(columns),
        tuple(n_regions),
        config.dwi.fit_method,
        fingerprint=True,
    )
    feats, outputs = _write_summaries(
        run,
        config,
        atlases,
        grids,
        summary.sums,
        summary.counts,
        {
            "Model": "diffusion tensor (DIPY TensorModel semantics)",
            "FitMethod": config.dwi.fit_method,
            "NonPositiveDefiniteVoxels": summary.n_non_pd,
            "FittedVoxels": summary.n_fitted,
            "Sources": [str(run.dwi), str(run.bval), str(run.bvec)],
        },
    )
    return {
        "features": feats,
        "outputs": [str(p.relative_to(config.output_dir)) for p in outputs],
        "fingerprint": summary.extra.get("fingerprint"),
        "n_fitted": summary.n_fitted,
        "n_non_pd": summary.n_non_pd,
        "b_values": sorted({round(float(b)) for b in bvals}),
    }


def _check_coverage(
    columns: list[np.ndarray],
    n_regions: list[int],
    shape: tuple[int, int, int],
    affine: np.ndarray,
    config: ExtractConfig,
    run: DwiRun,
) -> None:
    covered = int((np.bincount(columns[0][columns[0] >= 0], minlength=n_regions[0]) > 0).sum())
    need = max(1, int(np.ceil(MIN_REGION_COVERAGE * n_regions[0])))
    if covered < need:
        raise BrainmatchInputError(
            f"the DWI grid (shape {shape}, voxel size "
            f"{np.round(nib.affines.voxel_sizes(affine), 2).tolist()} mm) covers only {covered} "
            f"of {n_regions[0]} {config.atlas.name} regions inside the brain mask (is the DWI "
            "in the atlas space? pass --dwi-space or an atlas on the DWI grid)",
            run.dwi,
        )


def _atlases(config: ExtractConfig) -> list[tuple[str, str, Atlas, str]]:
    out: list[tuple[str, str, Atlas, str]] = [("", config.seg, config.atlas, config.atlas_digest)]
    if config.tracts is not None and config.tracts_digest is not None:
        out.append(("wm_", bids_label(config.tracts.name), config.tracts, config.tracts_digest))
    return out


def _columns(
    grids: list[tuple[np.ndarray, list[int], list[str]]], voxels: np.ndarray
) -> tuple[list[np.ndarray], list[int]]:
    columns, n_regions = [], []
    for labels3d, values, _ in grids:
        flat = labels3d.ravel(order="F")[voxels]
        col = np.full(len(voxels), -1, dtype=np.int32)
        for k, v in enumerate(values):
            col[flat == v] = k
        columns.append(col)
        n_regions.append(len(values))
    return columns, n_regions


def _from_maps(run: DwiRun, config: ExtractConfig) -> Steps:
    """A run summarised from QSIRecon's tensor maps (no fit, no lean job)."""
    maps = dict(run.scalar_maps)
    first: Any = nib.load(maps["fa"])
    shape = tuple(int(s) for s in first.shape[:3])
    affine = first.affine
    mask = _mask(run, shape, affine)  # type: ignore[arg-type]
    atlases = _atlases(config)
    grids = [_labels_on_grid(a, d, shape, affine, config, maps["fa"]) for _, _, a, d in atlases]  # type: ignore[arg-type]
    inside = np.zeros(shape, dtype=bool)
    for labels3d, _, _ in grids:
        inside |= labels3d > 0
    if mask is not None:
        inside &= mask
    voxels = np.flatnonzero(inside.ravel(order="F")).astype(np.int64)
    columns, n_regions = _columns(grids, voxels)
    _check_coverage(columns, n_regions, shape, affine, config, run)  # type: ignore[arg-type]
    sums: list[dict[str, np.ndarray]] = [{s: np.zeros(n) for s in SCALARS} for n in n_regions]
    counts = [np.bincount(c[c >= 0], minlength=n) for c, n in zip(columns, n_regions, strict=True)]
    for s in SCALARS:
        img = nib.load(maps[s])
        if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-3):  # type: ignore[attr-defined]
            raise BrainmatchInputError(
                f"QSIRecon {s.upper()} map grid differs from the FA map's", maps[s]
            )
        data = np.asarray(img.dataobj, dtype=np.float64).ravel(order="F")[voxels]  # type: ignore[attr-defined]
        if not np.all(np.isfinite(data)):
            raise BrainmatchInputError(
                f"non-finite values in the QSIRecon {s.upper()} map", maps[s]
            )
        for a, c in enumerate(columns):
            keep = c >= 0
            sums[a][s] = np.bincount(c[keep], weights=data[keep], minlength=n_regions[a])
    feats, outputs = _write_summaries(
        run,
        config,
        atlases,
        grids,
        sums,
        counts,
        {"Model": "diffusion tensor (QSIRecon maps)", "Sources": [str(p) for p in maps.values()]},
    )
    result = {
        "features": feats,
        "outputs": [str(p.relative_to(config.output_dir)) for p in outputs],
        "fingerprint": None,
        "n_fitted": 0,
        "n_non_pd": None,
        "b_values": [],
        "source": "qsirecon",
    }
    return result
    yield  # a generator without lean steps


def _write_summaries(
    run: DwiRun,
    config: ExtractConfig,
    atlases: list[tuple[str, str, Atlas, str]],
    grids: list[tuple[np.ndarray, list[int], list[str]]],
    all_sums: list[dict[str, np.ndarray]],
    all_counts: list[np.ndarray],
    meta: dict[str, Any],
) -> tuple[dict[str, float], list[Path]]:
    """Region means: QSIRecon-style TSVs with sidecars, and the features."""
    folder = config.output_dir / run_folder(run)
    outputs: list[Path] = []
    feats: dict[str, float] = {}
    for (prefix, seg, atlas, _), (_, values, names), sums, counts in zip(
        atlases, grids, all_sums, all_counts, strict=True
    ):
        with np.errstate(invalid="ignore", divide="ignore"):
            means = {
                s: np.where(counts > 0, sums[s] / np.maximum(counts, 1), np.nan) for s in SCALARS
            }
        for s in SCALARS:
            path = folder / f"{run.stem}_seg-{seg}_stat-mean_desc-{s}_dwimap.tsv"
            write_region_table(
                path,
                {
                    "index": values,
                    "name": names,
                    "n_voxels": [int(c) for c in counts],
                    s: [float(v) for v in means[s]],
                },
            )
            write_sidecar(
                path,
                {
                    "Description": f"Mean {_DESCRIPTIONS[s]} of the diffusion tensor per "
                    f"{atlas.name} region (voxels inside the brain mask)",
                    "Atlas": atlas.name,
                    "Units": "mm^2/s" if s != "fa" else "unitless",
                    **meta,
                },
            )
            outputs.append(path)
            for name, v in zip(names, means[s].tolist(), strict=True):
                feats[f"dti__{s}__{prefix}{feature_name(name)}"] = float(v)
    return feats, outputs


def run_folder(run: DwiRun) -> Path:
    """Relative output folder ``sub-<id>/[ses-<id>/]dwi`` of a run."""
    p = Path(f"sub-{run.entities['sub']}")
    if run.entities.get("ses"):
        p = p / f"ses-{run.entities['ses']}"
    return p / "dwi"


def steps(unit: Unit, config: ExtractConfig) -> Steps:
    """Every DWI run of the unit; features averaged over runs.

    Returns ``{"features", "outputs", "hashes", "dwi_runs"}``.
    """
    if not unit.dwi:
        raise BrainmatchInputError(f"no preprocessed DWI for {unit.key}", unit.key)
    results = []
    hashes: dict[str, Any] = {}
    for run in unit.dwi:
        res = yield from run_steps(run, config)
        results.append(res)
        if res["fingerprint"] is not None:
            hashes[str(run.dwi)] = res["fingerprint"]
    values: dict[str, list[float]] = {}
    for res in results:
        for k, v in res["features"].items():
            values.setdefault(k, []).append(v)
    feats = {k: (v[0] if len(v) == 1 else float(np.nanmean(v))) for k, v in values.items()}
    return {
        "features": feats,
        "outputs": [o for res in results for o in res["outputs"]],
        "hashes": hashes,
        "dwi_runs": [
            {
                "dwi": str(run.dwi),
                "n_fitted_voxels": res["n_fitted"],
                "n_non_positive_definite": res["n_non_pd"],
                "b_values": res["b_values"],
                "source": res.get("source", "tensor fit"),
            }
            for run, res in zip(unit.dwi, results, strict=True)
        ],
    }


__all__ = ["inputs", "run_folder", "run_steps", "steps", "streamed"]
