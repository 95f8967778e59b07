"""The one place where the web service calls brainmatch's analysis API.

Everything the service needs from the treatment-selection code (checking a model file,
recommending for one patient, training on a trial) goes through these functions, so that
when the Python API changes only this module changes:

- issue 11 (``TreatmentSelector`` / ``validate`` / honest per-patient output): replace
  :func:`recommend_patient` and :func:`train_model` bodies with the estimator and result
  objects, and take the "no reliable preference" decision from the result instead of
  :func:`headline`;
- issue 12 (keyed model signatures): :func:`verify_model_file` calls the signature check
  (and its plausibility checks) instead of today's SHA-256 content check;
- issue 13 (normative models, patient profile): :func:`verify_normative_file` checks a
  normative model file (signed like selection models), :func:`normative_references` lists
  the deployed ones and :func:`build_patient_profile` writes the patient's profile.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from brainmatch.errors import BrainmatchInputError

Progress = Callable[[int, int], None]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model_file(path: Path) -> dict[str, Any]:
    """Load a model file with every integrity check and summarise it for the pages.

    Raises
    ------
    BrainmatchInputError
        Not a model file, tampered with, or from a newer brainmatch.
    """
    from brainmatch.selection.modelfile import load_model

    _, meta = load_model(path)
    validation = meta.get("validation") or {}
    sel = validation.get("selection") or {}
    opts = meta.get("options") or {}
    return {
        "arms": list(meta["arms"]),
        "outcome": opts.get("outcome_column"),
        "better": meta.get("better"),
        "n": validation.get("n"),
        "cv": validation.get("cv"),
        "permutation_p": sel.get("permutation_p"),
        "policy_gain": sel.get("policy_gain"),
        "policy_gain_ci": sel.get("policy_gain_ci"),
        "benefit_d": sel.get("benefit_d"),
        "n_features": len(meta.get("feature_names") or []),
        "needs": [c["name"] for c in meta.get("covariate_spec") or []],
        "site_column": opts.get("site_column"),
        "warnings": list(validation.get("warnings") or []),
        "brainmatch_version": meta.get("brainmatch_version"),
        "from_images": bool((meta.get("feature_provenance") or {}).get("sidecar")),
    }


def verify_normative_file(path: Path) -> dict[str, Any]:
    """Load a normative model file with every integrity check and summarise it.

    The same bounded reading, content hash and keyed signature as selection models
    (:func:`brainmatch.normative.load_normative_model` with ``trust=False``).

    Raises
    ------
    BrainmatchInputError
        Not a normative model file, tampered with, unsigned / foreign key, or newer.
    """
    from brainmatch.normative import load_normative_model

    model, metrics, meta = load_normative_model(path, trust=False)
    fit = meta.get("summary") or {}
    cal = fit.get("calibration") or {}
    ev = metrics["explained_variance"] if "explained_variance" in metrics else None
    return {
        "arms": [],  # a normative reference recommends nothing
        "n_controls": fit.get("n_controls", getattr(model, "n_controls_", None)),
        "sites": list(fit.get("sites") or []),
        "covariates": list(model.covariates),
        "n_features": len(model.feature_names_),
        "calibrated": bool(cal),
        "median_explained_variance": None
        if ev is None or not len(ev)
        else float(np.nanmedian(ev.to_numpy(float))),
        "warnings": list(meta.get("warnings") or []),
        "brainmatch_version": meta.get("brainmatch_version"),
    }


def verify_any_model_file(path: Path) -> tuple[str, dict[str, Any]]:
    """Fully check a model file of either kind; returns ``(kind, summary)``.

    A file that does not declare the treatment-selection format is checked as a
    normative model; the message of a file that is neither names both.
    """
    try:
        return "selection", verify_model_file(path)
    except BrainmatchInputError as exc:
        if "not a brainmatch treatment-selection model" not in str(exc):
            raise
    try:
        return "normative", verify_normative_file(path)
    except BrainmatchInputError as exc:
        if "not a brainmatch normative model" not in str(exc):
            raise
    raise BrainmatchInputError(
        "not a brainmatch treatment-selection or normative model", path
    ) from None


def normative_references() -> list[dict[str, Any]]:
    """Deployed (not withdrawn) normative references, newest first, for the pages."""
    from brainmatch.web.models import DeployedModel

    return [
        {"id": str(m.pk), "name": m.name, "summary": m.summary}
        for m in DeployedModel.objects.filter(deployed=True, kind="normative")
    ]


def build_patient_profile(
    normative_path: Path,
    input_path: Path,
    out_dir: Path,
    *,
    clinical: Path | None = None,
    participant: str | None = None,
    selection_path: Path | None = None,
    normative_name: str | None = None,
    selection_name: str | None = None,
    chromium: str | None = None,
) -> dict[str, Any]:
    """Build the patient's profile against a normative reference; writes ``out_dir``.

    The profile (:func:`brainmatch.normative.profile.build_profile`) puts the patient's
    circuits against the norm and the circuit-modality hypotheses apart from the
    validated selection model's prediction (``selection_path``).  Server paths in the
    written files are replaced by the deployed models' names.  With ``chromium`` the
    report is also printed to ``report.pdf``.

    Returns
    -------
    dict
        What the page shows: ``participant_id``, ``calls`` (circuits called under- /
        over-active), ``hypotheses``, ``n_hypotheses``, ``selection`` (or None),
        ``person``, ``warnings``, ``normative_model`` and ``files``.
    """
    from brainmatch.normative.profile import build_profile
    from brainmatch.reports.normative import write_profile_report
    from brainmatch.reports.qc import write_reportlets

    verify_normative_file(normative_path)
    if selection_path is not None:
        verify_model_file(selection_path)
    profile = build_profile(
        normative_path,
        input_path,
        participant=participant,
        covariates=clinical,
        selection_model=selection_path,
        out_dir=out_dir if input_path.is_dir() else None,
    )
    profile.model["path"] = normative_name or "deployed normative reference"
    if profile.selection is not None:
        profile.selection["path"] = selection_name or "deployed model"
    profile.warnings = [
        w.replace(str(selection_path), selection_name or "deployed model") if selection_path else w
        for w in profile.warnings
    ]
    profile.save(out_dir)
    write_profile_report(profile, out_dir / "report.html")
    write_reportlets(out_dir / "features")  # QC of a BIDS upload's extraction, if any
    d = profile.to_dict()
    files = {"html": "report.html"}
    if chromium and html_to_pdf(out_dir / "report.html", out_dir / "report.pdf", chromium):
        files["pdf"] = "report.pdf"
    calls = [c for c in d["circuits"] if c.get("call")]
    return {
        "participant_id": d["participant_id"],
        "threshold": d["threshold"],
        "calls": calls,
        "hypotheses": d["hypotheses"],
        "n_hypotheses": len(d["hypotheses"]),
        "hypotheses_note": d["hypotheses_note"],
        "most_deviant": d["most_deviant"],
        "selection": d["selection_model"],
        "person": d["person"],
        "warnings": d["warnings"],
        "normative_model": d["normative_model"],
        "knowledge_base_version": d["knowledge_base_version"],
        "files": files,
    }


def headline(patient: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """What the page leads with: a preference only when validation and the patient allow.

    A bold pick is shown only when :func:`brainmatch.selection.recommend` judged the
    preference reliable (its ``reliable_preference`` and ``no_preference_reasons``: the
    model beat chance in validation, the validated policy gain's 95% CI excludes 0, not
    one arm for everyone, the patient's advantage interval excludes 0, no extrapolated
    prediction); otherwise "no reliable preference", with the reasons.  Records written
    before those keys existed are judged from the validation and the interval alone.
    """
    rec, other = patient["recommended"], patient["next_best"]
    if "reliable_preference" in patient:
        if patient["reliable_preference"]:
            return {"pick": rec, "text": f"The model favours {rec} over {other}", "reasons": []}
        return {
            "pick": None,
            "text": f"No reliable preference between {rec} and {other}",
            "reasons": list(patient.get("no_preference_reasons") or []),
        }
    sel = (model.get("validation") or {}).get("selection") or {}
    reasons = []
    p = sel.get("permutation_p")
    if p is None or p >= 0.05:
        reasons.append(
            f"in validation the model's recommendations did not beat chance (permutation "
            f"p = {'n/a' if p is None else format(p, '.3g')})"
        )
    ci = sel.get("policy_gain_ci")
    if not ci or ci[0] is None or ci[0] <= 0:
        reasons.append("the validated gain from following the model has a 95% CI including 0")
    adv = patient.get("advantage_interval") or [None, None]
    if adv[0] is None or adv[0] <= 0:
        reasons.append("this patient's advantage interval includes 0")
    if reasons:
        return {
            "pick": None,
            "text": f"No reliable preference between {rec} and {other}",
            "reasons": reasons,
        }
    return {"pick": rec, "text": f"The model favours {rec} over {other}", "reasons": []}


def recommend_patient(
    model_path: Path,
    input_path: Path,
    out_dir: Path,
    *,
    clinical: Path | None = None,
    participant: str | None = None,
    chromium: str | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Recommend for one patient; writes ``report.html`` (and ``report.pdf``) in ``out_dir``.

    Parameters
    ----------
    model_path : Path
        A verified model file.
    input_path : Path
        The patient's feature table, or a BIDS folder laid out by
        :func:`brainmatch.web.uploads.arrange_subject`.
    clinical : Path, optional
        Table with the covariates / baseline / site the model needs.
    participant : str, optional
        The participant of a BIDS ``input_path``.
    chromium : str, optional
        Browser that prints the report to PDF.
    model_name : str, optional
        Shown in the report instead of the model file's path on the server.

    Returns
    -------
    dict
        ``patient`` (one entry of ``recommend.json``), ``model`` (its summary),
        ``headline`` and the written file names.
    """
    from brainmatch.reports.qc import write_reportlets
    from brainmatch.reports.selection import write_recommend_report
    from brainmatch.selection import recommend

    verify_model_file(model_path)
    result = recommend(
        model_path,
        input_path,
        out_dir,
        clinical=clinical,
        participant=[participant] if participant and input_path.is_dir() else None,
    )
    if len(result.patients) != 1:
        raise BrainmatchInputError(f"expected one patient, got {len(result.patients)}")
    result.model["path"] = model_name or "deployed model"  # not the server's file path
    write_recommend_report(result)
    write_reportlets(out_dir / "features")  # QC of a BIDS upload's extraction, if any
    patient = result.patients[0]
    model = dict(result.model)
    model.pop("path", None)  # a server path, not for the page
    files = {"html": "report.html"}
    if chromium and html_to_pdf(out_dir / "report.html", out_dir / "report.pdf", chromium):
        files["pdf"] = "report.pdf"
    return {
        "patient": patient,
        "model": model,
        "headline": headline(patient, model),
        "files": files,
    }


def train_model(
    features: Path,
    outcomes: Path,
    out_dir: Path,
    params: dict[str, Any],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train and validate on a researcher's trial; returns the aggregate summary.

    ``params`` holds :func:`brainmatch.selection.train` keyword arguments chosen on the
    form (columns, model, repeats, permutations).
    """
    from brainmatch.reports.selection import write_train_report
    from brainmatch.selection import train

    allowed = {
        "treatment_column", "outcome_column", "baseline_column", "site_column", "covariates",
        "model", "n_repeats", "n_permutations", "n_boot", "seed", "cv", "learning_curve",
    }  # fmt: skip
    kwargs = {k: v for k, v in params.items() if k in allowed and v not in (None, "")}
    kwargs["covariates"] = tuple(kwargs.get("covariates") or ())
    result = train(features, outcomes, out_dir=out_dir, progress=progress, **kwargs)
    write_train_report(result)
    m = result.metrics
    sel = m.get("selection") or {}
    return {
        "n": m.get("n"),
        "arms": m.get("arms"),
        "per_arm": m.get("per_arm"),
        "selection": {
            k: sel.get(k)
            for k in (
                "benefit_d",
                "benefit_d_ci",
                "policy_gain",
                "policy_gain_ci",
                "permutation_p",
                "share_above_threshold",
            )
        },
        "warnings": list(m.get("warnings") or []),
        "elapsed_seconds": m.get("elapsed_seconds"),
        "model_file": result.model_path.name if result.model_path else None,
        "report": result.report_path.name if result.report_path else None,
    }


def html_to_pdf(html: Path, pdf: Path, chromium: str, timeout: float = 90) -> bool:
    """Print an HTML file to PDF with headless Chromium; False when it fails."""
    with tempfile.TemporaryDirectory(prefix="bm-chromium-") as profile:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            html.resolve().as_uri(),
        ]
        try:
            subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
    ok = pdf.is_file() and pdf.stat().st_size > 0 and pdf.read_bytes()[:5] == b"%PDF-"
    if not ok and pdf.exists():
        pdf.unlink()
    return ok


def copy_model(src: Path, dest: Path) -> None:
    """Copy a model file into the deployed-models folder."""
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(0o600)
