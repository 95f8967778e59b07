"""Start the service: Django set-up, migrations, the WSGI server and the job workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from brainmatch.errors import BrainmatchInputError


def setup(data_dir: Path | None = None) -> Any:
    """Configure Django for this process (once) and return the service configuration."""
    if data_dir is not None:
        os.environ["BRAINMATCH_WEB_DATA"] = str(Path(data_dir).expanduser().resolve())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "brainmatch.web.settings")
    try:
        import django
    except ImportError:
        raise BrainmatchInputError(
            "the web service needs the 'web' extra: pip install 'brainmatch[web]'"
        ) from None
    from django.conf import settings

    django.setup()
    return settings.BRAINMATCH


def migrate() -> None:
    """Create or update the database tables."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def database_label() -> str:
    """``sqlite (path)`` or ``postgresql (host/name)`` for the start-up line."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "sqlite" in db["ENGINE"]:
        return f"SQLite {db['NAME']}"
    return f"PostgreSQL {db.get('HOST') or 'local socket'}/{db['NAME']}"


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def start_workers(n: int, data_dir: Path) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` worker processes (``brainmatch serve worker``)."""
    env = dict(os.environ, BRAINMATCH_WEB_DATA=str(data_dir))
    return [
        subprocess.Popen(
            [sys.executable, "-m", "brainmatch", "serve", "worker", "--data-dir", str(data_dir)],
            env=env,
        )
        for _ in range(n)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    """SIGTERM the workers (their running job is queued again), then SIGKILL stragglers."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    data_dir: Path | None = None,
    workers: int = 1,
    threads: int = 8,
    ready: threading.Event | None = None,
) -> None:
    """Run the service until SIGINT / SIGTERM.

    Parameters
    ----------
    host, port : where to listen (put a reverse proxy with HTTPS in front; docs/web.md).
    data_dir : private folder for the database, secret key and uploads.
    workers : job worker processes started alongside (0: run ``brainmatch serve worker``
        yourself).
    threads : request threads of the WSGI server.
    """
    cfg = setup(data_dir)
    migrate()
    from waitress import create_server

    from brainmatch.web.wsgi import application

    kwargs: dict[str, Any] = {}
    if cfg.https:
        kwargs.update(
            trusted_proxy="127.0.0.1",
            trusted_proxy_headers={"x-forwarded-proto", "x-forwarded-for"},
            clear_untrusted_proxy_headers=True,
        )
    try:
        server = create_server(
            application,
            host=host,
            port=port,
            threads=threads,
            connection_limit=1000,
            backlog=1024,
            channel_timeout=120,
            max_request_body_size=cfg.max_upload_bytes + (1 << 20),
            ident="brainmatch",
            **kwargs,
        )
    except OSError as exc:
        raise BrainmatchInputError(
            f"--port {port}: cannot listen on {host}:{port} ({exc.strerror})"
        ) from None
    procs = start_workers(workers, cfg.data_dir)
    old = signal.signal(signal.SIGTERM, _raise_exit)
    real_port = server.effective_port
    print(
        f"brainmatch serving on http://{host}:{real_port}/ (data {cfg.data_dir}; "
        f"{database_label()}; {workers} worker(s)); Ctrl-C stops it",
        flush=True,
    )
    from django.contrib.auth import get_user_model

    if not get_user_model().objects.exists():
        print(
            "no users yet: create the first one with "
            "`brainmatch serve createuser NAME --role admin` (and clinicians / researchers)",
            flush=True,
        )
    if ready is not None:
        ready.set()
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        server.close()
        stop_workers(procs)


def run_worker(data_dir: Path | None = None, poll: float = 1.0) -> int:
    """Run one worker until SIGTERM / SIGINT; returns the number of jobs run."""
    setup(data_dir)
    from brainmatch.web.jobs import work

    stop = threading.Event()
    signal.signal(signal.SIGTERM, _raise_exit)
    try:
        return work(stop, poll=poll)
    except (KeyboardInterrupt, SystemExit):
        return 0
