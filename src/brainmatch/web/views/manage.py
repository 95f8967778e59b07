"""Admin pages: users and roles, studies, deployed models, the audit log."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from brainmatch.errors import BrainmatchInputError
from brainmatch.web import jobs, services
from brainmatch.web.audit import record
from brainmatch.web.forms import (
    DeployTrainingForm,
    ModelUploadForm,
    StudyForm,
    UserCreateForm,
    UserRoleForm,
)
from brainmatch.web.models import AuditEvent, DeployedModel, Job, Profile, Study
from brainmatch.web.uploads import UploadRefused, save_upload
from brainmatch.web.views.common import get_training, role_required

admin_only = role_required("admin")


def _users_page(request: HttpRequest, form: UserCreateForm, status: int = 200) -> HttpResponse:
    users = get_user_model().objects.select_related("bm_profile").order_by("username")
    return render(request, "web/users.html", {"form": form, "users": users}, status=status)


@admin_only
def users(request: HttpRequest) -> HttpResponse:
    """List users; POST creates one."""
    form = UserCreateForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            user = services.create_user(d["username"], d["role"], d["password1"])
            record(request, "user.create", user, detail=f"role {d['role']}")
            messages.success(request, "User created.")
            return redirect("manage-users")
        return _users_page(request, form, status=400)
    return _users_page(request, form)


@admin_only
@require_POST
def user_update(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a user's role or (de)activate them."""
    user = get_user_model().objects.filter(pk=pk).first()
    form = UserRoleForm(request.POST)
    if user is None or not form.is_valid():
        raise Http404("no such user")
    if user.pk == request.user.pk and not form.cleaned_data["active"]:
        messages.error(request, "You cannot deactivate yourself.")
        return redirect("manage-users")
    Profile.objects.update_or_create(user=user, defaults={"role": form.cleaned_data["role"]})
    user.is_active = form.cleaned_data["active"]
    user.save(update_fields=["is_active"])
    record(
        request,
        "user.update",
        user,
        detail=f"role {form.cleaned_data['role']}, active {user.is_active}",
    )
    messages.success(request, "User updated.")
    return redirect("manage-users")


def _models_page(request: HttpRequest, form: ModelUploadForm, status: int = 200) -> HttpResponse:
    trainings = Job.objects.filter(kind="train", status=Job.DONE).select_related(
        "dataset", "created_by"
    )[:100]
    return render(
        request,
        "web/models.html",
        {
            "form": form,
            "models": DeployedModel.objects.all(),
            "trainings": trainings,
            "deploy_form": DeployTrainingForm(),
        },
        status=status,
    )


@admin_only
def models(request: HttpRequest) -> HttpResponse:
    """Deployed models; POST uploads a model file (integrity-checked)."""
    form = ModelUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if not form.is_valid():
            return _models_page(request, form, status=400)
        tmp = Path(settings.BRAINMATCH.folder("tmp")) / (secrets.token_hex(16) + ".npz")
        try:
            save_upload(
                form.cleaned_data["file"], tmp, settings.BRAINMATCH.max_upload_bytes, "model file"
            )
            model = services.deploy_model(tmp, form.cleaned_data["name"], request.user)
        except BrainmatchInputError as exc:
            reason = exc.reason if isinstance(exc, UploadRefused) else str(exc)
            record(request, "model.refused", outcome="refused", detail=reason[:300])
            form.add_error(None, reason)
            return _models_page(request, form, status=400)
        finally:
            tmp.unlink(missing_ok=True)
        record(request, "model.deploy", model)
        messages.success(request, "Model verified and deployed.")
        return redirect("manage-models")
    return _models_page(request, form)


@admin_only
@require_POST
def model_toggle(request: HttpRequest, pk: str) -> HttpResponse:
    """Withdraw or re-deploy a model."""
    model = DeployedModel.objects.filter(pk=pk).first()
    if model is None:
        raise Http404("no such model")
    model.deployed = not model.deployed
    model.save(update_fields=["deployed"])
    record(request, "model.deploy" if model.deployed else "model.withdraw", model)
    return redirect("manage-models")


@admin_only
@require_POST
def deploy_training(request: HttpRequest, pk: str) -> HttpResponse:
    """Deploy the model a finished training produced."""
    job = get_training(request, pk)
    form = DeployTrainingForm(request.POST)
    if job.status != Job.DONE or not form.is_valid():
        messages.error(request, "Give the model a name (and the training must be finished).")
        return redirect("manage-models")
    src = jobs.training_dir(job) / job.result.get("model_file", "model.npz")
    try:
        model = services.deploy_model(
            src, form.cleaned_data["name"], request.user, kind="selection"
        )
    except BrainmatchInputError as exc:
        messages.error(request, str(exc))
        return redirect("manage-models")
    record(request, "model.deploy", model, detail=f"from training {job.pk}")
    messages.success(request, "Model verified and deployed.")
    return redirect("manage-models")


@admin_only
def studies(request: HttpRequest) -> HttpResponse:
    """Studies (clinicians who share patients); POST creates one."""
    form = StudyForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            study = Study.objects.create(name=form.cleaned_data["name"])
            study.members.set(form.cleaned_data["members"])
            record(request, "study.create", study)
            return redirect("manage-studies")
        status = 400
    return render(
        request,
        "web/studies.html",
        {"form": form, "studies": Study.objects.prefetch_related("members")},
        status=status,
    )


@admin_only
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    """The audit log, newest first, 100 per page."""
    events = AuditEvent.objects.all()
    action = request.GET.get("action", "").strip()
    if action:
        events = events.filter(action__startswith=action)
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    return render(request, "web/audit.html", {"page": page, "action": action})
