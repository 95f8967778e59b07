"""Django application of the brainmatch web service."""

from __future__ import annotations

from django.apps import AppConfig


class WebConfig(AppConfig):
    """The ``web`` app (label ``brainmatch_web``)."""

    name = "brainmatch.web"
    label = "brainmatch_web"
    verbose_name = "brainmatch web service"
    default_auto_field = "django.db.models.BigAutoField"
