"""``brainmatch train``: learn which patients respond to which treatment, validated honestly."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import typer

from brainmatch.cli._common import (
    echo_kv,
    output_folder,
    overwrite_option,
    progress_bar,
    user_errors,
)
from brainmatch.errors import BrainmatchInputError

#: Python parameters of the selection API and the flags that set them.
FLAGS = {
    "treatment_column": "--treatment-column",
    "outcome_column": "--outcome-column",
    "baseline_column": "--baseline-column",
    "site_column": "--site-column",
    "covariates": "--covariates",
    "better": "--better",
    "cv": "--cv",
    "model": "--model",
    "select": "--select-features",
    "session": "--session",
    "n_permutations": "--n-permutations",
    "permutation_null": "--permutation-null",
    "n_splits": "--n-splits",
    "n_repeats": "--n-repeats",
    "threshold": "--threshold",
    "scheduler": "--scheduler",
    "clinical": "--clinical",
}
_ASSIGN = re.compile(r"\b(" + "|".join(FLAGS) + r")=")
_COLUMN = re.compile(r"\b(treatment_column|outcome_column|baseline_column|site_column)\b")


def to_flags(message: str) -> str:
    """Rewrite the Python parameter names in a library message as the CLI's flags."""
    message = _ASSIGN.sub(lambda m: FLAGS[m.group(1)] + " ", message)
    return _COLUMN.sub(lambda m: FLAGS[m.group(1)], message)


@contextlib.contextmanager
def flag_errors() -> Iterator[None]:
    """Re-raise :class:`BrainmatchInputError` with parameter names mapped to flags."""
    try:
        yield
    except BrainmatchInputError as exc:
        raise BrainmatchInputError(to_flags(exc.reason), exc.path) from None


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


@user_errors
def train(
    features: Path = typer.Option(
        ..., "--features", help="Feature table (Parquet, TSV or CSV) with participant_id."
    ),
    outcomes: list[Path] = typer.Option(
        ...,
        "--outcomes",
        help="Table with participant_id, treatment, outcome, "
        "covariates and site; repeat to merge several "
        "(e.g. participants.tsv and phenotype/*.tsv).",
    ),
    treatment_column: str = typer.Option(..., "--treatment-column", help="Arm received."),
    outcome_column: str | None = typer.Option(
        None, "--outcome-column", help="Outcome (continuous score or 0/1)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    overwrite: bool = overwrite_option(),
    baseline_column: str | None = typer.Option(
        None, "--baseline-column", help="Baseline severity (adjusted for)."
    ),
    site_column: str | None = typer.Option(
        None, "--site-column", help="Site / scanner: enables ComBat harmonisation."
    ),
    no_harmonize: bool = typer.Option(
        False,
        "--no-harmonize",
        help="Keep --site-column for the folds (--cv leave-site-out) and strata but do not "
        "harmonise the features (already harmonised, or to measure what ComBat adds).",
    ),
    covariates: str = typer.Option("", "--covariates", help="Comma-separated, e.g. age,sex."),
    better: str | None = typer.Option(
        None,
        "--better",
        help="lower or higher (default: lower for scores, higher for binary outcomes).",
    ),
    cv: str = typer.Option("repeated-kfold", "--cv", help="repeated-kfold or leave-site-out."),
    n_splits: int = typer.Option(5, "--n-splits", help="Folds of k-fold CV."),
    n_repeats: int | None = typer.Option(
        None, "--n-repeats", help="Repeats of k-fold CV (default 10; with --time-column 2)."
    ),
    model: str = typer.Option(
        "interaction",
        "--model",
        help="interaction (ridge PAI, default), per-arm (ridge per arm), t-linear (lasso "
        "per arm), enet-interaction (elastic net path), {t,x,dr,r}-{linear,hgb} (meta-"
        "learners; hgb = gradient boosting), auto (chosen among interaction, t-linear, "
        "enet-interaction and x-hgb, or their convex stack, by inner CV on the doubly robust "
        "CATE error); validation only (no model file): s-linear, s-hgb, econml-dr, "
        "causal-forest. Learners other than interaction/per-arm refit every permutation: use "
        "fewer --n-permutations.",
    ),
    n_permutations: int | None = typer.Option(
        None,
        "--n-permutations",
        help="Permutations for the test of the selection benefit (default 1000; with "
        "--time-column 0: each reruns the whole cross-validation, e.g. 49).",
    ),
    permutation_null: str | None = typer.Option(
        None,
        "--permutation-null",
        help="Null of the permutation test: auto (default: freedman-lane when its reduced "
        "model is least squares, i.e. at most n/2 columns, else rerandomise), freedman-lane "
        "(residuals of a no-interaction model shuffled within arm; fast), rerandomise (arm "
        "labels re-randomised under a constant arm effect, the whole CV refitted per "
        "trial; exact in a randomised trial) or within-arm (no feature effect at all).",
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Clinically meaningful advantage (default 3 points; 0.1 for binary outcomes).",
    ),
    session: str | None = typer.Option(
        None, "--session", help="Session to use when features have several."
    ),
    select_features: str | None = typer.Option(
        None,
        "--select-features",
        help="Supervised feature screening inside every training fold: none, auto (all "
        "features or the top 5, 10, 20, 50, 100, chosen by inner CV) or a number K. "
        "Default: auto for the ridge models of a score, none for 0/1 outcomes (the "
        "ridge-logistic model; auto where its design would exceed 300 columns) and other "
        "--model values.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of folds, permutations and bootstraps."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html."),
    no_learning_curve: bool = typer.Option(
        False, "--no-learning-curve", help="Skip the learning curve (4 extra CV runs)."
    ),
    time_column: str | None = typer.Option(
        None,
        "--time-column",
        help="Time to relapse or censoring: train a durability (survival) model instead "
        "of an outcome model (see brainmatch durability).",
    ),
    event_column: str | None = typer.Option(
        None, "--event-column", help="With --time-column: 1 = relapse, 0 = censored."
    ),
    horizon: str = typer.Option(
        "52w", "--horizon", help="With --time-column: e.g. 52w, 12m, 1y, or a number."
    ),
    time_unit: str = typer.Option("weeks", "--time-unit", help="Unit of --time-column."),
    penalizer: str | None = typer.Option(
        None,
        "--penalizer",
        help="With --time-column: Cox penalty (default 0.05 lasso-cox, 0.5 per-arm), or auto "
        "(inner CV).",
    ),
    survival_model: str = typer.Option(
        "lasso-cox",
        "--survival-model",
        help="With --time-column: lasso-cox (L1 Cox per arm), per-arm (ridge Cox per arm), "
        "pseudo (lasso T-learner on pseudo-observations of relapse-free survival) or auto "
        "(chosen by inner CV of the policy's RMST).",
    ),
    n_bootstrap: int = typer.Option(
        200, "--n-bootstrap", help="With --time-column: bootstrap refits / gain CI resamples."
    ),
    followup_scores: Path | None = typer.Option(
        None,
        "--followup-scores",
        help="Long table of repeated follow-up scores (participant_id, --followup-time-column, "
        "and the --outcome-column score): the outcome becomes each patient's sustained score "
        "(--followup-summary).",
    ),
    followup_time_column: str = typer.Option(
        "week", "--followup-time-column", help="Time column of --followup-scores."
    ),
    followup_summary: str = typer.Option(
        "auc",
        "--followup-summary",
        help="auc (time-averaged score), last, slope, or mixed (per-patient mean from a "
        "random-slope mixed model).",
    ),
    followup_until: float | None = typer.Option(
        None, "--followup-until", help="Last follow-up time used (default: every visit)."
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="Dask distributed scheduler address (tcp://host:8786): run the outer folds "
        "(with their permutations), the learning curve and the bootstrap refits on that "
        "cluster; results are identical to a serial run.",
    ),
) -> None:
    """Train a treatment-selection model with nested cross-validation and write its report.

    Writes predictions.tsv (out-of-fold predictions only), metrics.json, model.npz (safe to
    load: no code execution) and report.html into OUT.
    """
    covs = tuple(c.strip() for c in covariates.split(",") if c.strip())
    # --- durability branch: time to relapse with censoring (brainmatch.durability) ---
    if time_column is not None or event_column is not None:
        unused = {
            "--followup-scores": followup_scores is not None,
            "--baseline-column": baseline_column is not None,
            "--better": better is not None,
            "--threshold": threshold is not None,
            "--cv": cv != "repeated-kfold",
            "--model": model != "interaction",
            "--select-features": select_features is not None,
            "--scheduler": scheduler is not None,
            "--permutation-null": permutation_null is not None,
            "--no-harmonize": no_harmonize,
        }
        for flag, given in unused.items():
            if given:
                raise BrainmatchInputError(
                    f"{flag}: not used with --time-column (a survival model; add baseline "
                    "columns through --covariates)"
                )
        _train_durability(
            features=features,
            outcomes=outcomes,
            out=out,
            overwrite=overwrite,
            treatment_column=treatment_column,
            time_column=time_column,
            event_column=event_column,
            outcome_column=outcome_column,
            horizon=horizon,
            time_unit=time_unit,
            penalizer=penalizer,
            survival_model=survival_model,
            site_column=site_column,
            covs=covs,
            session=session,
            n_splits=n_splits,
            n_repeats=2 if n_repeats is None else n_repeats,
            n_bootstrap=n_bootstrap,
            n_permutations=0 if n_permutations is None else n_permutations,
            seed=seed,
            report=not no_report,
        )
        return
    if outcome_column is None:
        raise BrainmatchInputError("--outcome-column: required (or --time-column/--event-column)")
    if survival_model != "lasso-cox" or penalizer is not None:
        flag = "--penalizer" if penalizer is not None else "--survival-model"
        raise BrainmatchInputError(f"{flag}: only with --time-column / --event-column")
    n_repeats = 10 if n_repeats is None else n_repeats
    n_permutations = 1000 if n_permutations is None else n_permutations
    from brainmatch.reports.selection import write_train_report
    from brainmatch.selection import train as train_fn

    tables: list[object] = list(outcomes)
    if followup_scores is not None:  # repeated scores -> one sustained outcome per patient
        from brainmatch.durability.followup import summarise_followup

        try:
            sustained = summarise_followup(
                followup_scores,
                score_column=outcome_column,
                time_column=followup_time_column,
                method=followup_summary,
                until=followup_until,
            )
        except BrainmatchInputError as exc:
            msg = exc.reason.replace("score_column", "--outcome-column")
            msg = msg.replace("time_column", "--followup-time-column")
            raise BrainmatchInputError(
                msg.replace("method ", "--followup-summary "), exc.path
            ) from None
        tables.append(sustained)
        outcome_column = str(sustained.columns[1])
        echo_kv("sustained outcome", {"column": outcome_column, "patients": len(sustained)})
    claim = output_folder(
        out, "train", overwrite=overwrite, inputs=[features, *outcomes, followup_scores]
    )
    with claim, flag_errors(), progress_bar("cross-validating") as update:
        result = train_fn(
            features,
            tables,
            treatment_column=treatment_column,
            outcome_column=outcome_column,
            out_dir=out,
            baseline_column=baseline_column,
            site_column=site_column,
            covariates=covs,
            better=better,
            cv=cv,
            n_splits=n_splits,
            n_repeats=n_repeats,
            model=model,
            n_permutations=n_permutations,
            permutation_null=permutation_null or "auto",
            threshold=threshold,
            seed=seed,
            select=select_features,
            session=session,
            learning_curve=not no_learning_curve,
            progress=update,
            scheduler=scheduler,
            harmonize=not no_harmonize,
        )
        if not no_report:
            write_train_report(result)
    m = result.metrics
    s = m["selection"]
    key = "auc" if m["binary"] else "r2"
    echo_kv(
        "treatment-selection model",
        {
            "patients": f"{m['n']} ({', '.join(f'{a}: {c}' for a, c in m['n_per_arm'].items())})",
            "validation": m["cv"]["description"],
            f"per-arm {key.upper()}": ", ".join(
                f"{a}: {_fmt(r[key])}" for a, r in m["per_arm"].items()
            ),
            "model": m["model"]
            + (
                f" (chose {m['model_chosen']})"
                if m.get("model_chosen") not in (None, m["model"])
                else ""
            ),
            "policy gain": f"{_fmt(s['policy_gain'])} (95% CI {_fmt(s['policy_gain_ci'])})",
            "policy gain d": f"{_fmt(s['policy_gain_d'])} (95% CI {_fmt(s['policy_gain_d_ci'])})",
            "selection benefit d": f"{_fmt(s['benefit_d'])} (descriptive, no CI)",
            "permutation p": _fmt(s["permutation_p"])
            + (
                f" ({s['n_permutations']} "
                + (
                    "re-randomised trials"
                    if s["permutation_null_method"] == "rerandomise"
                    else f"permutations, {s['permutation_null_method']}"
                )
                + ")"
                if s["permutation_p"] is not None
                else ""
            ),
            "selection supported": "yes"
            if s["selection_supported"]
            else "no: do not choose treatments by this model",
            **(
                {"one arm for everyone": s["single_arm_recommended"]}
                if s["single_arm_recommended"]
                else {}
            ),
            "features used": (
                "all"
                if m["feature_selection"]["select"] == "none"
                else (
                    "all"
                    if m["feature_selection"]["final_features"] == "all"
                    else f"{m['feature_selection']['final_k']}"
                )
                + f" (screening {m['feature_selection']['select']}; per fold: "
                f"{m['feature_selection']['k_per_fold_counts']})"
            ),
            "warnings": len(m["warnings"]),
            "model file": str(result.model_path)
            if result.model_path
            else "(none: S-learners and EconML cannot be stored; validation only)",
            "report": str(result.report_path) if result.report_path else "(skipped)",
        },
    )


def _train_durability(
    *,
    features: Path,
    outcomes: list[Path],
    out: Path,
    overwrite: bool,
    treatment_column: str,
    time_column: str | None,
    event_column: str | None,
    outcome_column: str | None,
    horizon: str,
    time_unit: str,
    penalizer: str | None,
    survival_model: str,
    site_column: str | None,
    covs: tuple[str, ...],
    session: str | None,
    n_splits: int,
    n_repeats: int,
    n_bootstrap: int,
    n_permutations: int,
    seed: int,
    report: bool,
) -> None:
    """``train --time-column``: validate and save a durability model (thin: parse, call,
    print)."""
    from brainmatch.durability.train import train_durability
    from brainmatch.reports.durability import write_report

    if time_column is None or event_column is None:
        flag = "--event-column" if time_column is not None else "--time-column"
        raise BrainmatchInputError(f"{flag}: required with --time-column / --event-column")
    if outcome_column is not None:
        raise BrainmatchInputError("--outcome-column: not used with --time-column; pass one")
    pen: float | str | None = penalizer
    if penalizer is not None and penalizer.strip().lower() == "auto":
        pen = "auto"
    elif penalizer is not None:
        try:
            pen = float(penalizer)
        except ValueError:
            raise BrainmatchInputError(
                f"--penalizer {penalizer!r}: use a number >= 0 or auto"
            ) from None
    claim = output_folder(out, "train", overwrite=overwrite, inputs=[features, *outcomes])
    with claim, progress_bar("cross-validating (durability)"):
        res = train_durability(
            features,
            list(outcomes),
            treatment_column=treatment_column,
            time_column=time_column,
            event_column=event_column,
            out_dir=out,
            horizon=horizon,
            time_unit=time_unit,
            covariates=covs,
            session=session,
            site_column=site_column,
            model=survival_model,
            penalizer=pen,
            n_splits=n_splits,
            n_repeats=n_repeats,
            n_bootstrap=n_bootstrap,
            n_permutations=n_permutations,
            seed=seed,
        )
        if report:
            res.report_path = write_report(res.validation, out)
    m, s = res.validation.metrics, res.metrics["selection"]
    p = res.validation.params
    echo_kv(
        f"durability model (horizon {p['horizon']:g} {p['time_unit']})",
        {
            "patients / events": f"{p['n']} / {p['n_events']}",
            "Harrell's C / Uno's C": f"{m['harrell_c']:.3f} / {m['uno_c']:.3f}",
            "AUC / Brier at horizon": f"{m['auc_horizon']:.3f} / {m['brier_horizon']:.3f}",
            "policy RMST gain": f"{_fmt(s['policy_rmst_gain'])} (95% CI "
            f"{_fmt(s['policy_rmst_gain_ci'])}) over {s['best_single_arm']}",
            "permutation p": "not run" if s["permutation_p"] is None else _fmt(s["permutation_p"]),
            "selection supported": "yes"
            if s["selection_supported"]
            else "no: do not choose treatments by this model",
            "model file": str(res.model_path),
            "report": str(res.report_path) if res.report_path else "(skipped)",
        },
    )


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI."""
    app.command("train")(train)
