"""Middleware: upload size limit, security headers, idle session expiry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from brainmatch.web.uploads import mb

Handler = Callable[[HttpRequest], HttpResponse]

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class _LimitHandler(FileUploadHandler):
    """Stops reading a multipart body once it exceeds the limit (sizes can be lied about)."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.seen = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.seen += len(raw_data)
        if self.seen > self.limit:
            self.request.META["brainmatch.upload_too_large"] = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


class UploadLimitMiddleware:
    """Answers 413 to a request body above the upload limit before reading it."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.BRAINMATCH.max_upload_bytes
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit + 64 * 1024:
            return HttpResponse(
                f"Upload refused: the request is {mb(length)}, above the limit of {mb(limit)}.\n",
                status=413,
                content_type="text/plain; charset=utf-8",
            )
        request.upload_handlers.insert(0, _LimitHandler(request, limit))
        response = self.get_response(request)
        if request.META.get("brainmatch.upload_too_large"):
            return HttpResponse(
                f"Upload refused: above the limit of {mb(limit)}.\n",
                status=413,
                content_type="text/plain; charset=utf-8",
            )
        return response


class SecurityHeadersMiddleware:
    """Content-Security-Policy (no scripts at all) and no caching of private pages."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response


class IdleTimeoutMiddleware:
    """Signs a user out after ``BRAINMATCH_IDLE_MINUTES`` without a request."""

    KEY = "_bm_seen"

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user: Any = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = time.time()
            seen = request.session.get(self.KEY)
            idle = settings.BRAINMATCH.idle_timeout_s
            if seen is not None and idle and now - float(seen) > idle:
                from brainmatch.web.audit import record

                record(request, "session.expired", user=user)
                logout(request)
                return HttpResponseRedirect(reverse("login") + "?expired=1")
            if seen is None or now - float(seen) > 30:
                request.session[self.KEY] = now
        return self.get_response(request)
