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
    "n_splits": "--n-splits",
    "n_repeats": "--n-repeats",
    "threshold": "--threshold",
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
    outcome_column: str = typer.Option(
        ..., "--outcome-column", help="Outcome (continuous score or 0/1)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    overwrite: bool = overwrite_option(),
    baseline_column: str | None = typer.Option(
        None, "--baseline-column", help="Baseline severity (adjusted for)."
    ),
    site_column: str | None = typer.Option(
        None, "--site-column", help="Site / scanner: enables ComBat harmonisation."
    ),
    covariates: str = typer.Option("", "--covariates", help="Comma-separated, e.g. age,sex."),
    better: str | None = typer.Option(
        None,
        "--better",
        help="lower or higher (default: lower for scores, higher for binary outcomes).",
    ),
    cv: str = typer.Option("repeated-kfold", "--cv", help="repeated-kfold or leave-site-out."),
    n_splits: int = typer.Option(5, "--n-splits", help="Folds of k-fold CV."),
    n_repeats: int = typer.Option(10, "--n-repeats", help="Repeats of k-fold CV."),
    model: str = typer.Option(
        "interaction",
        "--model",
        help="interaction (ridge PAI, default), per-arm (ridge per arm), t-linear (lasso "
        "per arm), enet-interaction (elastic net path), auto (chosen among interaction, "
        "t-linear and enet-interaction by inner CV on the doubly robust CATE error); "
        "validation only (no model file): {t,s,x,dr,r}-{linear,hgb}, econml-dr, causal-forest. "
        "Learners other than interaction/per-arm refit every permutation: use fewer "
        "--n-permutations.",
    ),
    n_permutations: int = typer.Option(
        1000, "--n-permutations", help="Permutations for the test of the selection benefit."
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="Clinically meaningful advantage (default 3 points; 0.1 for binary outcomes).",
    ),
    session: str | None = typer.Option(
        None, "--session", help="Session to use when features have several."
    ),
    select_features: str = typer.Option(
        "none",
        "--select-features",
        help="Supervised feature screening inside every training fold: none, auto (number "
        "of features chosen by inner CV from 5, 10, 20, 50, 100 or all) or a number K.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of folds, permutations and bootstraps."),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html."),
    no_learning_curve: bool = typer.Option(
        False, "--no-learning-curve", help="Skip the learning curve (4 extra CV runs)."
    ),
) -> None:
    """Train a treatment-selection model with nested cross-validation and write its report.

    Writes predictions.tsv (out-of-fold predictions only), metrics.json, model.npz (safe to
    load: no code execution) and report.html into OUT.
    """
    from brainmatch.selection import train as train_fn

    covs = tuple(c.strip() for c in covariates.split(",") if c.strip())
    claim = output_folder(out, "train", overwrite=overwrite, inputs=[features, *outcomes])
    with claim, flag_errors(), progress_bar("cross-validating") as update:
        result = train_fn(
            features,
            outcomes,
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
            threshold=threshold,
            seed=seed,
            select=select_features,
            session=session,
            report=not no_report,
            learning_curve=not no_learning_curve,
            progress=update,
        )
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
            "permutation p": _fmt(s["permutation_p"]),
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
                else f"{m['feature_selection']['final_k']} (screened; per fold "
                f"{m['feature_selection']['k_per_fold_counts']})"
            ),
            "warnings": len(m["warnings"]),
            "model file": str(result.model_path)
            if result.model_path
            else "(none: the learner is not linear; validation only)",
            "report": str(result.report_path) if result.report_path else "(skipped)",
        },
    )


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI."""
    app.command("train")(train)
