"""The audit log: one row per view, creation, change, refusal or sign-in."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest

from brainmatch.web.models import AuditEvent

log = logging.getLogger("brainmatch.web.audit")


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address (``REMOTE_ADDR``; a reverse proxy must set it, see docs/web.md)."""
    if request is None:
        return None
    ip = request.META.get("REMOTE_ADDR") or None
    return ip


def record(
    request: HttpRequest | None,
    action: str,
    target: Any = None,
    *,
    outcome: str = "ok",
    detail: str = "",
    user: Any = None,
    username: str | None = None,
) -> AuditEvent:
    """Write an audit event (and one log line with internal ids only).

    Parameters
    ----------
    request : HttpRequest or None
        The request (user and address are taken from it); None for the worker.
    action : str
        What happened, e.g. ``patient.view``, ``login.failed``.
    target : model instance, optional
        Its class name and primary key are recorded, nothing else.
    outcome : str
        ``ok``, ``denied``, ``failed`` ...
    detail : str
        A short note without participant data.
    """
    if user is None and request is not None:
        u = getattr(request, "user", None)
        user = u if u is not None and u.is_authenticated else None
    name = username if username is not None else (user.get_username() if user else "")
    target_type, target_id = "", ""
    if target is not None:
        target_type = type(target).__name__.lower()
        target_id = str(getattr(target, "pk", target))
    event = AuditEvent.objects.create(
        user=user,
        username=name[:150],
        action=action,
        target_type=target_type,
        target_id=target_id[:64],
        outcome=outcome,
        ip=client_ip(request),
        detail=detail[:300],
    )
    log.info("audit %s user=%s %s=%s outcome=%s", action, name, target_type, target_id, outcome)
    return event


def record_denied(request: HttpRequest, target_type: str, target_id: str) -> None:
    """A request for an object the user may not see (the view answers 404)."""
    event_target = f"{target_id}"[:64]
    AuditEvent.objects.create(
        user=request.user if request.user.is_authenticated else None,
        username=request.user.get_username() if request.user.is_authenticated else "",
        action=f"{target_type}.denied",
        target_type=target_type,
        target_id=event_target,
        outcome="denied",
        ip=client_ip(request),
        detail="not the owner nor a member of its study; answered 404",
    )
    log.warning(
        "audit %s.denied user=%s %s=%s",
        target_type,
        request.user.get_username(),
        target_type,
        event_target,
    )
