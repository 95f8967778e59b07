"""WSGI entry point (``brainmatch.web.wsgi:application``) for any WSGI server."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "brainmatch.web.settings")
application = get_wsgi_application()
