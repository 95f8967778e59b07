"""Clinician pages: upload a patient, follow the job, read and download the result."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from brainmatch.web import jobs
from brainmatch.web.audit import record
from brainmatch.web.forms import PatientUploadForm
from brainmatch.web.models import Job, Patient
from brainmatch.web.uploads import (
    TABLE_EXTENSIONS,
    UploadRefused,
    arrange_subject,
    check_type,
    extension,
    read_table,
    safe_extract_zip,
    save_upload,
    write_tsv,
)
from brainmatch.web.views.common import get_patient, role_required, visible_patients

clinician_only = role_required("clinician")


def _list(request: HttpRequest, form: PatientUploadForm, status: int = 200) -> HttpResponse:
    patients = visible_patients(request.user).select_related("owner", "study")
    rows = []
    for p in patients[:500]:
        job = p.jobs.order_by("-created_at").first()
        rows.append({"patient": p, "job": job, "mine": p.owner_id == request.user.pk})
    return render(
        request,
        "web/patients.html",
        {"form": form, "rows": rows, "has_models": form.fields["model"].queryset.exists()},
        status=status,
    )


@clinician_only
@require_GET
def patient_list(request: HttpRequest) -> HttpResponse:
    """The clinician's patients and the upload form."""
    record(request, "patient.list")
    return _list(request, PatientUploadForm(request.user))


def _one_row(table: pd.DataFrame, field: str) -> pd.DataFrame:
    if len(table) != 1:
        raise UploadRefused(f"{field}: one patient per upload, but the table has {len(table)} rows")
    return table


def _store_inputs(form: PatientUploadForm, folder: Path) -> tuple[str, str]:
    """Check and store the uploaded files; returns (pseudonym, kind)."""
    cfg = settings.BRAINMATCH
    features = form.cleaned_data["features"]
    clinical_upload = form.cleaned_data.get("clinical")
    expanded = 20 * cfg.max_table_bytes
    clinical = None
    if clinical_upload is not None:
        ext = extension(clinical_upload.name)
        if ext not in TABLE_EXTENSIONS:
            raise UploadRefused(f"clinical: expected a CSV, TSV or Parquet table, not {ext!r}")
        raw = save_upload(clinical_upload, folder / f"clinical-upload{ext}",
                          cfg.max_table_bytes, "clinical")  # fmt: skip
        clinical = _one_row(read_table(raw, ext, "clinical", expanded), "clinical")
        raw.unlink()
    ext = extension(features.name)
    if ext == ".zip":
        if clinical is None:
            raise UploadRefused(
                "clinical: a zipped subject needs the clinical table (participant_id and the "
                "model's baseline / covariates / site)"
            )
        pseudonym = str(clinical["participant_id"].iloc[0])
        raw = save_upload(features, folder / "subject.zip", cfg.max_upload_bytes, "features")
        check_type(raw, ".zip", "features")
        extracted = safe_extract_zip(
            raw, folder / "extracted", cfg.zip_max_total_bytes, cfg.zip_max_files, "features"
        )
        raw.unlink()
        arrange_subject(extracted, folder / "bids", pseudonym, "features")
        shutil.rmtree(extracted)
        write_tsv(clinical, folder / "bids" / "participants.tsv")
        return pseudonym, "zip"
    if ext not in TABLE_EXTENSIONS:
        raise UploadRefused(
            f"features: expected a CSV, TSV or Parquet row or a .zip subject folder, not "
            f"{ext or 'a file without extension'!r}"
        )
    raw = save_upload(features, folder / f"features-upload{ext}", cfg.max_table_bytes, "features")
    table = _one_row(read_table(raw, ext, "features", expanded), "features")
    raw.unlink()
    pseudonym = str(table["participant_id"].iloc[0])
    if clinical is not None:
        if str(clinical["participant_id"].iloc[0]) != pseudonym:
            raise UploadRefused("clinical: its participant_id differs from the features file's")
        write_tsv(clinical, folder / "clinical.tsv")
    write_tsv(table, folder / "features.tsv")
    return pseudonym, "table"


@clinician_only
@require_POST
def patient_create(request: HttpRequest) -> HttpResponse:
    """Store an uploaded patient and queue the recommendation job."""
    form = PatientUploadForm(request.user, request.POST, request.FILES)
    if not form.is_valid():
        return _list(request, form, status=400)
    storage = secrets.token_hex(16)
    root = Path(settings.BRAINMATCH.data_dir) / "patients" / storage
    try:
        pseudonym, kind = _store_inputs(form, root / "input")
    except UploadRefused as exc:
        shutil.rmtree(root, ignore_errors=True)
        record(request, "patient.refused", outcome="refused", detail=exc.reason[:300])
        form.add_error(None, exc.reason)
        return _list(request, form, status=400)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    patient = Patient.objects.create(
        pseudonym=pseudonym,
        owner=request.user,
        study=form.cleaned_data.get("study"),
        kind=kind,
        storage=storage,
    )
    model = form.cleaned_data["model"]
    norm = form.cleaned_data.get("normative")
    params = {"normative": str(norm.pk)} if norm is not None else {}
    job = jobs.enqueue("recommend", request.user, params, patient=patient, model=model)
    detail = f"model {model.pk}" + (f"; normative {norm.pk}" if norm else "") + f"; job {job.pk}"
    record(request, "patient.create", patient, detail=detail)
    return redirect("patient", pk=patient.pk)


def _chart(patient: dict[str, Any], arms: list[str]) -> dict[str, Any]:
    """Coordinates of an inline SVG: each arm's prediction and interval on one axis."""
    values = []
    for arm in arms:
        q = patient["predicted"][arm]
        values.append(q["value"])
        if q.get("interval"):
            values.extend(v for v in q["interval"] if v is not None)
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    width, left = 520.0, 110.0

    def x(v: float) -> float:
        return round(left + (v - lo) / (hi - lo) * (width - left - 20), 1)

    rows = []
    for j, arm in enumerate(arms):
        q = patient["predicted"][arm]
        iv = q.get("interval") or [q["value"], q["value"]]
        rows.append(
            {
                "arm": arm,
                "y": 24 + 30 * j,
                "x": x(q["value"]),
                "x0": x(iv[0]),
                "x1": x(iv[1]),
                "best": arm == patient["recommended"],
            }
        )
    ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    return {
        "rows": rows,
        "height": 40 + 30 * len(arms),
        "width": width,
        "ticks": [{"x": x(t), "label": f"{t:.1f}"} for t in ticks],
        "axis_y": 14 + 30 * len(arms),
    }


@clinician_only
@require_GET
def patient_detail(request: HttpRequest, pk: str) -> HttpResponse:
    """Progress while the job runs; the recommendation when it is done."""
    patient = get_patient(request, pk)
    job = patient.jobs.select_related("model").order_by("-created_at").first()
    record(request, "patient.view", patient)
    context: dict[str, Any] = {"patient": patient, "job": job}
    if job is not None and job.status == Job.DONE and job.result:
        res = job.result
        context["r"] = res
        context["p"] = res["patient"]
        context["m"] = res["model"]
        context["chart"] = _chart(res["patient"], res["model"]["arms"])
        context["level"] = round(100 * res["patient"].get("interval_level", 0.9))
        context["profile"] = res.get("profile")
        context["profile_error"] = res.get("profile_error")
    return render(request, "web/patient.html", context)


@clinician_only
@require_GET
def patient_status(request: HttpRequest, pk: str) -> JsonResponse:
    """The job's status as JSON (for scripts and progressive enhancement)."""
    patient = get_patient(request, pk)
    job = patient.jobs.order_by("-created_at").first()
    return JsonResponse(job.as_status() if job else {"status": "none"})


@clinician_only
@require_GET
def patient_report(request: HttpRequest, pk: str, fmt: str) -> FileResponse:
    """Download the recommendation report (HTML or PDF) as an attachment."""
    patient = get_patient(request, pk)
    job = patient.jobs.filter(status=Job.DONE).order_by("-created_at").first()
    files = (job.result.get("files") or {}) if job else {}
    if fmt not in files:
        raise Http404("no such report")
    path = jobs.patient_dir(patient) / "output" / files[fmt]
    if not path.is_file():
        raise Http404("no such report")
    record(request, f"patient.download_{fmt}", patient)
    response = FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=f"brainmatch-recommendation-{str(patient.pk)[:8]}.{fmt}",
        content_type="text/html; charset=utf-8" if fmt == "html" else "application/pdf",
    )
    response["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    )
    return response


@clinician_only
@require_POST
def patient_delete(request: HttpRequest, pk: str) -> HttpResponse:
    """Delete a patient with every file (owner only)."""
    patient = get_patient(request, pk)
    if patient.owner_id != request.user.pk:
        record(request, "patient.delete", patient, outcome="denied", detail="not the owner")
        messages.error(request, "Only the clinician who uploaded a patient can delete it.")
        return redirect("patient", pk=patient.pk)
    jobs.delete_patient(patient)
    record(request, "patient.delete", patient)
    messages.success(request, "The patient and all its files were deleted.")
    return redirect("patients")


@clinician_only
@require_GET
def patient_profile(request: HttpRequest, pk: str, fmt: str) -> FileResponse:
    """Download the patient's profile against the normative reference (HTML or PDF)."""
    patient = get_patient(request, pk)
    job = patient.jobs.filter(status=Job.DONE).order_by("-created_at").first()
    profile = (job.result.get("profile") or {}) if job else {}
    name = (profile.get("files") or {}).get(fmt)
    if fmt not in ("html", "pdf") or not name:
        raise Http404("no such profile")
    path = jobs.patient_dir(patient) / "output" / "profile" / name
    if not path.is_file():
        raise Http404("no such profile")
    record(request, f"patient.download_profile_{fmt}", patient)
    response = FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=f"brainmatch-profile-{str(patient.pk)[:8]}.{fmt}",
        content_type="text/html; charset=utf-8" if fmt == "html" else "application/pdf",
    )
    response["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    )
    return response
