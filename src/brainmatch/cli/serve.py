"""``brainmatch serve``: the web service for clinicians and study teams."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from brainmatch.cli._common import echo_kv, fail, user_errors

serve_app = typer.Typer(
    help=(
        "Run the web service (clinicians upload patients and read recommendations; "
        "researchers upload trials and train; admins manage users and models). "
        "No configuration needed: SQLite and uploads live in the data folder."
    ),
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DATA_HELP = (
    "Private folder for the database, secret key and uploads "
    "(default $BRAINMATCH_WEB_DATA or ~/.local/share/brainmatch/web)."
)


@serve_app.callback()
@user_errors
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_HELP),
    workers: int = typer.Option(
        1, "--workers", min=0, max=32, help="Background job worker processes (0: none)."
    ),
    threads: int = typer.Option(8, "--threads", min=1, max=256, help="Request threads."),
) -> None:
    """Start the web service on HOST:PORT (Ctrl-C stops it)."""
    if ctx.invoked_subcommand is not None:
        return
    from brainmatch.web.server import migrate, setup
    from brainmatch.web.server import serve as run

    if sys.stdin.isatty():  # a person at a terminal: offer to create the first admin
        setup(data_dir)
        migrate()
        first_admin(typer.prompt, typer.echo)
    run(host, port, data_dir=data_dir, workers=workers, threads=threads)


def first_admin(ask: Callable[..., Any], say: Callable[[str], Any]) -> Any:
    """When there is no user yet, ask for the first administrator's name and password."""
    from django.contrib.auth import get_user_model

    from brainmatch.errors import BrainmatchInputError
    from brainmatch.web.audit import record
    from brainmatch.web.services import create_user

    if get_user_model().objects.exists():
        return None
    say("No users yet: create the first administrator (Ctrl-C to skip).")
    for _ in range(3):
        name = ask("Administrator user name", default="admin")
        password = ask("Password", hide_input=True, confirmation_prompt=True)
        try:
            user = create_user(str(name), "admin", str(password))
        except BrainmatchInputError as exc:
            say(f"error: {exc}")
            continue
        record(None, "user.create", user, username="(first run)", detail="role admin")
        say(f"created administrator {name}; add clinicians and researchers on the Users page")
        return user
    return None


@serve_app.command("createuser")
@user_errors
def createuser(
    username: str = typer.Argument(..., help="User name."),
    role: str = typer.Option(..., "--role", help="admin, clinician or researcher."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_HELP),
) -> None:
    """Create a user (asks for the password twice unless --password-stdin)."""
    from brainmatch.web.server import migrate, setup

    setup(data_dir)
    migrate()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise fail("password: empty")
    from brainmatch.web.audit import record
    from brainmatch.web.services import create_user

    user = create_user(username, role, password)
    record(None, "user.create", user, username="(command line)", detail=f"role {role}")
    echo_kv("created", {"user": username, "role": role})


@serve_app.command("deploy")
@user_errors
def deploy(
    model: Path = typer.Argument(..., help="model.npz written by `brainmatch train`."),
    name: str = typer.Option(..., "--name", help="Name clinicians see."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_HELP),
) -> None:
    """Verify a model file and deploy it for clinicians."""
    from brainmatch.errors import BrainmatchInputError
    from brainmatch.web.server import migrate, setup

    setup(data_dir)
    migrate()
    if not model.is_file():
        raise BrainmatchInputError("model file not found", model)
    from brainmatch.web.audit import record
    from brainmatch.web.services import deploy_model

    deployed = deploy_model(model, name)
    record(None, "model.deploy", deployed, username="(command line)")
    info = {"name": name, "id": str(deployed.pk), "kind": deployed.kind}
    if deployed.summary.get("arms"):
        info["arms"] = ", ".join(deployed.summary["arms"])
    if deployed.summary.get("n_controls"):
        info["controls"] = str(deployed.summary["n_controls"])
    echo_kv("deployed", info)


@serve_app.command("migrate")
@user_errors
def migrate_cmd(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_HELP),
) -> None:
    """Create or update the database tables (serve does it on start; for other WSGI servers)."""
    from brainmatch.web.server import database_label, migrate, setup

    setup(data_dir)
    migrate()
    echo_kv("database ready", {"database": database_label()})


@serve_app.command("worker")
@user_errors
def worker(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_HELP),
) -> None:
    """Run a background job worker (`serve` starts its own; use this for extra ones)."""
    from brainmatch.web.server import run_worker

    run_worker(data_dir)


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""
    app.add_typer(serve_app, name="serve")
