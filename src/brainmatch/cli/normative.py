"""``brainmatch normative fit`` / ``score``: normative models of brain features."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import echo_kv, user_errors
from brainmatch.errors import BrainmatchInputError

app = typer.Typer(
    help="Normative models: fit each brain measure's distribution in healthy controls "
    "(age, sex, site), then express anyone as deviation z-scores and circuit scores.",
    no_args_is_help=True,
)


def _columns(text: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in (text or "").split(",") if c.strip())


@app.command("fit")
@user_errors
def fit(
    controls: Path = typer.Argument(
        ...,
        help="Healthy controls' feature table (Parquet, TSV or CSV; participant_id + features).",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (new, empty or an earlier fit)."),
    covariates: Path | None = typer.Option(
        None,
        "--covariates",
        help="Table with the covariate / site columns, if CONTROLS lacks them.",
    ),
    covariate_columns: str = typer.Option(
        "", "--covariate-columns", help="Comma-separated covariates, e.g. age,sex (default: none)."
    ),
    site_column: str | None = typer.Option(
        None, "--site-column", help="Site (scanner) column, modelled as a batch effect."
    ),
    noise: str = typer.Option(
        "auto",
        "--noise",
        help="heteroskedastic (noise SD depends on the covariates and site), homoskedastic, or "
        "auto: heteroskedastic with at least 20 controls per design column.",
    ),
    likelihood: str = typer.Option(
        "normal",
        "--likelihood",
        help="normal, or shash: a sinh-arcsinh distribution of each feature's residuals "
        "(skewed / heavy-tailed measures).",
    ),
    n_knots: int = typer.Option(5, "--n-knots", help="Knots of the B-spline of age (>= 2)."),
    holdout: float = typer.Option(
        0.2, "--holdout", help="Share of controls per site held out for calibration (0: none)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the hold-out split."),
) -> None:
    """Fit a normative model on healthy controls; writes OUT/normative_model.npz,
    fit_metrics.tsv (held-out calibration per feature) and report.html."""
    from brainmatch.normative import fit_normative
    from brainmatch.reports.normative import write_fit_report

    if noise not in ("auto", "heteroskedastic", "homoskedastic"):
        raise BrainmatchInputError(
            f"--noise {noise!r}: choose auto, heteroskedastic or homoskedastic"
        )
    if likelihood not in ("normal", "shash"):
        raise BrainmatchInputError(f"--likelihood {likelihood!r}: choose normal or shash")
    if n_knots < 2:
        raise BrainmatchInputError(f"--n-knots {n_knots}: need at least 2")
    if not 0 <= holdout < 0.9:
        raise BrainmatchInputError(f"--holdout {holdout}: must be in [0, 0.9)")
    result = fit_normative(
        controls,
        covariates,
        covariate_columns=_columns(covariate_columns),
        site_column=site_column,
        holdout=holdout,
        n_knots=n_knots,
        heteroskedastic=None if noise == "auto" else noise == "heteroskedastic",
        likelihood=likelihood,
        seed=seed,
        out_dir=out,
    )
    write_fit_report(result, out / "report.html")
    cal = result.summary["calibration"]
    items = {
        "model": str(result.model_path),
        "controls": result.summary["n_controls"],
        "features": result.summary["n_features"],
        "sites": ", ".join(result.summary["sites"]) or "none",
    }
    if cal:
        items["held-out mean z"] = f"{cal['mean_z']:.3f}"
        items["held-out SD z"] = f"{cal['sd_z']:.3f}"
        items["held-out |z|<1.96"] = f"{cal['share_abs_z_below_1_96']:.3f}"
    echo_kv("normative model", items)
    for w in result.warnings:
        typer.secho(f"warning: {w}", err=True, fg="yellow")


@app.command("score")
@user_errors
def score(
    model: Path = typer.Argument(..., help="normative_model.npz (or its folder)."),
    features: Path = typer.Argument(..., help="Feature table of the people to score."),
    out: Path = typer.Option(..., "--out", help="Output folder (new, empty or an earlier score)."),
    covariates: Path | None = typer.Option(
        None,
        "--covariates",
        help="Table with the covariate / site columns, if FEATURES lacks them.",
    ),
    adapt: Path | None = typer.Option(
        None,
        "--adapt",
        help="Healthy controls of sites the model has not seen (features + covariates + site): "
        "the model is adapted to those sites first.",
    ),
    threshold: float = typer.Option(
        1.0, "--threshold", help="|mean z| of a circuit called under- / hyper-active."
    ),
) -> None:
    """Deviation z-scores of everyone in FEATURES; writes OUT/deviations.tsv, circuits.tsv,
    fit_metrics.tsv, people.tsv and report.html."""
    from brainmatch.normative import score_normative
    from brainmatch.reports.normative import write_score_report

    if threshold <= 0:
        raise BrainmatchInputError(f"--threshold {threshold}: must be > 0")
    result = score_normative(
        model, features, covariates, adapt=adapt, threshold=threshold, out_dir=out
    )
    write_score_report(result, out / "report.html")
    people = result.people
    echo_kv(
        "normative deviations",
        {
            "deviations": str(out / "deviations.tsv"),
            "circuits": str(out / "circuits.tsv"),
            "people": len(people),
            "median extreme deviations per person": f"{people['n_extreme'].median():g}",
            "report": str(out / "report.html"),
        },
    )
    for w in result.warnings:
        typer.secho(f"warning: {w}", err=True, fg="yellow")


def register(root: typer.Typer) -> None:
    """Add ``normative`` (fit, score) to the CLI."""
    root.add_typer(app, name="normative")
