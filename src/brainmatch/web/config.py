"""Run-time configuration of the web service, read from the environment.

Nothing is required: without any variable the service keeps its SQLite database, its
secret key and every upload under one private data folder (``--data-dir``, default
``$XDG_DATA_HOME/brainmatch/web`` or ``~/.local/share/brainmatch/web``).

=============================== =====================================================
variable                        meaning (default)
=============================== =====================================================
``BRAINMATCH_WEB_DATA``         data folder (see above)
``DATABASE_URL``                ``postgres://user:password@host:port/name`` or
                                ``sqlite:////absolute/path.sqlite3`` (the data folder's
                                ``db.sqlite3``)
``BRAINMATCH_SECRET_KEY``       Django's signing key (generated once into
                                ``DATA/secret_key``, mode 0600)
``BRAINMATCH_ALLOWED_HOSTS``    comma-separated host names (``127.0.0.1,localhost``)
``BRAINMATCH_HTTPS``            ``1`` behind an HTTPS reverse proxy: secure cookies,
                                HSTS, ``X-Forwarded-Proto`` trusted (``0``)
``BRAINMATCH_MAX_UPLOAD_MB``    largest upload accepted (200)
``BRAINMATCH_MAX_TABLE_MB``     largest table (feature row, trial table) (20)
``BRAINMATCH_ZIP_MAX_MB``       total uncompressed size of a zipped subject (4000)
``BRAINMATCH_ZIP_MAX_FILES``    files in a zipped subject (5000)
``BRAINMATCH_IDLE_MINUTES``     signed-in session ends after this idle time (30)
``BRAINMATCH_SESSION_HOURS``    and at the latest after this many hours (12)
``BRAINMATCH_LOGIN_FAILURES``   failed sign-ins per user name before a lock (5)
``BRAINMATCH_LOGIN_LOCK_MINUTES`` length of the lock / counting window (15)
``BRAINMATCH_RETENTION_DAYS``   patients older than this are deleted with their files
                                (0: keep until deleted by hand)
``BRAINMATCH_CHROMIUM``         browser used to print reports to PDF
                                (``/usr/bin/chromium`` when present)
=============================== =====================================================
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from brainmatch.errors import BrainmatchInputError

MB = 1024 * 1024


def default_data_dir() -> Path:
    """``$BRAINMATCH_WEB_DATA``, else ``$XDG_DATA_HOME/brainmatch/web``."""
    env = os.environ.get("BRAINMATCH_WEB_DATA")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(xdg) / "brainmatch" / "web").resolve()


def parse_database_url(url: str, data_dir: Path) -> dict[str, Any]:
    """Django ``DATABASES['default']`` from a ``DATABASE_URL`` (PostgreSQL or SQLite).

    Raises
    ------
    BrainmatchInputError
        Unsupported scheme or missing database name.
    """
    if not url:
        return sqlite_database(data_dir / "db.sqlite3")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.path)
        if not path or path == "/":
            raise BrainmatchInputError("DATABASE_URL: sqlite URL without a file path")
        return sqlite_database(Path(path[1:] if path.startswith("//") else path))
    if scheme not in ("postgres", "postgresql", "pgsql"):
        raise BrainmatchInputError(
            f"DATABASE_URL: unsupported scheme {scheme!r} (use postgres:// or sqlite:///)"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise BrainmatchInputError("DATABASE_URL: no database name after the host")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def sqlite_database(path: Path) -> dict[str, Any]:
    """SQLite tuned for a threaded server: WAL, immediate write transactions, long timeout."""
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BrainmatchInputError(f"{name}={raw!r}: expected a whole number") from None
    if value < 0:
        raise BrainmatchInputError(f"{name}={raw!r}: must not be negative")
    return value


def _secret_key(data_dir: Path) -> str:
    env = os.environ.get("BRAINMATCH_SECRET_KEY")
    if env:
        return env
    path = data_dir / "secret_key"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


@dataclass
class WebConfig:
    """Settings of one running service (see the module docstring for the variables)."""

    data_dir: Path
    database: dict[str, Any]
    secret_key: str
    allowed_hosts: list[str]
    https: bool = False
    max_upload_bytes: int = 200 * MB
    max_table_bytes: int = 20 * MB
    zip_max_total_bytes: int = 4000 * MB
    zip_max_files: int = 5000
    idle_timeout_s: int = 30 * 60
    session_max_age_s: int = 12 * 3600
    login_max_failures: int = 5
    login_window_s: int = 15 * 60
    retention_days: int = 0
    chromium: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        """A private sub-folder of the data folder (created with mode 0700)."""
        path = self.data_dir / name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path


def load_config() -> WebConfig:
    """Read the environment (creating the data folder and secret key on first use)."""
    data_dir = default_data_dir()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    hosts = os.environ.get("BRAINMATCH_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
    chromium = os.environ.get("BRAINMATCH_CHROMIUM") or shutil.which("chromium")
    return WebConfig(
        data_dir=data_dir,
        database=parse_database_url(os.environ.get("DATABASE_URL", ""), data_dir),
        secret_key=_secret_key(data_dir),
        allowed_hosts=[h.strip() for h in hosts.split(",") if h.strip()],
        https=os.environ.get("BRAINMATCH_HTTPS", "0").strip().lower() in ("1", "true", "yes"),
        max_upload_bytes=_int_env("BRAINMATCH_MAX_UPLOAD_MB", 200) * MB,
        max_table_bytes=_int_env("BRAINMATCH_MAX_TABLE_MB", 20) * MB,
        zip_max_total_bytes=_int_env("BRAINMATCH_ZIP_MAX_MB", 4000) * MB,
        zip_max_files=_int_env("BRAINMATCH_ZIP_MAX_FILES", 5000),
        idle_timeout_s=_int_env("BRAINMATCH_IDLE_MINUTES", 30) * 60,
        session_max_age_s=_int_env("BRAINMATCH_SESSION_HOURS", 12) * 3600,
        login_max_failures=_int_env("BRAINMATCH_LOGIN_FAILURES", 5),
        login_window_s=_int_env("BRAINMATCH_LOGIN_LOCK_MINUTES", 15) * 60,
        retention_days=_int_env("BRAINMATCH_RETENTION_DAYS", 0),
        chromium=chromium if chromium and Path(chromium).exists() else None,
    )
