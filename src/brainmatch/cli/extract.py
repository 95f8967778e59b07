"""``brainmatch extract``: region time series, connectivity and a features table (BIDS App)."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import (
    N_JOBS_DEFAULT,
    console,
    echo_kv,
    fail,
    hold_output_folder,
    overwrite_option,
    progress_bar,
    resolve_n_jobs,
    user_errors,
)


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x for x in v.replace(",", " ").split() if x]
    return out


def _contrasts(values: list[str] | None) -> tuple[str, ...]:
    """``--contrast`` values: expressions, or a JSON file (list, or name -> expression)."""
    import json

    out: list[str] = []
    for v in values or []:
        if v.endswith(".json"):
            path = Path(v)
            try:
                spec = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise fail(f"--contrast: cannot read {path}: {exc}") from None
            if isinstance(spec, dict):
                out += [f"{k}={e}" for k, e in spec.items()]
            elif isinstance(spec, list) and all(isinstance(e, str) for e in spec):
                out += spec
            else:
                raise fail(f"--contrast: {path} must hold a list of expressions or a name map")
        else:
            out.append(v)
    return tuple(out)


@user_errors
def extract(
    bids_dir: Path = typer.Argument(..., help="The BIDS dataset."),
    output_dir: Path = typer.Argument(..., help="Folder for the derivative outputs."),
    analysis_level: str = typer.Argument("participant", help="BIDS-App level; only 'participant'."),
    derivatives: Path = typer.Option(..., "--derivatives", help="fMRIPrep output folder."),
    atlas: str = typer.Option(
        ...,
        "--atlas",
        help="harvard-oxford, aal, desikan-killiany, destrieux, affect, or a labels NIfTI.",
    ),
    atlas_labels: Path | None = typer.Option(
        None, "--atlas-labels", help="Labels TSV (index, name) of a user atlas."
    ),
    freesurfer: Path | None = typer.Option(
        None, "--freesurfer", help="FreeSurfer SUBJECTS_DIR: add ICV-normalised aseg volumes."
    ),
    denoise: str = typer.Option(
        "simple", "--denoise", help="none, simple, scrubbing or compcor (nilearn presets)."
    ),
    standardize: str = typer.Option("zscore", "--standardize", help="zscore or none."),
    detrend: bool = typer.Option(True, "--detrend/--no-detrend", help="Remove linear trends."),
    low_pass: float | None = typer.Option(None, "--low-pass", help="Low-pass cut-off (Hz)."),
    high_pass: float | None = typer.Option(None, "--high-pass", help="High-pass cut-off (Hz)."),
    fd_threshold: float | None = typer.Option(
        None, "--fd-threshold", help="Framewise displacement threshold (mm) for scrubbing."
    ),
    connectivity: str = typer.Option(
        "correlation", "--connectivity", help="Comma-separated: correlation, partial, tangent."
    ),
    participant_label: list[str] | None = typer.Option(
        None, "--participant-label", help="Participants to process (repeat or comma-separate)."
    ),
    session_label: list[str] | None = typer.Option(
        None, "--session-label", help="Sessions to process."
    ),
    task: str | None = typer.Option(None, "--task", help="Only runs of this task."),
    space: str = typer.Option(
        "MNI152NLin2009cAsym", "--space", help="fMRIPrep output space of the BOLD files."
    ),
    n_jobs: int = typer.Option(
        N_JOBS_DEFAULT, "--n-jobs", "--nprocs", help="Local worker processes (0 = all cores)."
    ),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask distributed scheduler address (tcp://host:8786)."
    ),
    work_dir: Path | None = typer.Option(
        None, "-w", "--work-dir", help="Cache folder for derived / resampled atlases."
    ),
    force: bool = typer.Option(False, "--force", help="Recompute up-to-date participants."),
    overwrite: bool = overwrite_option(),
    modalities: str = typer.Option(
        "func",
        "--modalities",
        help="Comma-separated: func (resting-state and task BOLD), dwi (QSIPrep DWI), "
        "anat (FreeSurfer; needs --freesurfer).",
    ),
    contrast: list[str] | None = typer.Option(
        None,
        "--contrast",
        help="Task contrast over events.tsv conditions ('faces-shapes' or "
        "'name=expression'; repeat), or a JSON file with a list or a name -> expression map.",
    ),
    task_hrf: str = typer.Option("glover", "--task-hrf", help="nilearn HRF model."),
    task_noise_model: str = typer.Option("ar1", "--task-noise-model", help="ar1 or ols."),
    task_high_pass: float = typer.Option(
        0.01, "--task-high-pass", help="Cosine drift cut-off (Hz) of the task GLM."
    ),
    min_coverage: float = typer.Option(
        0.5,
        "--min-coverage",
        help="Share of a region's voxels that must carry a valid signal (XCP-D); below it the "
        "region is NaN for that run.",
    ),
    qc_reports: bool = typer.Option(
        True,
        "--qc-reports/--no-qc-reports",
        help="Write a QC reportlet per participant (carpet plot, FD, censoring, coverage).",
    ),
    dwi_derivatives: Path | None = typer.Option(
        None, "--dwi-derivatives", help="QSIPrep output folder (default: --derivatives)."
    ),
    dwi_space: str = typer.Option("T1w", "--dwi-space", help="QSIPrep output space of the DWI."),
    qsirecon: Path | None = typer.Option(
        None,
        "--qsirecon",
        help="QSIRecon output folder: runs with its tensor maps are summarised from them.",
    ),
    dwi_fit_method: str = typer.Option(
        "WLS", "--dwi-fit-method", help="Tensor fit: WLS (DIPY's default) or OLS."
    ),
    dwi_tracts: str = typer.Option(
        "juelich-wm",
        "--dwi-tracts",
        help="White-matter tract atlas summarised beside --atlas (juelich-wm or none).",
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any participant failed."),
) -> None:
    """Extract region signals, connectivity and a features table from fMRIPrep outputs.

    Writes per run sub-*/func/*_seg-<atlas>_stat-mean_timeseries.tsv and
    *_stat-<measure>_relmat.tsv, then features.parquet (+ .tsv, .json), failures.tsv and
    dataset_description.json.  Reruns skip participants whose outputs match their inputs.
    """
    from brainmatch.features import extract_dataset
    from brainmatch.features.config import DwiOptions, TaskOptions

    if analysis_level != "participant":
        raise fail(f"analysis level must be 'participant', got {analysis_level!r}")
    kinds = [k.strip() for k in connectivity.split(",") if k.strip()]
    inputs = [bids_dir, derivatives, freesurfer, atlas_labels, work_dir]
    hold_output_folder(
        output_dir, "extract", overwrite=overwrite, inputs=inputs, option="OUTPUT_DIR"
    )
    with progress_bar("extracting") as update:
        result = extract_dataset(
            bids_dir,
            output_dir,
            derivatives=derivatives,
            atlas=atlas,
            atlas_labels=atlas_labels,
            freesurfer=freesurfer,
            denoise=denoise,
            standardize=standardize,
            detrend=detrend,
            low_pass=low_pass,
            high_pass=high_pass,
            fd_threshold=fd_threshold,
            connectivity=kinds,
            participant_label=_split(participant_label),
            session_label=_split(session_label),
            task=task,
            space=space,
            n_jobs=resolve_n_jobs(n_jobs),
            scheduler=scheduler,
            work_dir=work_dir,
            force=force or overwrite,
            progress=update,
            modalities=modalities,
            min_coverage=min_coverage,
            qc_reports=qc_reports,
            task_options=TaskOptions(
                contrasts=_contrasts(contrast),
                hrf_model=task_hrf,
                noise_model=task_noise_model,
                high_pass=task_high_pass,
                qc_figures=qc_reports,
            ),
            dwi_options=DwiOptions(
                derivatives=dwi_derivatives,
                fit_method=dwi_fit_method.upper(),
                tracts=None if dwi_tracts.lower() in ("none", "") else dwi_tracts,
                space=dwi_space,
                qsirecon=qsirecon,
            ),
        )
    if qc_reports:
        from brainmatch.reports.qc import write_reportlets

        write_reportlets(output_dir)
    for row in result.failures.itertuples(index=False):
        where = f" {row.file}:" if row.file else ""
        console.print(
            f"[bold red]failed[/] {row.participant_id}"
            f"{'' if row.session == 'n/a' else ' ses-' + row.session}:{where} "
            f"{row.reason}",
            highlight=False,
            soft_wrap=True,
        )
    echo_kv(
        "extracted features",
        {
            "features": str(result.features_path) if result.features_path else "(none)",
            "computed": len(result.computed),
            "up to date (skipped)": len(result.skipped),
            "failed": f"{len(result.failures)} (see {result.failures_path})",
        },
    )
    if result.all_failed or (strict and len(result.failures)):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``extract`` to the CLI."""
    app.command("extract")(extract)
