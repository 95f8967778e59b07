"""``brainmatch durability``: which treatment keeps each patient well (time to relapse)."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import echo_kv, user_errors


@user_errors
def durability(
    features: Path = typer.Option(..., "--features", help="Feature table with participant_id."),
    outcomes: list[Path] = typer.Option(
        ..., "--outcomes", help="Table(s) with arm, time and event columns (repeatable)."
    ),
    treatment_column: str = typer.Option(..., "--treatment-column", help="Arm received."),
    time_column: str = typer.Option(..., "--time-column", help="Time to relapse or censoring."),
    event_column: str = typer.Option(..., "--event-column", help="1 = relapse, 0 = censored."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    horizon: str = typer.Option("52w", "--horizon", help="e.g. 52w, 12m, 1y, or a number."),
    time_unit: str = typer.Option("weeks", "--time-unit", help="Unit of --time-column."),
    covariates: str = typer.Option("", "--covariates", help="Comma-separated extra predictors."),
    session: str | None = typer.Option(None, "--session", help="Session of a long table."),
    site_column: str | None = typer.Option(
        None,
        "--site-column",
        help="Site of each patient: features harmonised by ComBat inside every training fold.",
    ),
    model: str = typer.Option(
        "lasso-cox",
        "--model",
        help="lasso-cox (L1 Cox per arm), per-arm (ridge Cox per arm), interaction (ridge Cox "
        "stratified by arm with arm-by-feature interactions), pseudo (lasso T-learner on "
        "pseudo-observations) or auto (chosen by inner CV of the policy's RMST).",
    ),
    penalizer: str | None = typer.Option(
        None,
        "--penalizer",
        help="Cox penalty on standardised features (default 0.05 lasso-cox, 0.5 per-arm / "
        "interaction), or auto (inner 3-fold CV).",
    ),
    n_splits: int = typer.Option(5, "--n-splits", help="Folds."),
    n_repeats: int = typer.Option(2, "--n-repeats", help="Repeats of k-fold CV."),
    n_bootstrap: int = typer.Option(500, "--n-bootstrap", help="Bootstrap of the gain's CI."),
    permutations: int = typer.Option(0, "--permutations", help="Permutation test reruns."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Validate treatment selection by predicted relapse-free survival at a horizon, out of
    fold: concordance, AUC and Brier at the horizon, calibration, and the policy's RMST gain
    over the best single arm.  Writes predictions.tsv, results.json and report.html into --out."""
    from brainmatch.durability.run import durability_analysis
    from brainmatch.errors import BrainmatchInputError

    pen: float | str | None = None
    if penalizer is not None and penalizer.strip().lower() == "auto":
        pen = "auto"
    elif penalizer is not None:
        try:
            pen = float(penalizer)
        except ValueError:
            raise BrainmatchInputError(
                f"--penalizer {penalizer!r}: use a number >= 0 or auto"
            ) from None

    res = durability_analysis(
        features,
        list(outcomes),
        treatment_column=treatment_column,
        time_column=time_column,
        event_column=event_column,
        horizon=horizon,
        time_unit=time_unit,
        covariates=[c.strip() for c in covariates.split(",") if c.strip()],
        session=session,
        site_column=site_column,
        model=model,
        penalizer=pen,
        n_splits=n_splits,
        n_repeats=n_repeats,
        n_bootstrap=n_bootstrap,
        n_permutations=permutations,
        seed=seed,
    )
    from brainmatch.reports.durability import write_report

    res.save(out)
    report = write_report(res, out)
    m = res.metrics
    g = m["policy_rmst_gain"]
    items = {
        "patients / events": f"{res.params['n']} / {res.params['n_events']}",
        "Harrell's C / Uno's C": f"{m['harrell_c']:.3f} / {m['uno_c']:.3f}",
        "AUC / Brier at horizon": f"{m['auc_horizon']:.3f} / {m['brier_horizon']:.3f}",
        "policy RMST gain": f"{g['estimate']:.2f} [{g['ci_low']:.2f}, {g['ci_high']:.2f}] "
        f"over {g['best_single_arm']}",
    }
    if "permutation_p" in m:
        items["permutation p"] = f"{m['permutation_p']:.3g}"
    items["results"] = str(out / "results.json")
    items["report"] = str(report)
    echo_kv(f"durability (horizon {res.params['horizon']:g} {res.params['time_unit']})", items)


def register(app: typer.Typer) -> None:
    """Add ``durability`` to the CLI."""
    app.command("durability")(durability)
