"""``brainmatch demo``: the whole pipeline on a simulated trial, ending in a report.

Stages run in order; each returns a line for the demo's index report.  Today: simulate
(a two-arm, three-site trial with a strong treatment-by-biomarker effect) and the trial
summary.  Later stages (extraction, training, recommendation) plug in as they land.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import typer

from brainmatch.cli._common import console, echo_kv, out, progress_bar, user_errors
from brainmatch.errors import BrainmatchInputError

_MARKER = ".brainmatch-demo"


def prepare_demo_dir(path: Path) -> None:
    """Create ``path``; clear it when an earlier demo made it; refuse someone else's files."""
    if path.exists() and not path.is_dir():
        raise BrainmatchInputError("exists and is not a folder", path)
    if path.is_dir() and any(path.iterdir()):
        if not (path / _MARKER).exists():
            raise BrainmatchInputError(
                "folder is not empty and is not an earlier brainmatch demo; choose another --out",
                path,
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / _MARKER).write_text("brainmatch demo output; `brainmatch demo` may replace it\n")


@user_errors
def demo(
    out_dir: Path = typer.Option(
        Path("brainmatch-demo"),
        "--out",
        help="Folder for everything the demo writes (replaced on rerun).",
    ),
    n_subjects: int = typer.Option(120, "--n-subjects", help="Patients in the simulated trial."),
    seed: int = typer.Option(2026, "--seed", help="Random seed of the simulated trial."),
    n_jobs: int = typer.Option(0, "--n-jobs", help="Processes to use (0 = all cores)."),
) -> None:
    """Run the whole pipeline on a simulated trial and print where the report is."""
    from brainmatch.reports.trial import write_trial_report
    from brainmatch.simulate import TrialSpec, simulate_trial
    from brainmatch.simulate.model import EFFECT_SIZES

    start = time.perf_counter()
    out_dir = out_dir.absolute()
    prepare_demo_dir(out_dir)
    jobs = n_jobs if n_jobs > 0 else (os.cpu_count() or 1)
    spec = TrialSpec(
        n_subjects=n_subjects,
        n_sites=3,
        arms=("CBT", "SSRI"),
        resolution=4,
        n_volumes=80,
        tr=2.0,
        seed=seed,
        effect_size=EFFECT_SIZES["strong"],
    )
    bids = out_dir / "bids"
    console.print(f"[bold]1/2[/] simulating {n_subjects} patients (CBT vs SSRI, 3 sites)")
    with progress_bar("simulating subjects") as update:
        simulate_trial(spec, bids, n_jobs=jobs, progress=update)
    stages = [
        {
            "name": "simulate",
            "summary": f"{n_subjects} patients written as BIDS + fMRIPrep derivatives in {bids}",
            "link": "",
        }
    ]

    console.print("[bold]2/2[/] writing the report")
    report = write_trial_report(bids, out_dir / "report.html", stages=stages)
    echo_kv(
        "brainmatch demo",
        {
            "dataset": str(bids),
            "time": f"{time.perf_counter() - start:.0f} s",
        },
    )
    out.print(f"Report: {report}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI."""
    app.command("demo")(demo)
