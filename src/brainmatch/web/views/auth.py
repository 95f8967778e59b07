"""Sign-in (with throttling), sign-out and the role-based home page."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST

from brainmatch.web.audit import client_ip, record
from brainmatch.web.forms import LoginForm
from brainmatch.web.models import LoginAttempt, Role
from brainmatch.web.views.common import role_of

HOME = {Role.CLINICIAN: "patients", Role.RESEARCHER: "datasets", Role.ADMIN: "manage-users"}


def throttled(username: str, ip: str | None) -> int:
    """Seconds until this user name (or address) may try again; 0 when not locked.

    A user name is locked after ``login_max_failures`` failures within the window since
    its last success; an address after four times as many (password spraying).
    """
    cfg = settings.BRAINMATCH
    if not cfg.login_max_failures:
        return 0
    now = timezone.now()
    since = now - timedelta(seconds=cfg.login_window_s)
    last_ok = (
        LoginAttempt.objects.filter(username=username, success=True, at__gte=since)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    user_fail = LoginAttempt.objects.filter(
        username=username, success=False, at__gte=last_ok or since
    ).order_by("-at")
    ip_fail = LoginAttempt.objects.filter(ip=ip, success=False, at__gte=since).order_by("-at")
    for failures, limit in (
        (user_fail, cfg.login_max_failures),
        (ip_fail, 4 * cfg.login_max_failures),
    ):
        times = list(failures.values_list("at", flat=True)[:limit])
        if len(times) >= limit:
            until = times[-1] + timedelta(seconds=cfg.login_window_s)
            return max(1, math.ceil((until - now).total_seconds()))
    return 0


@never_cache
@csrf_protect
def login_view(request: HttpRequest) -> HttpResponse:
    """Sign in; after too many failures answer 429 without checking the password."""
    if request.user.is_authenticated and request.method == "GET":
        return redirect("home")
    form = LoginForm(request.POST or None)
    status = 200
    message = ""
    if request.GET.get("expired"):
        message = "Your session expired; please sign in again."
    if request.method == "POST" and form.is_valid():
        username = form.cleaned_data["username"].strip()
        ip = client_ip(request)
        wait = throttled(username, ip)
        if wait:
            record(request, "login.throttled", outcome="denied", username=username)
            message = f"Too many failed sign-ins. Try again in {math.ceil(wait / 60)} minute(s)."
            status = 429
        else:
            user = authenticate(request, username=username, password=form.cleaned_data["password"])
            ok = user is not None and role_of(user) is not None
            LoginAttempt.objects.create(username=username, ip=ip, success=ok)
            if ok:
                login(request, user)
                record(request, "login.ok", user=user)
                target = request.POST.get("next") or request.GET.get("next") or ""
                if not url_has_allowed_host_and_scheme(
                    target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
                ):
                    target = reverse("home")
                return HttpResponseRedirect(target)
            record(request, "login.failed", outcome="denied", username=username)
            message = "Wrong user name or password."
            status = 401
    elif request.method == "POST":
        status = 400
    return render(
        request,
        "web/login.html",
        {"form": form, "message": message, "next": request.GET.get("next", "")},
        status=status,
    )


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    """Sign out (POST only, CSRF-protected)."""
    if request.user.is_authenticated:
        record(request, "logout")
    logout(request)
    return redirect("login")


def home(request: HttpRequest) -> HttpResponse:
    """Each role's start page."""
    role = role_of(request.user)
    if role is None:
        if request.user.is_authenticated:
            logout(request)
        return redirect("login")
    return redirect(HOME[Role(role)])


def stylesheet(request: HttpRequest) -> HttpResponse:
    """The one stylesheet (no other static files exist)."""
    css = (Path(__file__).resolve().parents[1] / "static" / "brainmatch.css").read_text()
    response = HttpResponse(css, content_type="text/css; charset=utf-8")
    response["Cache-Control"] = "public, max-age=3600"
    return response


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness probe for a reverse proxy or monitor (no database access)."""
    return HttpResponse("ok\n", content_type="text/plain")
