"""``brainmatch cbma``: coordinate-based meta-analysis of brain change (ALE / MKDA, NiMARE)."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import (
    N_JOBS_DEFAULT,
    console,
    echo_kv,
    hold_output_folder,
    resolve_n_jobs,
    user_errors,
)
from brainmatch.errors import BrainmatchInputError


@user_errors
def cbma(
    coordinates: Path = typer.Argument(
        ...,
        help="Foci: Sleuth/GingerALE .txt, NiMARE dataset .json, or a table "
        "(.tsv/.csv/.xlsx; pyALE spreadsheets included) with columns experiment, x, "
        "y, z, space (MNI or TAL), n_subjects.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (new or empty)."),
    method: str = typer.Option("ale", "--method", help="ale (default) or mkda."),
    iterations: int = typer.Option(
        5000,
        "--iterations",
        help="Monte Carlo iterations of the FWE correction (and label "
        "permutations of a --versus contrast).",
    ),
    voxel_thresh: float = typer.Option(
        0.001, "--voxel-thresh", help="Cluster-forming threshold (uncorrected voxel p)."
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Cluster-level FWE threshold."),
    select: list[str] = typer.Option(
        [], "--select", help="Keep rows with COLUMN=VALUE (repeatable; case-insensitive)."
    ),
    space: str | None = typer.Option(
        None, "--space", help="MNI or TAL, for a table without a space column."
    ),
    tal_transform: str = typer.Option(
        "spm",
        "--tal-transform",
        help="Lancaster 2007 Talairach-to-MNI transform: spm (default, as pyALE), fsl or other.",
    ),
    sheet: str | None = typer.Option(None, "--sheet", help="Worksheet of a spreadsheet."),
    name: str | None = typer.Option(None, "--name", help="Label of the (first) set."),
    versus: Path | None = typer.Option(
        None,
        "--versus",
        help="Second set of foci (may be the same file with --versus-select): adds both main "
        "effects, the subtraction (contrast) and the conjunction.",
    ),
    versus_select: list[str] = typer.Option(
        [], "--versus-select", help="COLUMN=VALUE selection for the --versus set."
    ),
    versus_name: str | None = typer.Option(
        None, "--versus-name", help="Label of the --versus set."
    ),
    max_outside_mm: float = typer.Option(
        15.0, "--max-outside-mm", help="Foci farther than this from the brain mask are an error."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the Monte Carlo procedure."),
    n_jobs: int = typer.Option(
        N_JOBS_DEFAULT,
        "--n-jobs",
        "--nprocs",
        help="Threads for the Monte Carlo iterations (0 = all cores, the default).",
    ),
    engine: str = typer.Option(
        "brainmatch",
        "--engine",
        help="Monte Carlo engine: brainmatch (default; NiMARE's draws or permutations and "
        "answer, 10x+ faster) or nimare (NiMARE's FWECorrector and ALESubtraction, the "
        "reference).",
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="Dask distributed scheduler address (tcp://host:8786): run the Monte Carlo "
        "iterations on its workers.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty folder."),
) -> None:
    """Coordinate-based meta-analysis (ALE or MKDA) with Monte Carlo FWE correction.

    Writes NIfTI maps, clusters.tsv (peak MNI x/y/z, volume_mm3, peak_stat, cluster-level
    p_fwe, Harvard-Oxford label, affect_overlap), experiments.tsv, results.json and
    report.html with glass-brain figures.  With --versus: both main effects, their
    subtraction (ALE contrast) and conjunction.
    """
    from brainmatch.cli._common import progress_bar
    from brainmatch.evidence.cbma import CoordinateMetaAnalysis, compare
    from brainmatch.evidence.cbma_io import read_coordinates
    from brainmatch.reports.cbma import write_comparison_report, write_report

    hold_output_folder(out, "cbma", overwrite=overwrite, inputs=[coordinates, versus])
    jobs = resolve_n_jobs(n_jobs)
    space_opt = None
    if space is not None:
        if space.upper() not in ("MNI", "TAL"):
            raise BrainmatchInputError(f"--space must be MNI or TAL, got {space!r}")
        space_opt = space.upper()
    method = method.lower()
    engine = engine.lower()
    table_a = read_coordinates(
        coordinates, select=select, space=space_opt, tal_transform=tal_transform, sheet=sheet
    )
    label_a = name or (select[0].split("=", 1)[-1] if select else coordinates.stem)

    if versus is None:
        est = CoordinateMetaAnalysis(
            method=method,
            iterations=iterations,
            voxel_thresh=voxel_thresh,
            alpha=alpha,
            n_jobs=jobs,
            random_state=seed,
            max_outside_mm=max_outside_mm,
            engine=engine,
            scheduler=scheduler,
        )
        with progress_bar(f"cbma {label_a}: Monte Carlo iterations") as update:
            result = est.fit(table_a, name=label_a, progress=update).result_
        result.save(out)
        write_report(result, out)
        _echo(result, out)
        return
    table_b = read_coordinates(
        versus, select=versus_select, space=space_opt, tal_transform=tal_transform, sheet=sheet
    )
    label_b = versus_name or (versus_select[0].split("=", 1)[-1] if versus_select else versus.stem)
    steps: list[str] = []
    with progress_bar("cbma: two main effects and their contrast") as update:

        def report(step: str, done: int, total: int) -> None:
            if step not in steps:
                steps.append(step)
            update(min(len(steps) - 1, 2) * total + done, 3 * total)

        comparison = compare(
            table_a,
            table_b,
            name_a=label_a,
            name_b=label_b,
            method=method,
            iterations=iterations,
            voxel_thresh=voxel_thresh,
            alpha=alpha,
            n_jobs=jobs,
            random_state=seed,
            max_outside_mm=max_outside_mm,
            engine=engine,
            scheduler=scheduler,
            progress=report,
        )
    comparison.save(out)
    write_comparison_report(comparison.results, out)
    for result in comparison.results.values():
        _echo(result, out)


def _echo(result: object, out: Path) -> None:
    from brainmatch.evidence.cbma import CBMAResult

    assert isinstance(result, CBMAResult)
    items: dict[str, object] = {}
    params = result.params
    if "n_experiments" in params:
        items["experiments"] = (
            f"{params['n_experiments']} ({params['n_foci']} foci, "
            f"{params['n_subjects']:g} subjects)"
        )
    items["significant clusters"] = result.n_significant
    for row in result.clusters.head(10).itertuples():
        p = "" if row.p_fwe != row.p_fwe else f", p_fwe = {row.p_fwe:.4f}"
        if row.p_fwe < 0.001:
            p = ", p_fwe < 0.001"
        direction = getattr(row, "direction", None)
        sets = result.name.split(" - ")
        side = (
            ""
            if direction is None or len(sets) != 2
            else (f"{sets[0]} > {sets[1]}: " if direction == "+" else f"{sets[1]} > {sets[0]}: ")
        )
        items[f"  cluster {row.cluster_id}"] = (
            f"{side}({row.x:.0f}, {row.y:.0f}, {row.z:.0f}) {row.volume_mm3:.0f} mm3{p}, "
            f"{row.label}"
        )
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    for note in result.notes:
        items.setdefault("notes", "")
        items["notes"] = (str(items["notes"]) + "; " if items["notes"] else "") + note
    items["run time"] = f"{result.seconds:.1f} s"
    items["report"] = str(out / "report.html")
    echo_kv(f"cbma {result.kind}: {result.name}", items)


def register(app: typer.Typer) -> None:
    """Add ``cbma`` to the CLI."""
    app.command("cbma")(cbma)
