"""``extract_dataset``: BIDS + fMRIPrep / QSIPrep / FreeSurfer derivatives -> a features table,
one participant(-session) at a time, resumably and in parallel.

Each unit of work (one participant, or participant-session) is a pure function of its
input files and the options.  Its work is the concatenation of its modalities' steps
(:mod:`brainmatch.features.modalities`: ``func`` resting-state and task BOLD, ``dwi``
diffusion tensors, ``anat`` FreeSurfer measures); the heavy parts are lean jobs run by
:mod:`brainmatch.features.schedule` in worker processes or on Dask.  A unit writes its
per-run outputs atomically, then a record (:mod:`brainmatch.features.records`); the group
files (``features.parquet`` / ``.tsv`` / ``.json``, ``failures.tsv``, ``qc.tsv``) are
rebuilt from the records at the end of every run (:mod:`brainmatch.features.group`).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd

from brainmatch._io import write_json, write_tsv
from brainmatch.atlases import SHIPPED_ATLASES, Atlas, atlas_digest, load_atlas
from brainmatch.errors import BrainmatchError, BrainmatchInputError
from brainmatch.features.bids import Run, Unit, discover
from brainmatch.features.config import (
    RECORD_VERSION,
    DwiOptions,
    ExtractConfig,
    ExtractResult,
    TaskOptions,
    bids_label,
    feature_name,
    parse_modalities,
)
from brainmatch.features.denoise import CONNECTIVITY_KINDS, CleanOptions
from brainmatch.features.group import read_features, write_description, write_group
from brainmatch.features.lean import LeanPool, file_fingerprint
from brainmatch.features.modalities import MODULES
from brainmatch.features.modalities.anat import aseg_features
from brainmatch.features.modalities.func import extract_run, run_steps
from brainmatch.features.outputs import write_matrix, write_series, write_sidecar
from brainmatch.features.records import (
    finite,
    is_up_to_date,
    record_path,
    remove,
    unit_inputs,
)
from brainmatch.features.schedule import (
    LeanFailure,
    Steps,
    drive_here,
    one_thread,
    run_dask,
    run_local,
)


def _modalities_of(config: ExtractConfig) -> list[str]:
    mods = list(config.modalities)
    if config.freesurfer and "anat" not in mods:
        mods.append("anat")
    return mods


def process_unit(unit: Unit, config: ExtractConfig) -> dict[str, Any]:
    """Extract one unit, write its outputs and record; never raises for bad input.

    Everything runs in this process (see :func:`unit_steps` for the split that
    ``extract_dataset`` runs across processes).

    Returns
    -------
    dict
        ``{"key", "status": "ok" | "failed", "record" | "file" + "reason"}``.
    """
    with one_thread():
        return drive_here(unit_steps(unit, config))


def unit_steps(unit: Unit, config: ExtractConfig) -> Steps:
    """:func:`process_unit` as steps: each modality's steps, then the record.

    Everything but the lean jobs (streaming a BOLD, fitting a DWI's tensors) runs where
    the steps are driven, i.e. the parent process; run it under ``threadpool_limits(1)``
    for results identical to :func:`process_unit`.
    """
    rec_path = record_path(config, unit)
    base = {"key": unit.key, "participant_id": f"sub-{unit.participant}", "session": unit.session}
    try:
        if unit.problem:
            raise BrainmatchInputError(unit.problem, unit.problem_file)
        # every input's content hash goes into the record; the big files are hashed by
        # the workers as they read them, the small files here
        mods = _modalities_of(config)
        files = unit_inputs(unit, config)
        streamed = set().union(*(MODULES[m].streamed(unit) for m in mods))
        hashes = {str(f): file_fingerprint(f) for f in files if str(f) not in streamed}
        values: dict[str, float] = {}
        outputs: list[str] = []
        parts: dict[str, dict[str, Any]] = {}
        for name in mods:
            part = yield from MODULES[name].steps(unit, config)
            parts[name] = part
            hashes.update(part["hashes"])
            values.update(part["features"])
            outputs += part["outputs"]
        inputs = [hashes[str(f)] for f in files if str(f) in hashes]
        record = {
            "record_version": RECORD_VERSION,
            "participant_id": f"sub-{unit.participant}",
            "session": unit.session,
            "options_sha256": config.options_hash(),
            "options": config.options_dict(),
            "inputs": inputs,
            "runs": parts.get("func", {}).get("runs", []),
            "outputs": sorted(set(outputs)),
            "features": values,
        }
        for name, key in (("func", "task_runs"), ("dwi", "dwi_runs")):
            if parts.get(name, {}).get(key):
                record[key] = parts[name][key]
        # one line: written by the C encoder (the record is for reruns and the group table)
        write_json(rec_path, finite(record), indent=None)
        return {**base, "status": "ok", "record": record}
    except LeanFailure as exc:
        remove(rec_path)
        return {**base, "status": "failed", "file": "", "reason": str(exc)}
    except BrainmatchError as exc:
        remove(rec_path)
        path = getattr(exc, "path", None)
        reason = getattr(exc, "reason", str(exc))
        return {**base, "status": "failed", "file": str(path) if path else "", "reason": reason}
    except Exception as exc:
        remove(rec_path)
        tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return {
            **base,
            "status": "failed",
            "file": "",
            "reason": f"internal error ({type(exc).__name__}: {exc}); {tb}",
        }


def _check_n_jobs(n_jobs: int) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise BrainmatchInputError(
            f"n_jobs (--n-jobs) must be a positive number of processes or -1 (all cores), "
            f"got {n_jobs!r}"
        )
    if n_jobs == -1:
        import os

        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    return n_jobs


def _make_config(
    atlas: str | Path | Atlas,
    atlas_labels: str | Path | None,
    options: CleanOptions,
    kinds: tuple[str, ...],
    output_dir: Path,
    freesurfer: bool,
    cache_dir: Path | None,
    modalities: tuple[str, ...],
    task_options: TaskOptions,
    dwi_options: DwiOptions,
    min_coverage: float,
    qc_reports: bool = True,
) -> ExtractConfig:
    atlas_obj = (
        atlas if isinstance(atlas, Atlas) else load_atlas(atlas, atlas_labels, cache=cache_dir)
    )
    source = None if isinstance(atlas, Atlas) else str(atlas)
    if source is not None and source not in (*SHIPPED_ATLASES, "affect") and Path(source).exists():
        source = str(Path(source).absolute())  # a user atlas: record where it came from
    tracts = tracts_digest = None
    if "dwi" in modalities and dwi_options.tracts:
        from brainmatch.atlases import tract_atlas

        tracts = tract_atlas(dwi_options.tracts, cache=cache_dir)
        tracts_digest = atlas_digest(tracts)
    return ExtractConfig(
        atlas=atlas_obj,
        atlas_digest=atlas_digest(atlas_obj),
        clean=options,
        atlas_source=source,
        atlas_labels=str(Path(atlas_labels).absolute()) if atlas_labels else None,
        connectivity=kinds,
        output_dir=output_dir.absolute(),
        freesurfer=freesurfer,
        cache_dir=cache_dir,
        modalities=modalities,
        task=task_options,
        dwi=dwi_options,
        tracts=tracts,
        tracts_digest=tracts_digest,
        min_coverage=min_coverage,
        qc_reports=qc_reports,
    )


def _failures_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    failures = pd.DataFrame(
        [
            {
                "participant_id": r["participant_id"],
                "session": r["session"] or "n/a",
                "file": r["file"],
                "reason": r["reason"],
            }
            for r in results
            if r["status"] == "failed"
        ],
        columns=["participant_id", "session", "file", "reason"],
    )
    return failures.sort_values(["participant_id", "session"]).reset_index(drop=True)


def extract_dataset(
    bids_dir: str | Path,
    output_dir: str | Path,
    *,
    derivatives: str | Path,
    atlas: str | Path | Atlas,
    atlas_labels: str | Path | None = None,
    freesurfer: str | Path | None = None,
    denoise: str = "simple",
    standardize: str = "zscore",
    detrend: bool = True,
    low_pass: float | None = None,
    high_pass: float | None = None,
    fd_threshold: float | None = None,
    connectivity: Sequence[str] = ("correlation",),
    participant_label: Sequence[str] | None = None,
    session_label: Sequence[str] | None = None,
    task: str | None = None,
    space: str = "MNI152NLin2009cAsym",
    n_jobs: int = 1,
    scheduler: str | None = None,
    work_dir: str | Path | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    modalities: str | Sequence[str] = ("func",),
    task_options: TaskOptions | None = None,
    dwi_options: DwiOptions | None = None,
    min_coverage: float = 0.5,
    qc_reports: bool = True,
) -> ExtractResult:
    """Extract brain features (resting-state, task, diffusion, FreeSurfer) into one table.

    Parameters
    ----------
    bids_dir : str or Path
        The raw BIDS dataset (``participants.tsv``; task runs' ``events.tsv``).
    output_dir : str or Path
        Derivative folder to write (created; earlier outputs are reused when up to date).
    derivatives : str or Path
        fMRIPrep output folder (``sub-*/[ses-*/]func/*_desc-preproc_bold.nii.gz``).
    atlas : str, Path or Atlas
        Shipped atlas name, ``affect``, a labels NIfTI (with ``atlas_labels``), or an Atlas.
    atlas_labels : str or Path, optional
        Labels TSV (index, name) of a user atlas.
    freesurfer : str or Path, optional
        FreeSurfer SUBJECTS_DIR: adds ICV-normalised ``aseg.stats`` volumes and ENIGMA-named
        ``aparc.stats`` cortical measures (implies the ``anat`` modality).
    denoise, standardize, detrend, low_pass, high_pass, fd_threshold
        See :class:`~brainmatch.features.denoise.CleanOptions`.
    connectivity : sequence of {"correlation", "partial", "tangent"}
        Connectivity measures (nilearn ``ConnectivityMeasure``); features are Fisher-z
        for correlation and partial correlation.  ``tangent`` is fitted on every unit in
        the table (a group reference): refit it inside cross-validation folds.
    participant_label, session_label : sequence of str, optional
        Restrict to these participants / sessions (with or without ``sub-`` / ``ses-``).
    task : str, optional
        Only BOLD runs of this task.
    space : str
        fMRIPrep output space of the BOLD files to use (the atlases are MNI).
    n_jobs : int
        Local worker processes (-1: one per available core).
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``) to run units on;
        workers must see the same file system paths.
    work_dir : str or Path, optional
        Atlas cache folder (default ``$BRAINMATCH_CACHE`` or ``~/.cache/brainmatch``);
        it travels in the configuration, the environment is not changed.
    force : bool
        Recompute every unit even when its outputs are up to date.
    progress : callable, optional
        ``progress(done, total)``.
    modalities : str or sequence of {"func", "dwi", "anat"}
        What to extract (``"func,dwi,anat"``); ``anat`` needs ``freesurfer``.
    task_options : TaskOptions, optional
        Task GLM settings (contrasts, HRF, drift, noise model).
    dwi_options : DwiOptions, optional
        QSIPrep folder, tensor fit method, tract atlas.
    min_coverage : float
        XCP-D's per-region coverage threshold: a region whose share of voxels with a
        changing signal is below it is left out of that run (NaN features); a run fails
        only when fewer than half the atlas regions remain.
    qc_reports : bool
        Keep each run's QC figure (framewise displacement, censored volumes, carpet plot,
        coverage) in its record, for the reportlet per participant
        (``sub-*/figures/*_desc-qc_bold.html``) that
        :func:`brainmatch.reports.qc.write_reportlets` renders after the run (``brainmatch
        extract`` does).  ``qc.tsv`` is always written.

    Returns
    -------
    ExtractResult
    """
    bids_dir, output_dir, derivatives = Path(bids_dir), Path(output_dir), Path(derivatives)
    mods = parse_modalities(modalities)
    cache_dir = Path(work_dir).absolute() if work_dir is not None else None
    n_workers = _check_n_jobs(n_jobs)
    if not (0.0 < min_coverage <= 1.0):
        raise BrainmatchInputError(
            f"min_coverage (--min-coverage) must be in (0, 1], got {min_coverage}"
        )
    kinds = tuple(dict.fromkeys(connectivity))
    bad = [k for k in kinds if k not in CONNECTIVITY_KINDS]
    if bad:
        raise BrainmatchInputError(
            f"unknown connectivity measure {bad[0]!r}; choose from {', '.join(CONNECTIVITY_KINDS)}"
        )
    options = CleanOptions(
        denoise=denoise,
        standardize=standardize,
        detrend=detrend,
        low_pass=low_pass,
        high_pass=high_pass,
        fd_threshold=fd_threshold,
    )
    fs = Path(freesurfer) if freesurfer is not None else None
    if "anat" in mods and fs is None:
        raise BrainmatchInputError("the anat modality needs --freesurfer (a SUBJECTS_DIR)")
    dwi_opts = dwi_options or DwiOptions()
    with ExitStack() as stack:
        pool = None
        if not scheduler:  # start the workers now: their imports overlap the set-up below
            pool = stack.enter_context(LeanPool(n_workers))
        config = _make_config(
            atlas,
            atlas_labels,
            options,
            kinds,
            output_dir,
            fs is not None,
            cache_dir,
            mods,
            task_options or TaskOptions(),
            dwi_opts,
            min_coverage,
            qc_reports,
        )
        if fs is not None and not fs.is_dir():
            raise BrainmatchInputError("FreeSurfer folder not found", fs)
        if output_dir.exists() and not output_dir.is_dir():
            raise BrainmatchInputError("output path exists and is not a folder", output_dir)
        units = discover(
            bids_dir,
            derivatives,
            participant_label=list(participant_label or []),
            session_label=list(session_label or []),
            task=task,
            space=space,
            freesurfer=fs,
            modalities=mods,
            dwi_derivatives=Path(dwi_opts.derivatives) if dwi_opts.derivatives else None,
            dwi_space=dwi_opts.space,
            qsirecon=Path(dwi_opts.qsirecon) if dwi_opts.qsirecon else None,
        )
        if not units:
            what = {
                "func": "preprocessed BOLD "
                "(expected sub-*/[ses-*/]func/*_desc-preproc_bold.nii.gz)",
                "dwi": "preprocessed DWI (expected sub-*/[ses-*/]dwi/*_desc-preproc_dwi.nii.gz)",
                "anat": "FreeSurfer subject (expected sub-*/stats/aseg.stats)",
            }
            message = "no " + " or ".join(what[m] for m in mods) + " found"
            if mods == ("func",):
                message = (
                    "no preprocessed BOLD found "
                    "(expected sub-*/[ses-*/]func/*_desc-preproc_bold.nii.gz)"
                )
            raise BrainmatchInputError(
                message,
                derivatives if mods[0] == "func" else (dwi_opts.derivatives or fs or derivatives),
            )
        output_dir.mkdir(parents=True, exist_ok=True)
        write_description(output_dir, bids_dir, derivatives)

        todo, skipped = [], []
        for unit in units:
            if not force and not unit.problem and is_up_to_date(config, unit):
                skipped.append(unit.key)
            else:
                todo.append(unit)
        total = len(units)
        results: list[dict[str, Any]] = []
        state = {"done": len(skipped)}
        if progress:
            progress(state["done"], total)

        def done(res: dict[str, Any]) -> None:
            results.append(res)
            state["done"] += 1
            if progress:
                progress(state["done"], total)

        def make_steps(unit: Unit) -> Steps:
            return unit_steps(unit, config)

        peak = 0
        if todo:
            if pool is None:
                assert scheduler is not None
                peak = run_dask(todo, make_steps, scheduler, done)
            else:
                peak = run_local(todo, make_steps, pool, done)
        failures = _failures_table(results)
        failures_path = output_dir / "failures.tsv"
        write_tsv(failures_path, failures)
        write_sidecar(
            failures_path,
            {
                "Description": "One row per participant (and session) that failed in this run",
                "file": "the input file the problem is in (empty when not one file)",
                "reason": "what is wrong, in one line",
            },
        )
        failed_keys = {r["key"] for r in results if r["status"] == "failed"}
        paths = write_group(config, units, failed_keys, bids_dir)
        return ExtractResult(
            output_dir=output_dir,
            features_path=paths[0],
            features_tsv=paths[1],
            metadata_path=paths[2],
            failures_path=failures_path,
            failures=failures,
            computed=[r["key"] for r in results if r["status"] == "ok"],
            skipped=skipped,
            n_units=total,
            worker_peak_rss_mb=peak / 2**20 if peak else None,
            qc_path=output_dir / "qc.tsv" if (output_dir / "qc.tsv").exists() else None,
        )


__all__ = [
    "DwiOptions",
    "ExtractConfig",
    "ExtractResult",
    "Run",
    "TaskOptions",
    "aseg_features",
    "bids_label",
    "extract_dataset",
    "extract_run",
    "feature_name",
    "process_unit",
    "read_features",
    "run_steps",
    "unit_steps",
    "write_matrix",
    "write_series",
]
