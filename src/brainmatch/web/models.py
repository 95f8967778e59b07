"""Database tables of the web service.

Patients, datasets, jobs and deployed models are keyed by random UUIDs (never by a
sequential number a user could count through); the pseudonymised participant id a
clinician typed is stored but never logged.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    """What a user may do."""

    ADMIN = "admin", "admin"
    CLINICIAN = "clinician", "clinician"
    RESEARCHER = "researcher", "researcher"


class Profile(models.Model):
    """A user's role (one per user; users without one can do nothing)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bm_profile"
    )
    role = models.CharField(max_length=16, choices=Role.choices)

    def __str__(self) -> str:
        return f"{self.user.get_username()} ({self.role})"


class Study(models.Model):
    """A group of clinicians who share their patients' results."""

    name = models.CharField(max_length=120, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="bm_studies")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class DeployedModel(models.Model):
    """A treatment-selection model file that passed the integrity check."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, default="selection")
    file_name = models.CharField(max_length=80)  # generated, inside DATA/models/
    sha256 = models.CharField(max_length=64)
    summary = models.JSONField(default=dict)
    deployed = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.name


class Patient(models.Model):
    """One uploaded patient (a feature row or a zipped subject folder)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    pseudonym = models.CharField(max_length=64)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bm_patients"
    )
    study = models.ForeignKey(
        Study, null=True, blank=True, on_delete=models.SET_NULL, related_name="patients"
    )
    kind = models.CharField(max_length=16)  # "table" or "zip"
    storage = models.CharField(max_length=64, unique=True)  # generated folder name
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)


class Dataset(models.Model):
    """A researcher's trial: a feature table and an outcome table."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bm_datasets"
    )
    storage = models.CharField(max_length=64, unique=True)
    n_rows = models.IntegerField(default=0)
    outcome_columns = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)


class Job(models.Model):
    """Background work, persisted so that it survives a restart of the server."""

    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
    STATUS = tuple((s, s) for s in (QUEUED, RUNNING, DONE, FAILED))

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16)  # "recommend" or "train"
    status = models.CharField(max_length=16, choices=STATUS, default=QUEUED, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    patient = models.ForeignKey(
        Patient, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    model = models.ForeignKey(
        DeployedModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    params = models.JSONField(default=dict)
    result = models.JSONField(default=dict)
    storage = models.CharField(max_length=64, blank=True)  # output folder (trainings)
    progress_done = models.IntegerField(default=0)
    progress_total = models.IntegerField(default=0)
    message = models.CharField(max_length=300, blank=True)
    error = models.TextField(blank=True)
    attempts = models.IntegerField(default=0)
    worker = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)

    @property
    def finished(self) -> bool:
        """Done or failed."""
        return self.status in (self.DONE, self.FAILED)

    @property
    def percent(self) -> int:
        """Progress in percent (0 when unknown)."""
        if self.status == self.DONE:
            return 100
        if self.progress_total <= 0:
            return 0
        return int(100 * self.progress_done / self.progress_total)

    def as_status(self) -> dict[str, Any]:
        """What the progress endpoint returns."""
        return {
            "status": self.status,
            "percent": self.percent,
            "message": self.message,
            "error": self.error if self.status == self.FAILED else "",
        }


class AuditEvent(models.Model):
    """Who viewed, created, changed or was refused what (never participant data)."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40, db_index=True)
    target_type = models.CharField(max_length=40, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, default="ok")
    ip = models.GenericIPAddressField(null=True, blank=True)
    detail = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ("-at", "-id")


class LoginAttempt(models.Model):
    """Sign-in attempts, for throttling."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    username = models.CharField(max_length=150, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    success = models.BooleanField(default=False)
