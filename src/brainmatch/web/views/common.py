"""Roles, access checks and small helpers shared by the views."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from brainmatch.web.audit import record, record_denied
from brainmatch.web.models import Dataset, Job, Patient, Role

View = Callable[..., HttpResponse]


def role_of(user: Any) -> str | None:
    """The user's role, or None (anonymous, inactive or no profile)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    profile = getattr(user, "bm_profile", None)
    return profile.role if profile is not None else None


def role_context(request: HttpRequest) -> dict[str, Any]:
    """Template context: ``bm_role``."""
    return {"bm_role": role_of(getattr(request, "user", None))}


def role_required(*roles: str) -> Callable[[View], View]:
    """Signed-in users of one of ``roles`` only (others: sign-in page or 403, audited)."""

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if role_of(request.user) not in roles:
                record(request, "role.denied", outcome="denied", detail=request.path[:200])
                return render(
                    request,
                    "web/message.html",
                    {
                        "title": "Not allowed",
                        "text": "Your role does not give access to this page.",
                    },
                    status=403,
                )
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def visible_patients(user: Any) -> QuerySet[Patient]:
    """Patients a clinician owns or that are shared within one of their studies."""
    return Patient.objects.filter(Q(owner=user) | Q(study__members=user)).distinct()


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def get_patient(request: HttpRequest, pk: Any) -> Patient:
    """The patient if the user may see it; otherwise 404, and the attempt is audited."""
    key = _uuid(pk)
    patient = visible_patients(request.user).filter(pk=key).first() if key else None
    if patient is None:
        record_denied(request, "patient", str(pk))
        raise Http404("no such patient")
    return patient


def get_dataset(request: HttpRequest, pk: Any) -> Dataset:
    """A researcher's own dataset; otherwise 404 (audited)."""
    key = _uuid(pk)
    dataset = Dataset.objects.filter(pk=key, owner=request.user).first() if key else None
    if dataset is None:
        record_denied(request, "dataset", str(pk))
        raise Http404("no such dataset")
    return dataset


def get_training(request: HttpRequest, pk: Any) -> Job:
    """A training job: its researcher's, or any for an admin (who deploys models)."""
    key = _uuid(pk)
    jobs = Job.objects.filter(kind="train")
    if role_of(request.user) != Role.ADMIN:
        jobs = jobs.filter(created_by=request.user)
    job = jobs.filter(pk=key).first() if key else None
    if job is None:
        record_denied(request, "training", str(pk))
        raise Http404("no such training")
    return job
