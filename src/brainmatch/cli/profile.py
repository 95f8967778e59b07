"""``brainmatch profile``: one page on a patient's circuits against the norm."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import echo_kv, user_errors
from brainmatch.errors import BrainmatchInputError


@user_errors
def profile(
    patient: Path = typer.Argument(
        ...,
        help="Patient feature table (Parquet, TSV, CSV) or a BIDS folder with fMRIPrep "
        "derivatives.",
    ),
    model: Path = typer.Option(
        ..., "--model", help="normative_model.npz written by `brainmatch normative fit`."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Output folder (new, empty or an earlier profile)."
    ),
    participant_label: str | None = typer.Option(
        None,
        "--participant-label",
        help="Participant to profile (needed for a BIDS folder or a table of several patients).",
    ),
    covariates: Path | None = typer.Option(
        None, "--covariates", help="Table with age / sex / site if PATIENT lacks them."
    ),
    selection_model: Path | None = typer.Option(
        None,
        "--selection-model",
        help="model.npz of `brainmatch train`: adds its validated "
        "prediction, kept apart from the circuit hypotheses.",
    ),
    threshold: float = typer.Option(
        1.0, "--threshold", help="|mean z| at which a circuit is called under- / over-active."
    ),
) -> None:
    """Write a one-page profile: the patient's circuits against healthy norms, the treatments
    reported to act on the deviant circuits (hypotheses, with evidence grades and citations),
    and a trained selection model's validated prediction when given."""
    from brainmatch.normative.profile import build_profile
    from brainmatch.reports.normative import write_profile_report
    from brainmatch.reports.qc import write_reportlets

    if threshold <= 0:
        raise BrainmatchInputError(f"--threshold {threshold}: must be > 0")
    result = build_profile(
        model,
        patient,
        participant=participant_label,
        covariates=covariates,
        selection_model=selection_model,
        threshold=threshold,
        out_dir=out,
    )
    write_profile_report(result, out / "report.html")
    write_reportlets(out / "features")  # QC of a BIDS patient's extraction, if any
    called = result.circuits[result.circuits["call"] != ""]
    echo_kv(
        f"profile of {result.participant_id}",
        {
            "deviant circuit measures": len(called),
            "hypotheses": len(result.hypotheses),
            "selection model": "yes" if result.selection else "no",
            "report": str(result.report_path),
        },
    )
    for w in result.warnings:
        typer.secho(f"warning: {w}", err=True, fg="yellow")


def register(app: typer.Typer) -> None:
    """Add ``profile`` to the CLI."""
    app.command("profile")(profile)
