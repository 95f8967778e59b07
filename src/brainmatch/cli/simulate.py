"""``brainmatch simulate``: write a simulated trial with known truth as a BIDS dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import (
    N_JOBS_DEFAULT,
    echo_kv,
    progress_bar,
    resolve_n_jobs,
    user_errors,
)
from brainmatch.simulate.arms import parse_arms
from brainmatch.simulate.model import TrialSpec, parse_effect_size


@user_errors
def simulate(
    out_dir: Path = typer.Argument(..., help="Folder to create (must be new or empty)."),
    n_subjects: int = typer.Option(60, "--n-subjects", help="Number of patients."),
    sites: int = typer.Option(3, "--sites", help="Number of sites (scanners)."),
    arms: str = typer.Option(
        "CBT,SSRI", "--arms", help="Comma-separated arm names, e.g. CBT,SSRI,mindfulness."
    ),
    resolution: int = typer.Option(4, "--resolution", help="Voxel size in mm: 2, 3 or 4."),
    n_volumes: int = typer.Option(100, "--n-volumes", help="BOLD volumes per run."),
    tr: float = typer.Option(2.0, "--tr", help="Repetition time in seconds."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same data."),
    effect_size: str = typer.Option(
        "realistic",
        "--effect-size",
        help="Treatment-by-biomarker effect: null, realistic (0.5), strong (1.2) or a number: "
        "the SD of the true advantage of CBT over an SSRI in units of the residual SD.",
    ),
    sessions: int = typer.Option(
        1, "--sessions", help="1: baseline scan; 2: ses-pre and ses-post scans."
    ),
    dwi: bool = typer.Option(
        False, "--dwi", help="Also write QSIPrep-style DWI (cingulum-FA moderator)."
    ),
    task_fmri: bool = typer.Option(
        False,
        "--task-fmri",
        help="Also write an emotional-faces task run with events.tsv (amygdala moderator).",
    ),
    cortex: bool = typer.Option(
        False, "--cortex", help="Also write FreeSurfer lh/rh.aparc.stats (cortical measures)."
    ),
    n_jobs: int = typer.Option(
        N_JOBS_DEFAULT, "--n-jobs", "--nprocs", help="Processes to use (0 = all cores)."
    ),
    n_controls: int = typer.Option(
        0,
        "--n-controls",
        help="Healthy controls to add (group=control in participants.tsv; no arm, no outcome). "
        "With controls, patients carry planted deviant circuits (ground_truth.tsv 'planted').",
    ),
    followup: bool = typer.Option(
        False, "--followup", help="Also write relapse follow-up (phenotype/followup.tsv)."
    ),
    durability_effect: float = typer.Option(
        0.6,
        "--durability-effect",
        help="With --followup: log hazard ratio per SD of the brain "
        "moderator of durability (0: none).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier simulated dataset in OUT_DIR."
    ),
) -> None:
    """Simulate a multi-site randomised treatment trial with known ground truth.

    Writes participants.tsv, phenotype/outcomes.tsv, fMRIPrep-style BOLD, masks and
    confounds, FreeSurfer aseg.stats, and ground_truth.{json,tsv} with every patient's
    true outcome under every arm.
    """
    from brainmatch.simulate.bids import simulate_trial

    spec = TrialSpec(
        n_subjects=n_subjects,
        n_sites=sites,
        arms=tuple(parse_arms(arms)),
        resolution=resolution,
        n_volumes=n_volumes,
        tr=tr,
        seed=seed,
        effect_size=parse_effect_size(effect_size),
        sessions=sessions,
        dwi=dwi,
        task_fmri=task_fmri,
        cortex=cortex,
        n_controls=n_controls,
        followup=followup,
        durability_effect=durability_effect,
    )
    jobs = resolve_n_jobs(n_jobs)
    with progress_bar("simulating subjects") as update:
        path = simulate_trial(spec, out_dir, overwrite=overwrite, n_jobs=jobs, progress=update)
    echo_kv(
        "simulated trial",
        {
            "dataset": str(path),
            "subjects": spec.n_subjects,
            "arms": ", ".join(spec.arms),
            "ground truth": str(path / "ground_truth.tsv"),
        },
    )


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the CLI."""
    app.command("simulate")(simulate)
