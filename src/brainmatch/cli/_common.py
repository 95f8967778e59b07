"""Shared pieces of the CLI: error handling, progress bars, output folders, options.

* :func:`user_errors` turns brainmatch's input errors and the operating system's errors
  (read-only folder, disk full) into one ``error:`` line and exit status 2, an unexpected
  exception (a bug) into one ``error: internal error ...`` line and exit status 1 (the
  traceback with ``BRAINMATCH_DEBUG=1``), and prints warnings as one ``warning:`` line each.
* :class:`OneLineErrorGroup` does the same for Typer's own usage errors (missing option,
  bad value), which would otherwise print a boxed usage message.
* :func:`output_folder` claims a command's output folder (:mod:`brainmatch._outdir`).
* :func:`progress_bar` is the one Rich progress style, quiet when stderr is not a terminal.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer._click import exceptions as click_exc
from typer._click.globals import get_current_context
from typer.core import TyperGroup

from brainmatch.errors import BrainmatchError

console = Console(stderr=True)
out = Console()

P = ParamSpec("P")
R = TypeVar("R")

#: Exit status for bad input (as click uses for usage errors).
EXIT_BAD_INPUT = 2
#: Exit status for an unexpected error inside brainmatch (a bug).
EXIT_INTERNAL = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    console.print(f"[yellow]warning:[/] {_one_line(str(message))}", highlight=False, soft_wrap=True)


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn input and OS errors into a one-line message and exit status 2; warnings into
    one ``warning:`` line each."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return func(*args, **kwargs)
            except BrainmatchError as exc:
                raise fail(_one_line(str(exc))) from None
            except OSError as exc:
                where = f"{exc.filename}: " if exc.filename else ""
                raise fail(f"{where}{exc.strerror or exc}") from None
            except KeyboardInterrupt:
                raise fail("interrupted", code=130) from None
            except (typer.Exit, typer.Abort, click_exc.ClickException):
                raise
            except Exception as exc:  # a bug: one line, the traceback on request
                if os.environ.get("BRAINMATCH_DEBUG"):
                    raise
                raise fail(
                    f"internal error ({type(exc).__name__}: {_one_line(str(exc))}); this is a bug "
                    "in brainmatch: please report it with the command you ran (set "
                    "BRAINMATCH_DEBUG=1 to see the traceback)",
                    code=EXIT_INTERNAL,
                ) from None

    return wrapper


class OneLineErrorGroup(TyperGroup):
    """The root command group: usage errors as one ``error:`` line, exit status 2."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exc.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click_exc.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "brainmatch"
            fail(f"{where}: {_one_line(exc.format_message())} (see '{where} --help')")
            sys.exit(EXIT_BAD_INPUT)
        except click_exc.ClickException as exc:
            fail(_one_line(exc.format_message()), code=exc.exit_code)
            sys.exit(exc.exit_code)
        except typer.Abort:
            fail("aborted", code=1)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


#: Default of every ``--n-jobs`` option: 0 means one process per CPU core.
N_JOBS_DEFAULT = 0


def resolve_n_jobs(n_jobs: int, option: str = "--n-jobs") -> int:
    """Processes to use: ``n_jobs`` when positive, every core when 0; negative is refused."""
    if n_jobs < 0:
        raise fail(
            f"{option} must be 0 (every core) or a positive number of processes, got {n_jobs}"
        )
    return n_jobs if n_jobs > 0 else (os.cpu_count() or 1)


@contextlib.contextmanager
def output_folder(
    path: Path,
    command: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[Path | str | None] = (),
    option: str = "--out",
) -> Iterator[Path]:
    """Claim ``path`` for ``command`` (see :func:`brainmatch._outdir.claim_output`)."""
    from brainmatch._outdir import claim_output

    with claim_output(path, command, overwrite=overwrite, inputs=inputs, option=option) as claim:
        yield claim.path


def hold_output_folder(
    path: Path,
    command: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[Path | str | None] = (),
    option: str = "--out",
) -> Path:
    """Claim ``path`` for ``command`` until the running CLI command finishes.

    The one-line form of :func:`output_folder` for a command body: the claim is released
    (and the written files recorded) when the click context closes.
    """
    cm = output_folder(path, command, overwrite=overwrite, inputs=inputs, option=option)
    ctx = get_current_context(silent=True)
    if ctx is None:
        stack = contextlib.ExitStack()
        held = stack.enter_context(cm)
        import atexit

        atexit.register(stack.close)
        return held
    return ctx.with_resource(cm)


def overwrite_option() -> Any:
    """The ``--overwrite`` option every writing command has."""
    return typer.Option(
        False,
        "--overwrite",
        help="Delete the outputs an earlier run of this command wrote into the output folder "
        "before writing (other files are never touched; without it, a rerun updates in place).",
    )


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A Rich progress bar; yields ``update(done, total)``.  Quiet when stderr is not a TTY."""
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not sys.stderr.isatty(),
    )
    task = progress.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        yield update


def echo_kv(title: str, items: dict[str, Any]) -> None:
    """Print a small aligned key/value block on stdout."""
    out.print(f"[bold]{title}[/]")
    width = max(len(k) for k in items) if items else 0
    for key, value in items.items():
        out.print(f"  {key:<{width}}  {value}", highlight=False)
