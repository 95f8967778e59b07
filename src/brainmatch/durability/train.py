"""``brainmatch train --time-column``: validate, then fit and save a durability model.

The same kinds of outputs as a continuous-outcome ``train``: ``metrics.json`` (the
out-of-fold validation of :func:`~brainmatch.durability.validate.validate_durability`),
``predictions.tsv`` (out-of-fold only; ``report.html`` by the CLI) and a signed ``model.npz``
(:mod:`brainmatch.durability.modelfile`) holding the per-arm models (Cox or
pseudo-observation lasso) refitted on all patients, with bootstrap refits for the
intervals ``brainmatch recommend`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from brainmatch.durability.selector import SurvivalSelector
from brainmatch.durability.validate import DurabilityResult

MODEL_FILE = "model.npz"


def selection_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Whether validation supports choosing arms by the model: permutation p < 0.05 and
    the RMST gain's CI above 0 (a missing permutation test does not support it)."""
    g = metrics["policy_rmst_gain"]
    p = metrics.get("permutation_p")
    reasons = []
    if p is None or not p < 0.05:
        reasons.append(
            "in validation the model's recommendations did not beat chance (permutation p = "
            + ("not run: pass --n-permutations" if p is None else f"{p:.3g}")
            + ")"
        )
    if not g["ci_low"] > 0:
        reasons.append(
            f"in validation the policy's RMST gain's {g['level']:.0%} CI "
            f"[{g['ci_low']:.3g}, {g['ci_high']:.3g}] includes 0: recommending by this model "
            f"was not shown to beat giving everyone {g['best_single_arm']}"
        )
    return {
        "permutation_p": p,
        "policy_rmst_gain": g["estimate"],
        "policy_rmst_gain_ci": [g["ci_low"], g["ci_high"]],
        "best_single_arm": g["best_single_arm"],
        "selection_supported": not reasons,
        "reasons": reasons,
    }


@dataclass
class DurabilityTrainResult:
    """What :func:`train_durability` produced.

    Attributes
    ----------
    validation : DurabilityResult
    selector : SurvivalSelector
        Fitted on every patient (with bootstrap refits).
    metrics : dict
        As in ``metrics.json``.
    out_dir, model_path, report_path : Path
    """

    validation: DurabilityResult
    selector: SurvivalSelector
    metrics: dict[str, Any]
    out_dir: Path
    model_path: Path
    report_path: Path | None = None


def train_durability(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any],
    *,
    treatment_column: str,
    time_column: str,
    event_column: str,
    out_dir: str | Path,
    horizon: str | float = 52.0,
    time_unit: str = "weeks",
    covariates: list[str] | tuple[str, ...] = (),
    session: str | None = None,
    site_column: str | None = None,
    model: str = "lasso-cox",
    penalizer: float | str | None = None,
    n_splits: int = 5,
    n_repeats: int = 2,
    n_bootstrap: int = 200,
    n_permutations: int = 0,
    seed: int = 0,
) -> DurabilityTrainResult:
    """Validate selection by relapse-free survival out of fold, refit on everyone, save.

    Parameters
    ----------
    features, outcomes, treatment_column, time_column, event_column, horizon, time_unit,
    covariates, session, site_column
        See :func:`~brainmatch.durability.run.durability_analysis` (with ``site_column`` the
        saved model holds the ComBat fitted on every patient; ``recommend`` then needs each
        patient's site).
    out_dir : path
        Receives ``metrics.json``, ``predictions.tsv`` and ``model.npz`` (``report.html``:
        :func:`brainmatch.reports.durability.write_report` of ``result.validation``).
    model : str
        A learner that can be saved: ``lasso-cox`` (default), ``per-arm`` (ridge Cox),
        ``pseudo`` (lasso on pseudo-observations) or ``auto`` (one of them chosen by inner
        cross-validation, in every training fold and again on all patients); see
        :class:`~brainmatch.durability.selector.SurvivalSelector`.
    penalizer, n_splits, n_repeats, n_permutations, seed
        See :func:`~brainmatch.durability.validate.validate_durability`.
    n_bootstrap : int
        Bootstrap resamples, both of the policy gain's CI and of the saved model's refits
        (the intervals of ``brainmatch recommend``).

    Returns
    -------
    DurabilityTrainResult
    """
    from brainmatch._io import write_json, write_tsv
    from brainmatch.change.analysis import _json_safe
    from brainmatch.durability.methods import methods_text
    from brainmatch.durability.modelfile import save_durability_model
    from brainmatch.durability.run import read_and_validate
    from brainmatch.errors import BrainmatchInputError
    from brainmatch.selection.data import table_metadata as feature_provenance

    if model == "interaction":
        raise BrainmatchInputError(
            "model 'interaction': validation only (brainmatch durability --model interaction); "
            "a model file holds lasso-cox, per-arm, pseudo or auto"
        )
    res, d, h = read_and_validate(
        features,
        outcomes,
        treatment_column=treatment_column,
        time_column=time_column,
        event_column=event_column,
        horizon=horizon,
        time_unit=time_unit,
        covariates=covariates,
        session=session,
        site_column=site_column,
        model=model,
        penalizer=penalizer,
        n_splits=n_splits,
        n_repeats=n_repeats,
        n_bootstrap=n_bootstrap,
        n_permutations=n_permutations,
        seed=seed,
    )
    sel = SurvivalSelector(
        horizon=h, model=model, penalizer=penalizer, n_bootstrap=n_bootstrap, seed=seed
    ).fit(d["X"], d["time"], d["event"], d["arm"], sites=d["site"])
    selection = selection_summary(res.metrics)
    metrics = {
        "generated_by": "brainmatch train (durability)",
        "outcome_kind": "time-to-event",
        **res.to_dict(),
        "selection": selection,
        "final_model": {
            "model": sel.model_,
            "inner_cv_policy_rmst": sel.model_scores_,
            "penalizer": sel.penalizer_,
        },
        "description": methods_text(res),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_tsv(out / "predictions.tsv", res.predictions, float_format="%.6g")
    write_json(out / "metrics.json", metrics)
    meta = {
        "kind": "durability",
        "features": d["features"],
        "covariates": list(covariates),
        "medians": [float(v) for v in d["medians"]],
        "time_unit": time_unit,
        "options": {
            "treatment_column": treatment_column,
            "time_column": time_column,
            "event_column": event_column,
            "session": session,
            "site_column": site_column,
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "model": model,
        },
        "selection": selection,
        "feature_provenance": _json_safe(feature_provenance(features)),
        "validation": {k: res.metrics[k] for k in ("harrell_c", "uno_c", "auc_horizon")}
        | {
            "brier_horizon": res.metrics["brier_horizon"],
            "brier_horizon_km": res.metrics["brier_horizon_km"],
            "n": res.params["n"],
            "n_events": res.params["n_events"],
        },
    }
    model_path = save_durability_model(out / MODEL_FILE, sel, _json_safe(meta))
    return DurabilityTrainResult(
        validation=res,
        selector=sel,
        metrics=metrics,
        out_dir=out,
        model_path=model_path,
    )
