"""``brainmatch change``: how did each treatment change the brain (pre/post scans)?"""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import echo_kv, user_errors
from brainmatch.errors import BrainmatchInputError


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@user_errors
def change(
    features: Path = typer.Option(
        ...,
        "--features",
        help="Feature table with participant_id and session (brainmatch extract's "
        "features.parquet of a dataset with ses- folders).",
    ),
    outcomes: list[Path] = typer.Option(
        ...,
        "--outcomes",
        help="Participant table(s) with the arm, site, covariates and symptom scores; "
        "repeat to merge several (e.g. participants.tsv and phenotype/outcomes.tsv).",
    ),
    treatment_column: str = typer.Option(..., "--treatment-column", help="Arm received."),
    out: Path = typer.Option(
        ..., "--out", help="Output folder (new, empty, or an earlier change output)."
    ),
    session_column: str = typer.Option("session", "--session-column", help="Time point column."),
    sessions: str | None = typer.Option(
        None,
        "--sessions",
        help="Time points in order, baseline first, e.g. pre,post (default: inferred).",
    ),
    site_column: str | None = typer.Option(
        None,
        "--site-column",
        help="Site / scanner column (a fixed effect; permutations stay within site).",
    ),
    covariates: str = typer.Option("", "--covariates", help="Comma-separated, e.g. age,sex."),
    outcome_column: str | None = typer.Option(
        None,
        "--outcome-column",
        help="Symptom score after treatment (with --baseline-column: change = after - before) "
        "for the change-outcome association.",
    ),
    baseline_column: str | None = typer.Option(
        None, "--baseline-column", help="Symptom score before treatment."
    ),
    measures: str | None = typer.Option(
        None, "--measures", help="Feature families to analyse, e.g. amp,falff (default: all)."
    ),
    contrast: str | None = typer.Option(
        None,
        "--contrast",
        help="Primary contrast A-B, e.g. CBT-SSRI (default: therapy minus medication).",
    ),
    engine: str = typer.Option(
        "fast", "--engine", help="fast (vectorised, exact) or statsmodels (MixedLM loop)."
    ),
    site_effect: str = typer.Option(
        "fixed",
        "--site-effect",
        help="fixed (default; FWE by permutation within site) or random (site random "
        "intercept, participants nested; needs --engine statsmodels; no FWE).",
    ),
    method: str = typer.Option("reml", "--method", help="reml or ml."),
    permutations: int = typer.Option(
        1000, "--permutations", help="Permutations of arm labels for FWE p (0: none)."
    ),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level."),
    level: float = typer.Option(0.95, "--level", help="Confidence level."),
    atlas: str | None = typer.Option(
        None, "--atlas", help="Atlas of the features when features.json does not name one."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the permutations."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.html."),
) -> None:
    """Per feature and arm: change with CI, the arm-by-time interaction from a mixed model
    (random intercept per participant), FDR and permutation-FWE control, circuit contrasts
    and the change-outcome association.

    Writes change.tsv, circuits.tsv, association.tsv, model.tsv, results.json, a
    glass-brain figure and report.html into --out.
    """
    from brainmatch.change import analyse_change
    from brainmatch.change.outputs import check_output_dir
    from brainmatch.reports.change import write_report

    if method.lower() not in ("reml", "ml"):
        raise BrainmatchInputError(f"--method {method!r}: use reml or ml")
    pair: tuple[str, str] | None = None
    if contrast:
        parts = [p.strip() for p in contrast.split("-")]
        if len(parts) != 2 or not all(parts):
            raise BrainmatchInputError(f"--contrast {contrast!r}: expected A-B, e.g. CBT-SSRI")
        pair = (parts[0], parts[1])
    check_output_dir(out)
    res = analyse_change(
        features,
        list(outcomes),
        treatment_column=treatment_column,
        session_column=session_column,
        sessions=_split(sessions) or None,
        site_column=site_column or None,
        covariates=_split(covariates),
        outcome_column=outcome_column,
        baseline_column=baseline_column,
        measures=_split(measures) or None,
        contrast=pair,
        engine=engine,
        site_effect=site_effect,
        reml=method.lower() == "reml",
        n_permutations=permutations,
        alpha=alpha,
        level=level,
        atlas=atlas,
        seed=seed,
    )
    res.save(out)
    if report:
        write_report(res, out)
    p = res.params
    per_arm = ", ".join(f"{a} {n}" for a, n in p["n_participants_per_arm"].items())
    items: dict[str, object] = {
        "participants": f"{p['n_participants']} ({per_arm})",
        "sessions": " -> ".join(p["sessions"]),
        "features": p["n_features"],
        "FWE-significant interactions": len(res.significant("interaction", "p_fwe"))
        if res.params["n_permutations"]
        else "n/a (no permutations)",
        "FDR-significant interactions": len(res.significant("interaction", "p_fdr")),
    }
    top = res.interaction().head(3)
    for r in top.itertuples():
        items[f"  {r.feature}"] = f"chi2 = {r.stat:.2f}, p = {r.p:.2g}, FWE p = {r.p_fwe:.3g}"
    items["results"] = str(out / "change.tsv")
    if report:
        items["report"] = str(out / "report.html")
    echo_kv(f"brain change ({p['engine']}, {'REML' if p['reml'] else 'ML'})", items)


def register(app: typer.Typer) -> None:
    """Add ``change`` to the CLI."""
    app.command("change")(change)
