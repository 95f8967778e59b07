"""Recommend a treatment for new patients from a trained model (``brainmatch recommend``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from brainmatch._io import write_json, write_tsv
from brainmatch.errors import BrainmatchInputError
from brainmatch.harmonize import ComBat
from brainmatch.selection.data import ID, MAX_ABS_VALUE, one_row_per_participant, read_table
from brainmatch.selection.learners import predict_exported, spec_from_arrays
from brainmatch.selection.modelfile import check_predictions, load_model
from brainmatch.selection.pipeline import Preprocessor
from brainmatch.selection.regions import readable_feature_name

N_DRIVERS = 8


@dataclass
class RecommendResult:
    """What :func:`recommend` produced.

    Attributes
    ----------
    out_dir : Path
    patients : list of dict
        One entry per patient, as in ``recommend.json``.
    model : dict
        The model's metadata (validated performance, arms, options).
    report_path : Path or None
    """

    out_dir: Path
    patients: list[dict[str, Any]]
    model: dict[str, Any]
    report_path: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def preprocessor_from_model(arrays: dict[str, NDArray[Any]], meta: dict[str, Any]) -> Preprocessor:
    """Rebuild the fitted preprocessing from a model file's arrays and metadata."""
    pre = Preprocessor(
        harmonize=bool(meta["harmonize"]), n_outcome_only=int(meta["n_outcome_only"])
    )
    pre.medians_ = arrays["medians"]
    pre.covariate_spec_ = meta["covariate_spec"]
    pre.confound_coef_ = arrays["confound_coef"]
    pre.mean_ = arrays["mean"]
    pre.sd_ = arrays["sd"]
    pre.combat_ = None
    if meta["harmonize"]:
        cb = ComBat()
        cb.sites_ = np.array(meta["sites"], dtype=str)
        cb.grand_mean_ = arrays["combat_grand_mean"]
        cb.var_pooled_ = arrays["combat_var_pooled"]
        cb.beta_covariates_ = arrays["combat_beta_covariates"]
        cb.gamma_ = arrays["combat_gamma"]
        cb.delta_ = arrays["combat_delta"]
        cb.n_features_in_ = int(arrays["combat_gamma"].shape[1])
        pre.combat_ = cb
    return pre


def extraction_options(meta: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``extract_dataset`` that reproduce the training features."""
    prov = meta.get("feature_provenance") or {}
    raw = prov.get("sidecar")
    side: dict[str, Any] = raw if isinstance(raw, dict) else {}
    raw_options = side.get("options")
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    atlas = options.get("atlas") or (side.get("atlas") or {}).get("name")
    if not atlas:
        raise BrainmatchInputError(
            "the model does not record how its features were extracted (it was trained on a "
            "table without brainmatch extract's features.json); pass a feature table instead"
        )
    kwargs: dict[str, Any] = {"atlas": atlas}
    if options.get("atlas_labels"):  # a user's atlas: its labels table travels with it
        kwargs["atlas_labels"] = options["atlas_labels"]
    clean = options.get("clean") or side.get("strategy") or {}
    for key in ("denoise", "standardize", "detrend", "low_pass", "high_pass", "fd_threshold"):
        if key in clean:
            kwargs[key] = clean[key]
    conn = options.get("connectivity") or side.get("connectivity")
    if conn:
        kwargs["connectivity"] = tuple(conn)
    kwargs["freesurfer_needed"] = bool(options.get("freesurfer"))
    return kwargs


def _extract_bids(
    meta: dict[str, Any],
    source: Path,
    out_dir: Path,
    derivatives: Path | None,
    participant: list[str] | None,
) -> pd.DataFrame:
    """Extract features of a BIDS / fMRIPrep subject with the model's atlas and options."""
    try:
        from brainmatch.features import extract_dataset
    except ImportError:
        raise BrainmatchInputError(
            "INPUT is a folder (BIDS / fMRIPrep), but feature extraction "
            "(brainmatch.features.extract_dataset) is not available in this installation; run "
            "`brainmatch extract` first and pass the feature table",
            source,
        ) from None
    kwargs = extraction_options(meta)
    need_fs = kwargs.pop("freesurfer_needed")
    deriv = derivatives or source / "derivatives" / "fmriprep"
    if not deriv.is_dir():
        raise BrainmatchInputError(
            "no fMRIPrep derivatives found (expected derivatives/fmriprep; pass --derivatives)",
            source,
        )
    freesurfer = None
    if need_fs:
        freesurfer = deriv.parent / "freesurfer"
        if not freesurfer.is_dir():
            raise BrainmatchInputError(
                "the model uses FreeSurfer volumes but no derivatives/freesurfer folder was found",
                source,
            )
    from brainmatch.features.config import modality_kwargs  # task, DWI: as recorded

    side = (meta.get("feature_provenance") or {}).get("sidecar")
    recorded = side.get("options") if isinstance(side, dict) else None
    kwargs.update(modality_kwargs(recorded if isinstance(recorded, dict) else {}, deriv))
    result = extract_dataset(
        source,
        out_dir / "features",
        derivatives=deriv,
        freesurfer=freesurfer,
        participant_label=participant,
        **kwargs,
    )
    if result.features_path is None:
        raise BrainmatchInputError(
            f"feature extraction failed for every subject (see {result.failures_path})", source
        )
    table = pd.read_parquet(result.features_path)
    # clinical columns (site, age, sex, baseline scores) from participants.tsv and phenotype/
    for path in [source / "participants.tsv", *sorted((source / "phenotype").glob("*.tsv"))]:
        if not path.is_file():
            continue
        extra = pd.read_csv(path, sep="\t", na_values=["n/a"])
        if ID not in extra.columns or extra[ID].duplicated().any():
            continue
        extra = extra[[c for c in extra.columns if c == ID or c not in table.columns]]
        table = table.merge(extra, on=ID, how="left")
    return table


def _occlusion(
    Z: NDArray[np.float64], C: NDArray[np.float64], spec: dict[str, Any], arms: list[str]
) -> Any:
    """Feature contributions to a non-linear model's advantage of arm ``best`` over
    ``nxt``: the advantage minus the advantage with that feature alone at the training
    mean (``Z = 0``); for a linear model this is exactly ``Z_j (coef_best - coef_next)``.
    Only features that the model uses are evaluated; ``from_features`` is the advantage
    minus the advantage with every feature at its mean."""
    p = Z.shape[1]
    linear_used = np.flatnonzero(np.abs(spec["coef"]).sum(axis=0) > 0)
    own = np.flatnonzero(np.abs(spec["weight"]).sum(axis=0))
    inputs = spec["components"].used_inputs(own)
    m = int(own.max()) + 1 if own.size else 0  # the final model's components come first
    spec = {**spec, "components": spec["components"].head(m), "weight": spec["weight"][:, :m]}
    used = np.union1d(linear_used, inputs[inputs < p]).astype(int)

    def contributions(i: int, best: int, nxt: int, sign: float) -> tuple[Any, float]:
        rows = np.repeat(Z[i : i + 1], used.size + 2, axis=0)
        rows[np.arange(used.size), used] = 0.0
        rows[-1] = 0.0
        pr = predict_exported(rows, np.repeat(C[i : i + 1], rows.shape[0], axis=0), spec)
        adv = sign * (pr[:, best] - pr[:, nxt])
        contrib = np.zeros(p)
        contrib[used] = adv[-2] - adv[: used.size]
        return contrib, float(adv[-2] - adv[-1])

    return contributions


def _drivers_note(
    any_material: bool,
    floor: float,
    logodds: bool,
    occluded: bool,
    from_features: float,
    from_average: float,
) -> str:
    """What the drivers list shows, and where the advantage comes from when no single
    feature is material: the features together, or the arms' average difference (only
    said when the features' sum is immaterial, so it never contradicts the numbers)."""
    unit = "log-odds" if logodds else "outcome units"
    if any_material:
        return f"features with a contribution of at least {floor:.2g} ({unit}) to the " + (
            "advantage (non-linear model: the change in the advantage when that feature "
            "alone is set to the training mean)"
            if occluded
            else "advantage"
        )
    if abs(from_features) < floor:
        return (
            "no brain feature contributes materially: the choice comes from the arms' "
            "average difference (and baseline / covariates) alone"
        )
    return (
        f"no single brain feature contributes materially (each below {floor:.2g} {unit}), "
        f"but together they contribute {from_features:+.2g} to the advantage, and the arms' "
        f"average difference (with baseline / covariates) {from_average:+.2g}"
    )


def validation_supports_selection(selection: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether a model's validation supports choosing between arms, and why not.

    Supported when the permutation p-value is below 0.05 and the policy gain's 95% CI
    excludes 0 (models written before ``selection_supported`` existed are judged the same
    way from their stored p-value and interval).
    """
    if not selection:  # TreatmentSelector.save: a fitted model, never validated
        return False, [
            "the model was saved without validation (TreatmentSelector.save): nothing shows "
            "that its recommendations beat giving everyone the best single arm; use a model "
            "written by brainmatch train (Python: train())"
        ]
    reasons = []
    p = selection.get("permutation_p")
    if p is None or p >= 0.05:
        reasons.append(
            "in validation the model's recommendations did not beat chance "
            f"(permutation p = {'n/a' if p is None else f'{p:.3g}'})"
        )
    ci = selection.get("policy_gain_ci") or [None, None]
    if ci[0] is None or ci[0] <= 0:
        reasons.append(
            "in validation the policy gain's 95% CI includes 0: recommending by this model "
            "was not shown to beat giving everyone the best single arm"
        )
    single = selection.get("single_arm_recommended")
    if single:
        reasons.append(f"in validation the model recommended {single} for every patient")
    return not reasons, reasons


#: How a patient's 95 % advantage interval is made from the bootstrap refits of the final
#: model: ``"t"`` (default), the advantage +- t(0.975, B - 1) bootstrap standard
#: deviations; ``"percentile"``, the 2.5 and 97.5 percentiles of the refits' advantages.
#: With B = 50 refits the percentiles sit near the 2nd and 49th of 50 draws and cover
#: less than 95 % by construction: on 60 null trials (150 training patients, 20
#: features, 200 new patients each) they covered the true advantage for 0.931 of patients
#: (t: 0.979), on 60 sparse trials 0.906 (t: 0.938; the ridge's shrinkage, which no
#: bootstrap shows); ``python benchmarks/bench_select.py --skip-grid --null-trials 0
#: --advantage-coverage 60``.
ADVANTAGE_INTERVAL = "t"


def _advantage_interval(advantage: float, boot: NDArray[np.float64]) -> list[float]:
    """95 % interval of one patient's advantage from its bootstrap refits' advantages
    (:data:`ADVANTAGE_INTERVAL`)."""
    if ADVANTAGE_INTERVAL == "percentile":
        return _interval(*np.percentile(boot, [2.5, 97.5]))
    half = _t975(boot.size - 1) * float(boot.std(ddof=1))
    return _interval(advantage - half, advantage + half)


@lru_cache(maxsize=8)
def _t975(df: int) -> float:
    """The t distribution's 97.5 % quantile (one per batch of patients, not per patient)."""
    return float(stats.t.ppf(0.975, df))


def _interval(lo: float, hi: float) -> list[float]:
    """An interval whose ends are in order (a swapped pair is a bug upstream, fixed here)."""
    a, b = float(lo), float(hi)
    return [a, b] if a <= b else [b, a]


def recommend(
    model_path: str | Path,
    input: str | Path | pd.DataFrame,
    out_dir: str | Path | None = None,
    *,
    clinical: str | Path | pd.DataFrame | None = None,
    derivatives: str | Path | None = None,
    participant: list[str] | None = None,
    trust_model: bool = False,
) -> RecommendResult:
    """Predict every arm's outcome for new patients and recommend the best.

    Parameters
    ----------
    model_path : path
        ``model.npz`` written by :func:`brainmatch.selection.train`.
    input : path or DataFrame
        A feature table (one or many patients; Parquet, TSV, CSV) or a BIDS / fMRIPrep
        folder (features are then extracted with the model's own options).
    out_dir : path, optional
        Receives ``recommend.json`` and ``recommend.tsv`` (``report.html``:
        :func:`brainmatch.reports.selection.write_recommend_report`).
    clinical : path or DataFrame, optional
        Table with the covariates / baseline / site the model needs, when they are not
        columns of ``input``.
    derivatives : path, optional
        fMRIPrep folder when ``input`` is a BIDS folder (default
        ``input/derivatives/fmriprep``).
    participant : list of str, optional
        Participants of a BIDS ``input`` to extract (default: all).
    trust_model : bool
        Load an unsigned model, or one signed with another key, with a warning
        (see :mod:`brainmatch.selection.modelfile`).

    Returns
    -------
    RecommendResult
    """
    arrays, meta = load_model(model_path, trust=trust_model)
    arms: list[str] = meta["arms"]
    names: list[str] = meta["feature_names"]
    opts = meta["options"]
    sign = 1.0 if meta["better"] == "higher" else -1.0
    out = Path(out_dir) if out_dir is not None else None
    if isinstance(input, (str, Path)) and Path(input).is_dir():
        if out is None:
            raise BrainmatchInputError("a BIDS INPUT needs an output folder for its features")
        table = _extract_bids(
            meta, Path(input), out, None if derivatives is None else Path(derivatives), participant
        )
        tname = str(input)
    else:
        table, tname = read_table(input, "features")
    table = one_row_per_participant(table, tname, None)
    if clinical is not None:
        ctab, cname = read_table(clinical, "clinical")
        ctab = one_row_per_participant(ctab, cname, None)
        missing_ids = sorted(set(table[ID]) - set(ctab[ID]))
        if missing_ids:
            raise BrainmatchInputError(
                f"{len(missing_ids)} patient(s) have no row in the clinical table: "
                f"{', '.join(missing_ids[:10])}",
                cname,
            )
        ctab = ctab[[c for c in ctab.columns if c == ID or c not in table.columns]]
        table = table.merge(ctab, on=ID, how="left")
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise BrainmatchInputError(
            f"{len(missing)} of the model's {len(names)} features are not in the table: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} (extract features "
            "with the same atlas and options as the training data)",
            tname,
        )
    Xdf = table[names].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in names if (Xdf[c].isna() & table[c].notna()).any()]
    if bad:
        raise BrainmatchInputError(
            f"non-numeric values in feature(s): {', '.join(bad[:10])}", tname
        )
    X = Xdf.to_numpy(dtype=float)
    huge = np.isinf(X) | (np.nan_to_num(np.abs(X)) > MAX_ABS_VALUE)
    if huge.any():
        cols = [names[j] for j in np.flatnonzero(huge.any(axis=0))]
        raise BrainmatchInputError(
            f"feature value(s) that are infinite or larger than {MAX_ABS_VALUE:g} in "
            f"column(s) {', '.join(cols[:10])}: rescale them as in the training data",
            tname,
        )
    cov_names = [item["name"] for item in meta["covariate_spec"]]
    missing_cov = [c for c in cov_names if c not in table.columns]
    if missing_cov:
        raise BrainmatchInputError(
            f"the model needs column(s) {', '.join(missing_cov)} (baseline / covariates); add "
            "them to the table or pass clinical= a table that has them",
            tname,
        )
    cov = table[cov_names]
    site_col = opts.get("site_column")
    if meta["harmonize"]:
        if site_col and site_col in table.columns:
            sites = table[site_col].astype(str).fillna("unknown").to_numpy()
        else:
            sites = np.array(["unknown"] * len(table))
    else:
        sites = None
    pre = preprocessor_from_model(arrays, meta)
    Z, C = pre.transform(X, cov, sites)
    link = str(meta.get("link", "identity-clipped" if meta["binary"] else "identity"))
    spec, boot_specs = spec_from_arrays(
        arrays, link, lambda m: BrainmatchInputError(f"implausible model file: {m}", model_path)
    )
    comps = spec["components"]
    G = None if comps is None else comps.evaluate(np.column_stack([Z, C]))
    pred = predict_exported(Z, C, spec, G)
    # non-finite predictions are refused; out-of-range ones get a caveat (and are clipped)
    range_caveats = check_predictions(pred, meta, table[ID].astype(str).tolist(), model_path)
    boots = np.stack([predict_exported(Z, C, b, G) for b in boot_specs])
    occlusion = None if comps is None else _occlusion(Z, C, spec, arms)
    lo_y, hi_y = meta.get("outcome_range", [-np.inf, np.inf])
    if meta["binary"]:
        lo_y, hi_y = 0.0, 1.0
    # a TreatmentSelector.save file stores the final model as its only "refit": no interval
    has_refits = meta.get("bootstrap_refits") != 0
    raw_pred = pred.copy()
    pred = np.clip(pred, lo_y, hi_y)
    boots = np.clip(boots, lo_y, hi_y)
    supported, model_reasons = validation_supports_selection(meta["validation"]["selection"])
    site_status = (
        pre.combat_.site_status(sites) if pre.combat_ is not None and sites is not None else {}
    )
    ood = meta["ood"]
    score = (Z**2).mean(axis=1)
    validation = meta["validation"]
    half = meta["conformal"]["half_width"]
    threshold = float(meta["threshold"])
    coef = arrays["coef"]
    labels = [readable_feature_name(n) for n in names]
    patients = []
    for i, pid in enumerate(table[ID].astype(str)):
        u = sign * pred[i]
        order = np.argsort(-u, kind="stable")
        best, nxt = int(order[0]), int(order[1])
        advantage = float(u[best] - u[nxt])
        agree: float | None = None
        adv_ci: list[float] | None = None
        if has_refits:
            ub = sign * boots[:, i, :]
            agree = float((ub.argmax(axis=1) == best).mean())
            adv_boot = ub[:, best] - np.delete(ub, best, axis=1).max(axis=1)
            adv_ci = _advantage_interval(advantage, adv_boot)
        # what drove the choice: feature contributions to the advantage (linear predictor)
        # the logistic model's linear predictor is in log-odds: its decomposition is too
        logodds = link == "logit" and occlusion is None
        if occlusion is None:
            contrib = sign * Z[i] * (coef[best] - coef[nxt])
            from_features = float(contrib.sum())
        else:  # non-linear: one feature at a time set to the training mean (Z = 0)
            contrib, from_features = occlusion(i, best, nxt, sign)
        if logodds:
            q = np.clip(raw_pred[i, [best, nxt]], 1e-12, 1 - 1e-12)
            lo_odds = np.log(q / (1 - q))
            total = float(sign * (lo_odds[0] - lo_odds[1]))
            # the threshold (a probability difference) in log-odds at p = 0.5: 4 x
            floor_unit = 4.0 * threshold
        else:
            total = advantage
            floor_unit = threshold
        from_average = total - from_features
        material_floor = max(0.1 * floor_unit, 0.05 * float(np.abs(contrib).sum()))
        top = [
            j for j in np.argsort(-np.abs(contrib))[:N_DRIVERS] if abs(contrib[j]) >= material_floor
        ]
        caveats = list(range_caveats[i])
        clipped = [arms[a] for a in range(len(arms)) if not np.isclose(raw_pred[i, a], pred[i, a])]
        if clipped:
            caveats.append(
                f"the prediction under {', '.join(clipped)} fell outside the outcome range seen "
                f"in training [{lo_y:g}, {hi_y:g}] and was clipped to it"
            )
        n_imputed = int(np.isnan(X[i]).sum())
        if n_imputed:
            caveats.append(
                f"{n_imputed} missing feature value(s) were replaced by the training median"
            )
        if score[i] > ood["p99"]:
            caveats.append(
                f"this patient lies outside the training distribution (feature distance "
                f"{score[i]:.2f} above the 99th percentile of training patients, {ood['p99']:.2f}):"
                " predictions are extrapolations"
            )
        for item in meta["covariate_spec"]:
            if item["kind"] == "numeric":
                v = pd.to_numeric(pd.Series([table[item["name"]].iloc[i]]), errors="coerce")[0]
                if pd.notna(v) and not (item["min"] <= v <= item["max"]):
                    caveats.append(
                        f"{item['name']} = {v:g} is outside the training range "
                        f"[{item['min']:g}, {item['max']:g}]"
                    )
            if pd.isna(table[item["name"]].iloc[i]):
                caveats.append(f"{item['name']} is missing and was imputed")
        if sites is not None:
            status = site_status.get(str(sites[i]))
            if status == "unadjusted":
                caveats.append(
                    f"site {sites[i]!r} was not in the training data and too few of its patients "
                    "are in this batch to estimate its scanner effects: features are not "
                    "harmonised, predictions may be shifted"
                )
            elif status == "estimated":
                caveats.append(
                    f"site {sites[i]!r} was not in the training data; its scanner "
                    "effects were estimated from this batch's patients"
                )
        if agree is not None and agree < 0.8:
            caveats.append(
                f"the recommendation is unstable: only {100 * agree:.0f}% of "
                "bootstrap refits of the model agree"
            )
        if advantage < threshold:
            caveats.append(
                f"the predicted advantage ({advantage:.2f}) is below the clinical "
                f"threshold ({threshold:g}): the arms are predicted to be about equal"
            )
        reasons = list(model_reasons)
        if adv_ci is None:
            reasons.append(
                "the model file holds no bootstrap refits, so this patient's advantage has no "
                "interval"
            )
        elif adv_ci[0] <= 0:
            reasons.append(
                f"this patient's 95% advantage interval ({adv_ci[0]:.2f} to {adv_ci[1]:.2f}, "
                "from the bootstrap refits) includes 0"
            )
        extrapolated = [arms[a] for a in (best, nxt) if arms[a] in clipped]
        if extrapolated:
            # a clipped prediction (and its refits, clipped to the same bound) would give a
            # collapsed interval: a false certainty, not evidence
            reasons.append(
                f"the prediction under {', '.join(extrapolated)} lies outside the outcome range "
                "seen in training: an extrapolation, so no preference is reported"
            )
        reliable = not reasons
        caveats.extend(r for r in reasons if r not in caveats)
        statement = (
            f"recommended: {arms[best]}"
            + (
                ""
                if advantage >= threshold
                else f" (a small advantage: {advantage:.2f}, below the clinical threshold "
                f"{threshold:g})"
            )
            if reliable
            else f"no reliable preference between {arms[best]} and {arms[nxt]}"
        )
        predicted = {}
        for a, arm in enumerate(arms):
            hw = half.get(arm)
            value = float(pred[i, a])
            interval = None
            if hw is not None:
                interval = _interval(max(value - hw, lo_y), min(value + hw, hi_y))
                interval = [min(interval[0], value), max(interval[1], value)]
            predicted[arm] = {"value": value, "interval": interval}
        patients.append(
            {
                "participant_id": pid,
                "predicted": predicted,
                "interval_level": meta["conformal"]["level"],
                "recommended": arms[best],
                "next_best": arms[nxt],
                "reliable_preference": reliable,
                "statement": statement,
                "no_preference_reasons": reasons,
                "advantage": advantage,
                "advantage_interval": adv_ci,
                "advantage_interval_level": 0.95,
                "advantage_from_features": from_features,
                "advantage_from_arm_average": from_average,
                "advantage_decomposition_scale": "log-odds" if logodds else "outcome",
                "bootstrap_agreement": agree,
                "above_threshold": advantage >= threshold,
                "drivers": [
                    {
                        "feature": names[j],
                        "label": labels[j],
                        "value": float(X[i, j]),
                        "standardised": float(Z[i, j]),
                        "contribution": float(contrib[j]),
                    }
                    for j in top
                ],
                "drivers_note": _drivers_note(
                    bool(top),
                    material_floor,
                    logodds,
                    occlusion is not None,
                    from_features,
                    from_average,
                ),
                "ood_score": float(score[i]),
                "site_status": None if sites is None else site_status.get(str(sites[i])),
                "caveats": caveats,
            }
        )
    model_summary = {
        "path": str(model_path),
        "brainmatch_version": meta["brainmatch_version"],
        "arms": arms,
        "better": meta["better"],
        "threshold": threshold,
        "outcome": opts["outcome_column"],
        "model": meta["model"],
        "model_chosen": meta.get("model_chosen", meta["model"]),
        "site_harmonisation": bool(meta["harmonize"]),
        "selection_supported": supported,
        "validation": validation,
        "training_data_hash": meta["training_data_hash"],
    }
    result = RecommendResult(
        out_dir=out or Path("."),
        patients=patients,
        model=model_summary,
        extras={"coef": coef, "feature_names": names},
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recommend.json", {"model": model_summary, "patients": patients})
        rows = []
        for p in patients:
            row: dict[str, Any] = {ID: p["participant_id"]}
            for arm in arms:
                row[f"predicted__{arm}"] = p["predicted"][arm]["value"]
            row.update(
                recommended=p["recommended"],
                reliable_preference=p["reliable_preference"],
                statement=p["statement"],
                advantage=p["advantage"],
                bootstrap_agreement=p["bootstrap_agreement"],
                n_caveats=len(p["caveats"]),
            )
            rows.append(row)
        write_tsv(out / "recommend.tsv", pd.DataFrame(rows), float_format="%.6g")
    return result
