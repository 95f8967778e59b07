"""Entry point of the ``brainmatch`` command."""

from __future__ import annotations

import importlib
import pkgutil

import typer

import brainmatch
import brainmatch.cli as cli_pkg
from brainmatch import __version__
from brainmatch.cli._common import OneLineErrorGroup

app = typer.Typer(
    name="brainmatch",
    cls=OneLineErrorGroup,
    help=(
        "Match patients to the mental-health treatment their brain is most likely to "
        "respond to, with honest validation. Run 'brainmatch demo' to see the whole pipeline."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"brainmatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """brainmatch command line."""


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "main":
            continue
        module = importlib.import_module(f"{cli_pkg.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    """Run the CLI."""
    app()


__all__ = ["app", "brainmatch", "main"]
