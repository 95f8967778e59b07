"""The ``func`` modality: resting-state BOLD runs -> region signals, connectivity, amplitude.

Per run: grid checks, one streaming job (the BOLD into region sums, in a lean worker),
then confounds, cleaning (nilearn's semantics), connectivity, amplitude and fALFF, and
XCP-D-named TSVs.  Task runs (a run with an ``events.tsv``) go to
:mod:`brainmatch.features.modalities.task` instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brainmatch.atlases import resample_atlas
from brainmatch.errors import BrainmatchInputError
from brainmatch.features.bids import Run, Unit
from brainmatch.features.cleaning import zscore_sample
from brainmatch.features.config import MIN_REGION_COVERAGE, ExtractConfig, feature_name
from brainmatch.features.denoise import (
    CONNECTIVITY_KINDS,
    CONNECTIVITY_PREFIX,
    amplitude_features,
    clean_signals,
    confounds_path,
    connectivity,
    fisher_z,
    load_confounds,
    read_tr,
)
from brainmatch.features.lean import StreamJob
from brainmatch.features.outputs import (
    write_matrix,
    write_region_table,
    write_series,
    write_sidecar,
)
from brainmatch.features.regions import RegionPlan
from brainmatch.features.schedule import Steps, drive_here


def inputs(unit: Unit) -> list[Path]:
    """Every existing input of the unit's BOLD runs (BOLD, sidecar, mask, confounds, events)."""
    files: list[Path] = []
    for run in unit.runs:
        conf = confounds_path(run.bold)
        for f in (run.bold, run.sidecar, run.mask, conf, conf.with_suffix(".json"), run.events):
            if f is not None and f.exists():
                files.append(f)
    return files


def streamed(unit: Unit) -> set[str]:
    """Inputs hashed by the workers while they stream them (the BOLDs)."""
    return {str(r.bold) for r in unit.runs}


def _check_grid(run: Run, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray | None:
    """Return the brain mask (bool) after checking it matches the BOLD grid."""
    if run.mask is None:
        return None
    try:
        img = nib.load(run.mask)
        mask = np.asarray(img.dataobj)  # type: ignore[attr-defined]
    except Exception as exc:
        raise BrainmatchInputError(f"cannot read the brain mask: {exc}", run.mask) from None
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if mask.shape != shape:
        raise BrainmatchInputError(
            f"brain mask shape {mask.shape} does not match the BOLD's {shape} ({run.bold.name})",
            run.mask,
        )
    if not np.allclose(img.affine, affine, atol=1e-3):  # type: ignore[attr-defined]
        raise BrainmatchInputError(
            f"brain mask affine does not match the BOLD's ({run.bold.name}): "
            f"voxel sizes {np.round(nib.affines.voxel_sizes(img.affine), 3).tolist()} vs "  # type: ignore[attr-defined]
            f"{np.round(nib.affines.voxel_sizes(affine), 3).tolist()}",
            run.mask,
        )
    return mask > 0


def _bold_header(run: Run) -> tuple[tuple[int, int, int], np.ndarray, int]:
    from brainmatch.features.niftistream import NiftiStream

    with NiftiStream(run.bold) as s:
        if s.n_volumes < 2:
            raise BrainmatchInputError(f"expected a 4D BOLD series, got shape {s.shape}", run.bold)
        return s.shape, s.affine, s.n_volumes


def extract_run(run: Run, config: ExtractConfig) -> dict[str, Any]:
    """Region signals, cleaning and connectivity of one run; writes its TSVs.

    Everything runs in this process (``extract_dataset`` streams the BOLD in a lean
    worker process instead; the results are identical).

    Returns a dict with ``series`` (cleaned, standardised as requested), ``names`` (the
    regions kept), ``features`` (name -> value) and ``outputs`` (relative paths).
    """
    return drive_here(run_steps(run, config))


def region_signal_steps(run: Run, config: ExtractConfig, fingerprint: bool = False) -> Steps:
    """Grid and atlas checks, then the streaming job: a BOLD run's raw region means.

    Shared by resting-state and task runs.  Returns ``{"signals", "names", "labels",
    "n_volumes", "tr", "fingerprint"}`` (``signals``: volumes x regions, as stored).
    """
    atlas = config.atlas
    shape, affine, n_volumes = _bold_header(run)
    mask = _check_grid(run, shape, affine)
    vox = np.round(nib.affines.voxel_sizes(affine), 2).tolist()
    grid = (
        f"BOLD grid (shape {shape}, voxel size {vox} mm, origin "
        f"{np.round(affine[:3, 3], 1).tolist()})"
    )
    try:
        labels3d = resample_atlas(atlas, shape, affine, config.atlas_digest, cache=config.cache_dir)
    except Exception as exc:  # nilearn's BoundingBoxError and friends
        raise BrainmatchInputError(
            f"{grid} does not match the atlas space: the {atlas.name} atlas falls outside it "
            f"({type(exc).__name__}); is the BOLD in MNI space?",
            run.bold,
        ) from None
    names_by_label = dict(zip(atlas.labels["index"].astype(int), atlas.labels["name"], strict=True))
    label_values = [int(v) for v in atlas.labels["index"]]
    plan = RegionPlan(labels3d, label_values, mask)
    if plan.n_regions < max(2, math.ceil(MIN_REGION_COVERAGE * len(label_values))):
        raise BrainmatchInputError(
            f"{grid} does not match the atlas space: only "
            f"{plan.n_regions} of {len(label_values)} {atlas.name} regions fall inside it "
            "(is the BOLD in MNI space?)",
            run.bold,
        )
    sig = yield StreamJob(run.bold, plan, config.volumes_per_block, fingerprint)
    tr = read_tr(run.sidecar, header_tr=sig.tr)
    # XCP-D's rule: a region's coverage is the share of its voxels with a valid (changing)
    # signal; below --min-coverage the region is dropped from this run (NaN features)
    coverage = np.ones(plan.n_regions)
    const = sig.extra.get("constant_index")
    if const is not None and len(const):
        column = {v: k for k, v in enumerate(plan.labels)}
        lab = labels3d.ravel(order="F")[np.asarray(const)]
        cols = np.array([column.get(int(v), -1) for v in lab], dtype=np.int64)
        bad = np.bincount(cols[cols >= 0], minlength=plan.n_regions)
        coverage = 1.0 - bad / np.maximum(plan.n_voxels, 1)
    keep = coverage >= config.min_coverage
    need = max(2, math.ceil(MIN_REGION_COVERAGE * len(label_values)))
    if int(keep.sum()) < need:
        raise BrainmatchInputError(
            f"{sig.constant_voxels} voxel(s) inside the brain mask never change over the run "
            f"(e.g. voxel {sig.first_constant}): dropped-out or zero-filled data; only "
            f"{int(keep.sum())} of {len(label_values)} regions keep --min-coverage "
            f"{config.min_coverage:g} of their voxels (at least {need} needed)",
            run.bold,
        )
    raw = sig.signals[:, keep]
    labels = [v for v, k in zip(plan.labels, keep, strict=True) if k]
    flat = np.flatnonzero(raw.std(axis=0) == 0)
    if flat.size:
        raise BrainmatchInputError(
            f"region {names_by_label[labels[int(flat[0])]]!r} has a constant signal", run.bold
        )
    return {
        "signals": raw,
        "names": [str(names_by_label[v]) for v in labels],
        "labels": labels,
        "n_volumes": n_volumes,
        "tr": tr,
        "fingerprint": sig.extra.get("fingerprint"),
        "coverage": {
            str(names_by_label[v]): float(c) for v, c in zip(plan.labels, coverage, strict=True)
        },
        "coverage_labels": list(plan.labels),
    }


def run_steps(run: Run, config: ExtractConfig, fingerprint: bool = False) -> Steps:
    """:func:`extract_run` as steps: grid checks, the streaming job, then the rest.

    The streaming job is handed out as early as possible (before the confounds are
    read) so that workers start while this process does the rest.  With
    ``fingerprint`` the result's ``"fingerprint"`` is the BOLD's, hashed as it streamed.
    """
    got = yield from region_signal_steps(run, config, fingerprint)
    raw, tr, n_volumes = got["signals"], got["tr"], got["n_volumes"]
    nyquist = 0.5 / tr
    for flag, value in (
        ("--low-pass", config.clean.low_pass),
        ("--high-pass", config.clean.high_pass),
    ):
        if value is not None and value >= nyquist:
            raise BrainmatchInputError(
                f"{flag} {value:g} Hz is at or above the Nyquist frequency {nyquist:g} Hz of "
                f"this run (RepetitionTime {tr:g} s); the filter would do nothing useful",
                run.sidecar,
            )
    confounds, sample_mask, _ = load_confounds(run.bold, config.clean, n_volumes)
    # standardising is nilearn's last cleaning step, so z-scoring the unstandardised
    # result equals signal.clean(standardize="zscore_sample") (tests check against nilearn)
    unstd = clean_signals(
        raw,
        confounds=confounds,
        sample_mask=sample_mask,
        tr=tr,
        options=config.clean,
        standardize=False,
        path=run.bold,
    )
    cleaned = zscore_sample(unstd) if config.clean.standardize == "zscore" else unstd
    kept = raw if sample_mask is None else raw[sample_mask]
    amp, falff = amplitude_features(unstd, kept.mean(axis=0), tr)
    names = got["names"]
    folder = config.output_dir / _unit_folder(run)
    stem = f"{run.stem}_seg-{config.seg}"
    outputs = []
    ts_path = folder / f"{stem}_stat-mean_timeseries.tsv"
    write_series(ts_path, cleaned, names)
    outputs.append(ts_path)
    outputs.append(
        write_sidecar(
            ts_path,
            {
                "Description": "Mean signal of each atlas region (columns), cleaned as nilearn's "
                "signal.clean (one row per kept volume)",
                "Atlas": config.atlas.name,
                "Strategy": config.clean.as_dict(),
                "RepetitionTime": tr,
                "VolumesKept": len(cleaned),
                "Sources": [str(run.bold)],
            },
        )
    )
    cov_path = folder / f"{stem}_stat-coverage_bold.tsv"
    write_region_table(
        cov_path,
        {
            "index": got["coverage_labels"],
            "name": list(got["coverage"]),
            "coverage": list(got["coverage"].values()),
        },
    )
    write_sidecar(
        cov_path,
        {
            "Description": "Share of each region's voxels with a valid (changing) signal; "
            "regions below MinCoverage are left out of this run (NaN features)",
            "MinCoverage": config.min_coverage,
            "Atlas": config.atlas.name,
        },
    )
    outputs.append(cov_path)
    feats: dict[str, float] = {}
    fnames = [feature_name(n) for n in names]
    iu = np.triu_indices(len(names), k=1)
    for kind in config.connectivity:
        if kind == "tangent":
            continue
        mat = connectivity([cleaned], kind)[0]
        rel = folder / f"{stem}_stat-{CONNECTIVITY_KINDS[kind]}_relmat.tsv"
        write_matrix(rel, mat, names)
        outputs.append(rel)
        outputs.append(
            write_sidecar(
                rel,
                {
                    "Description": f"Region x region {kind} (nilearn ConnectivityMeasure, "
                    "Ledoit-Wolf) of the cleaned series",
                    "Atlas": config.atlas.name,
                    "Sources": [str(ts_path)],
                },
            )
        )
        z = fisher_z(mat)
        prefix = CONNECTIVITY_PREFIX[kind]
        for i, j in zip(*iu, strict=True):
            feats[f"{prefix}__{fnames[i]}__{fnames[j]}"] = float(z[i, j])
    for k, f in enumerate(fnames):
        feats[f"amp__{f}"] = float(amp[k])
        feats[f"falff__{f}"] = float(falff[k])
    from brainmatch.features import qc

    fd = qc.read_fd(confounds_path(run.bold))
    measures = qc.run_measures(
        raw, sample_mask, n_volumes, fd, got["coverage"], config.clean.fd_threshold
    )
    svg = None
    if config.qc_reports:
        svg = qc.run_figure(
            run.stem, cleaned, fd, sample_mask, got["coverage"], n_volumes,
            config.clean.fd_threshold,
        )  # fmt: skip
    return {
        "qc": measures,
        "qc_svg": svg,
        "series": cleaned,
        "names": names,
        "features": feats,
        "outputs": [str(p.relative_to(config.output_dir)) for p in outputs],
        "n_volumes": n_volumes,
        "n_kept": len(cleaned),
        "tr": tr,
        "fingerprint": got["fingerprint"],
    }


def _unit_folder(run: Run) -> Path:
    sub = run.entities["sub"]
    p = Path(f"sub-{sub}")
    if run.entities.get("ses"):
        p = p / f"ses-{run.entities['ses']}"
    return p / "func"


def steps(unit: Unit, config: ExtractConfig) -> Steps:
    """The unit's BOLD runs: resting-state features averaged over runs, task GLMs per task.

    Returns ``{"features", "outputs", "runs", "task_runs", "hashes"}``.
    """
    from brainmatch.features.modalities import task as task_mod

    rest = [r for r in unit.runs if not r.is_task]
    tasks = [r for r in unit.runs if r.is_task]
    hashes: dict[str, Any] = {}
    results = []
    for run in rest:
        results.append((yield from run_steps(run, config, fingerprint=True)))
        hashes[str(run.bold)] = results[-1]["fingerprint"]
    features: dict[str, list[float]] = {}
    for res in results:
        for k, v in res["features"].items():
            features.setdefault(k, []).append(v)
    # average over runs (Fisher z for connectivity)
    values = {k: (v[0] if len(v) == 1 else float(np.mean(v))) for k, v in features.items()}
    outputs = [o for res in results for o in res["outputs"]]
    # the QC reportlet is rendered from the record by brainmatch.reports.qc (after the run)
    report = None
    if config.qc_reports and results:
        report = unit.datatype_folder("figures") / f"{unit.key}_desc-qc_bold.html"
    task_part = yield from task_mod.unit_task_steps(tasks, config)
    hashes.update(task_part["hashes"])
    values.update(task_part["features"])
    outputs += task_part["outputs"]
    return {
        "features": values,
        "outputs": outputs,
        "hashes": hashes,
        "runs": [
            {
                "bold": str(r.bold),
                "timeseries": res["outputs"][0],
                "n_volumes": res["n_volumes"],
                "n_kept": res["n_kept"],
                "tr": res["tr"],
                "regions": res["names"],
                "qc": res["qc"],
                **(
                    {"name": r.stem, "qc_figure": res["qc_svg"] or "", "qc_report": str(report)}
                    if report is not None
                    else {}
                ),
            }
            for r, res in zip(rest, results, strict=True)
        ],
        "task_runs": task_part["runs"],
    }


__all__ = ["extract_run", "inputs", "run_steps", "steps", "streamed"]
