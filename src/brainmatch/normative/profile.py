"""A patient's profile: circuit deviations against the norm, the modalities whose reported
targets match them (hypotheses), and, when a trained selection model is given, its
validated predictions, kept apart (``brainmatch profile``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch._io import json_safe, write_json, write_tsv
from brainmatch.errors import BrainmatchError, BrainmatchInputError
from brainmatch.normative.analysis import (
    ID,
    _prepare_out,
    load_normative_model,
    merge_covariates,
    read_table,
    score_normative,
)
from brainmatch.normative.model import EXTREME_Z, NormativeModel

_MARKER = ".brainmatch-profile"
N_REGIONS = 10
#: Fewer controls than this: the profile warns that the norm is imprecise.
SMALL_NORM = 100


#: JSON-safe copy: the one cleaner, :func:`brainmatch._io.json_safe`.
_clean = json_safe


@dataclass
class PatientProfile:
    """One patient's profile.

    Attributes
    ----------
    participant_id : str
    circuits : DataFrame
        This patient's circuit scores (all circuits and measures).
    regions : list of dict
        The most deviant features, in words, with z.
    hypotheses : list of dict
        Circuit deviations matched to modalities' reported targets / published predictors
        (:func:`brainmatch.modalities.circuit_hypotheses`): hypothesis-generating only.
    selection : dict or None
        The trained selection model's prediction for this patient (validated performance,
        predicted outcomes, recommendation, caveats), when a model was given.
    person : dict
        Site status, extrapolation, counts of extreme deviations.
    warnings : list of str
    model : dict
        Summary of the normative model (controls, sites, held-out calibration).
    knowledge_base_version : str
    """

    participant_id: str
    circuits: pd.DataFrame
    regions: list[dict[str, Any]]
    hypotheses: list[dict[str, Any]]
    selection: dict[str, Any] | None
    person: dict[str, Any]
    warnings: list[str]
    model: dict[str, Any]
    knowledge_base_version: str
    deviations: pd.DataFrame = field(default_factory=pd.DataFrame)
    threshold: float = 1.0
    report_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the full deviation row, as plain JSON."""
        return _clean(
            {
                "participant_id": self.participant_id,
                "person": self.person,
                "threshold": self.threshold,
                "circuits": json.loads(self.circuits.to_json(orient="records")),
                "most_deviant": self.regions,
                "hypotheses": self.hypotheses,
                "hypotheses_note": "circuit-modality matches are hypotheses from published "
                "reports of what each treatment acts on; they are not validated predictions "
                "of response",
                "selection_model": self.selection,
                "warnings": self.warnings,
                "normative_model": self.model,
                "knowledge_base_version": self.knowledge_base_version,
            }
        )

    def save(self, out_dir: str | Path) -> Path:
        """Write ``profile.json``, ``circuits.tsv`` and ``deviations.tsv`` (``report.html``:
        :func:`brainmatch.reports.normative.write_profile_report`)."""
        out = Path(out_dir)
        names = ("profile.json", "circuits.tsv", "deviations.tsv", "report.html")
        _prepare_out(out, _MARKER, names)
        write_json(out / "profile.json", self.to_dict())
        write_tsv(out / "circuits.tsv", self.circuits, float_format="%.6g")
        write_tsv(out / "deviations.tsv", self.deviations, float_format="%.6g")
        return out

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{h['circuit_label']}</td><td>{h['call']}</td><td>{h['mean_z']:.2f}</td>"
            f"<td>{h['modality_label']}</td><td>{h['grade']}</td></tr>"
            for h in self.hypotheses[:10]
        )
        return (
            f"<b>Profile of {self.participant_id}</b> (hypotheses, not validated predictions)"
            f"<table><tr><th>circuit</th><th>deviation</th><th>z</th><th>modality</th>"
            f"<th>grade</th></tr>{rows}</table>"
        )


def _feature_provenance(model_meta: dict[str, Any]) -> dict[str, Any]:
    prov = (model_meta.get("summary") or {}).get("feature_provenance") or {}
    return prov if isinstance(prov, dict) else {}


def _extract_subject(bids: Path, participant: str, out: Path, meta: dict[str, Any]) -> pd.DataFrame:
    """Extract a BIDS subject's features with the options the controls' features used."""
    prov = _feature_provenance(meta)
    options = prov.get("options") or {}
    atlas = options.get("atlas") or (prov.get("atlas") or {}).get("name")
    if not atlas:
        raise BrainmatchInputError(
            "the normative model does not record how its features were extracted (its controls' "
            "table had no brainmatch extract features.json beside it); pass a feature table",
            bids,
        )
    from brainmatch.features import extract_dataset

    kwargs: dict[str, Any] = {"atlas": atlas}
    clean = options.get("clean") or {}
    for key in ("denoise", "standardize", "detrend", "low_pass", "high_pass", "fd_threshold"):
        if key in clean:
            kwargs[key] = clean[key]
    if options.get("connectivity"):
        kwargs["connectivity"] = tuple(options["connectivity"])
    deriv = bids / "derivatives" / "fmriprep"
    freesurfer = bids / "derivatives" / "freesurfer"
    result = extract_dataset(
        bids,
        out / "features",
        derivatives=deriv,
        freesurfer=freesurfer if options.get("freesurfer") and freesurfer.is_dir() else None,
        participant_label=[participant],
        **kwargs,
    )
    if result.features_path is None:
        raise BrainmatchInputError(
            f"feature extraction failed for {participant} (see {result.failures_path})", bids
        )
    table = pd.read_parquet(result.features_path)
    participants = bids / "participants.tsv"
    if participants.is_file():
        extra = pd.read_csv(participants, sep="\t", na_values=["n/a"])
        extra = extra[[c for c in extra.columns if c == ID or c not in table.columns]]
        table = table.merge(extra, on=ID, how="left")
    return table


def build_profile(
    model: str | Path | NormativeModel,
    patient: str | Path | pd.DataFrame,
    *,
    participant: str | None = None,
    covariates: str | Path | pd.DataFrame | None = None,
    selection_model: str | Path | None = None,
    threshold: float = 1.0,
    out_dir: str | Path | None = None,
) -> PatientProfile:
    """Build one patient's profile (see the module docstring).

    Parameters
    ----------
    model : path or NormativeModel
        ``normative_model.npz`` (``brainmatch normative fit``).
    patient : path or DataFrame
        A feature table (one or more rows; pick one with ``participant``) or a BIDS
        folder with fMRIPrep derivatives (needs ``participant``; features are extracted
        with the options the controls' features were extracted with).
    participant : str, optional
        ``participant_id`` to profile (default: the table's only row).
    covariates : path or DataFrame, optional
        Age / sex / site when ``patient`` lacks them.
    selection_model : path, optional
        ``model.npz`` of ``brainmatch train``: its validated prediction is added, apart.
    threshold : float
        |mean z| at which a circuit is called under- / over-active.
    out_dir : path, optional
        Write the profile there.

    Returns
    -------
    PatientProfile
    """
    from brainmatch.circuits import feature_label
    from brainmatch.modalities import circuit_hypotheses, load_knowledge_base

    meta: dict[str, Any]
    if isinstance(model, NormativeModel):
        nm, meta = model, {"summary": {}}
        metrics = pd.DataFrame()
    else:
        nm, metrics, meta = load_normative_model(model)
    if isinstance(patient, (str, Path)) and Path(patient).is_dir():
        if participant is None:
            raise BrainmatchInputError(
                "a BIDS PATIENT folder needs --participant-label", Path(patient)
            )
        if out_dir is None:
            raise BrainmatchInputError("a BIDS PATIENT folder needs an output folder")
        pid = participant if participant.startswith("sub-") else f"sub-{participant}"
        _prepare_out(Path(out_dir), _MARKER, ())
        table = _extract_subject(Path(patient), pid.removeprefix("sub-"), Path(out_dir), meta)
        tname = str(patient)
        participant = pid
    else:
        table, tname = read_table(patient, "patient features")
    table = merge_covariates(table, tname, covariates)
    if participant is not None:
        pid = participant if participant in set(table[ID]) else f"sub-{participant}"
        rows = table[table[ID] == pid]
        if rows.empty:
            raise BrainmatchInputError(f"participant {participant!r} is not in the table", tname)
    else:
        if len(table) != 1:
            raise BrainmatchInputError(
                f"the table has {len(table)} participants; choose one with --participant-label",
                tname,
            )
        rows = table
    row = rows.reset_index(drop=True)
    pid = str(row[ID].iloc[0])
    scores = score_normative(nm, row, threshold=threshold)
    warnings = list(scores.warnings)
    fit_summary = meta.get("summary") or {}
    cal = fit_summary.get("calibration") or {}
    if not cal:
        warnings.append(
            "the normative model's calibration on held-out controls is unknown (fitted without "
            "a hold-out): deviations are not validated"
        )
    n_controls = fit_summary.get("n_controls", getattr(nm, "n_controls_", None))
    if n_controls is not None and n_controls < SMALL_NORM:
        warnings.append(
            f"the norm rests on only {n_controls} controls: each feature's mean and spread are "
            "imprecise, so large |z| are common by chance; treat this profile as illustrative"
        )
    z = scores.deviations.drop(columns=[ID]).iloc[0]
    order = z.abs().sort_values(ascending=False).index[:N_REGIONS]
    regions = [
        {
            "label": feature_label(c),
            "z": float(z[c]),
            "extreme": bool(abs(z[c]) > EXTREME_Z),
        }
        for c in order
        if np.isfinite(z[c])
    ]
    kb = load_knowledge_base()
    hypotheses = circuit_hypotheses(scores.circuits, kb)
    selection = None
    if selection_model is not None:
        selection = _selection(selection_model, row, warnings)
    person = _clean(scores.people.iloc[0].to_dict())
    summary = {
        "controls": fit_summary.get("n_controls", getattr(nm, "n_controls_", None)),
        "sites": fit_summary.get("sites", nm.design_.sites),
        "covariates": list(nm.covariates),
        "features": len(nm.feature_names_),
        "calibration": cal,
        "path": None if isinstance(model, NormativeModel) else str(model),
        "median_explained_variance": float(np.nanmedian(metrics["explained_variance"]))
        if "explained_variance" in metrics
        else None,
    }
    profile = PatientProfile(
        participant_id=pid,
        circuits=scores.circuits,
        regions=regions,
        hypotheses=hypotheses,
        selection=selection,
        person=person,
        warnings=warnings,
        model=_clean(summary),
        knowledge_base_version=kb.version,
        deviations=scores.deviations,
        threshold=threshold,
    )
    if out_dir is not None:
        profile.save(out_dir)
    return profile


def _selection(path: str | Path, row: pd.DataFrame, warnings: list[str]) -> dict[str, Any] | None:
    """The selection model's prediction for this patient (one call to its public API)."""
    from brainmatch.selection import recommend

    try:
        rec = recommend(path, row, None)
    except BrainmatchError as exc:
        warnings.append(f"the selection model could not be applied: {exc}")
        return None
    p = rec.patients[0]
    validation = rec.model.get("validation") or {}
    return _clean(
        {
            "path": str(path),
            "arms": rec.model.get("arms"),
            "outcome": rec.model.get("outcome"),
            "better": rec.model.get("better"),
            "predicted": p.get("predicted"),
            "interval_level": p.get("interval_level"),
            "recommended": p.get("recommended"),
            "next_best": p.get("next_best"),
            "reliable_preference": bool(p.get("reliable_preference")),
            "statement": p.get("statement"),
            "no_preference_reasons": p.get("no_preference_reasons") or [],
            "advantage": p.get("advantage"),
            "advantage_interval": p.get("advantage_interval"),
            "advantage_interval_level": p.get("advantage_interval_level"),
            "caveats": p.get("caveats"),
            "validation": {
                k: validation.get("selection", {}).get(k)
                for k in ("benefit_d", "policy_gain", "policy_gain_ci", "permutation_p")
            },
        }
    )
