"""Researcher pages: upload a trial's tables, train with a progress bar, read the summary."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from brainmatch.web import jobs
from brainmatch.web.audit import record
from brainmatch.web.forms import DatasetUploadForm, TrainForm
from brainmatch.web.models import Dataset, Job
from brainmatch.web.uploads import (
    TABLE_EXTENSIONS,
    UploadRefused,
    extension,
    read_table,
    save_upload,
    write_tsv,
)
from brainmatch.web.views.common import get_dataset, get_training, role_required

researcher_only = role_required("researcher")


def _list(request: HttpRequest, form: DatasetUploadForm, status: int = 200) -> HttpResponse:
    datasets = Dataset.objects.filter(owner=request.user)
    trainings = Job.objects.filter(kind="train", created_by=request.user).select_related("dataset")
    return render(
        request,
        "web/datasets.html",
        {"form": form, "datasets": datasets, "trainings": trainings[:200]},
        status=status,
    )


@researcher_only
@require_GET
def dataset_list(request: HttpRequest) -> HttpResponse:
    """The researcher's trials, trainings and the upload form."""
    return _list(request, DatasetUploadForm())


def _read(upload: object, folder: Path, field: str) -> pd.DataFrame:
    cfg = settings.BRAINMATCH
    ext = extension(upload.name)  # type: ignore[attr-defined]
    if ext not in TABLE_EXTENSIONS:
        raise UploadRefused(f"{field}: expected a CSV, TSV or Parquet table, not {ext!r}")
    raw = save_upload(upload, folder / f"{field}-upload{ext}", cfg.max_table_bytes, field)
    table = read_table(raw, ext, field, 20 * cfg.max_table_bytes)
    raw.unlink()
    return table


@researcher_only
@require_POST
def dataset_create(request: HttpRequest) -> HttpResponse:
    """Store a trial's feature and outcome tables."""
    form = DatasetUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _list(request, form, status=400)
    storage = secrets.token_hex(16)
    folder = Path(settings.BRAINMATCH.data_dir) / "datasets" / storage
    try:
        features = _read(form.cleaned_data["features"], folder, "features")
        outcomes = _read(form.cleaned_data["outcomes"], folder, "outcomes")
        shared = set(features["participant_id"].astype(str)) & set(
            outcomes["participant_id"].astype(str)
        )
        if not shared:
            raise UploadRefused("outcomes: no participant_id in common with the feature table")
        write_tsv(features, folder / "features.tsv")
        write_tsv(outcomes, folder / "outcomes.tsv")
    except UploadRefused as exc:
        shutil.rmtree(folder, ignore_errors=True)
        record(request, "dataset.refused", outcome="refused", detail=exc.reason[:300])
        form.add_error(None, exc.reason)
        return _list(request, form, status=400)
    dataset = Dataset.objects.create(
        name=form.cleaned_data["name"],
        owner=request.user,
        storage=storage,
        n_rows=len(shared),
        outcome_columns=[str(c) for c in outcomes.columns],
    )
    record(request, "dataset.create", dataset)
    return redirect("dataset", pk=dataset.pk)


@researcher_only
def dataset_detail(request: HttpRequest, pk: str) -> HttpResponse:
    """A trial and the train form; POST queues a training job."""
    dataset = get_dataset(request, pk)
    form = TrainForm(dataset.outcome_columns, request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            params = {
                "treatment_column": d["treatment_column"],
                "outcome_column": d["outcome_column"],
                "baseline_column": d["baseline_column"] or None,
                "site_column": d["site_column"] or None,
                "covariates": list(d["covariates"]),
                "model": d["model"],
                "n_repeats": d["n_repeats"],
                "n_permutations": d["n_permutations"],
                "seed": d["seed"],
                "learning_curve": bool(d["learning_curve"]),
            }
            job = jobs.enqueue("train", request.user, params, dataset=dataset)
            job.storage = secrets.token_hex(16)
            job.save(update_fields=["storage"])
            record(request, "training.create", job, detail=f"dataset {dataset.pk}")
            return redirect("training", pk=job.pk)
        status = 400
    record(request, "dataset.view", dataset)
    trainings = dataset.jobs.filter(kind="train")
    return render(
        request,
        "web/dataset.html",
        {"dataset": dataset, "form": form, "trainings": trainings},
        status=status,
    )


@role_required("researcher", "admin")
@require_GET
def training_detail(request: HttpRequest, pk: str) -> HttpResponse:
    """Progress bar while training runs; the aggregate validation summary when done."""
    job = get_training(request, pk)
    record(request, "training.view", job)
    return render(request, "web/training.html", {"job": job, "s": job.result or {}})


@role_required("researcher", "admin")
@require_GET
def training_report(request: HttpRequest, pk: str) -> FileResponse:
    """Download the training report (aggregate figures and metrics)."""
    job = get_training(request, pk)
    name = (job.result or {}).get("report")
    if job.status != Job.DONE or not name:
        raise Http404("no report")
    path = jobs.training_dir(job) / name
    if not path.is_file():
        raise Http404("no report")
    record(request, "training.download", job)
    response = FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=f"brainmatch-training-{str(job.pk)[:8]}.html",
        content_type="text/html; charset=utf-8",
    )
    response["Content-Security-Policy"] = (
        "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    )
    return response
