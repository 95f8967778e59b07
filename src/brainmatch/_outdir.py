"""Ownership of output folders: one mechanism for every command.

Every output folder carries a small manifest, ``.brainmatch.json``, naming the command
that writes into it and every file that command wrote.  :func:`claim_output` enforces:

* a folder holding another command's outputs is refused (``meta`` never replaces a
  ``train`` report), with or without ``--overwrite``;
* a folder holding files the command did not write (a user's notes, fMRIPrep's outputs,
  anything not in the manifest) is refused;
* a rerun of the same command updates the folder in place (``extract`` resumes);
  ``overwrite=True`` first deletes only the files the manifest lists;
* an output folder that is, or is inside, one of the command's inputs is refused;
* the check and the run hold an exclusive lock (``fcntl.flock`` on ``.brainmatch.lock``),
  so two runs cannot interleave; the kernel releases it when a process dies, even by
  ``kill -9``, and the next run adopts the files the interrupted run of the same command
  left (the manifest marks a run in progress).

Files are recorded by difference: everything that appears in the folder while the
command holds it is the command's, so commands need no bookkeeping of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from brainmatch import __version__
from brainmatch._io import write_json
from brainmatch.errors import BrainmatchInputError

MANIFEST = ".brainmatch.json"
LOCK = ".brainmatch.lock"
_OWN = {MANIFEST, LOCK}
#: leftovers of an interrupted atomic write (``brainmatch._io``) are ours
_TEMP = re.compile(r"^\..+\.tmp$")
#: folders this process holds (a nested claim by the same command is a no-op)
_HELD: dict[Path, str] = {}


@dataclass
class OutputClaim:
    """An output folder held by one command (yielded by :func:`claim_output`).

    Attributes
    ----------
    path : Path
        The folder.
    command : str
        The command holding it.
    previous : set of str
        Files (relative POSIX paths) recorded before this run.
    """

    path: Path
    command: str
    previous: set[str] = field(default_factory=set)


def _files(root: Path) -> set[str]:
    found: set[str] = set()
    for dirpath, _dirs, names in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for name in names:
            p = (rel / name).as_posix()
            if p in _OWN or _TEMP.match(name):
                continue
            found.add(p)
    return found


def recorded_files(root: str | Path) -> set[str]:
    """Every file under ``root`` (relative POSIX paths), without brainmatch's own markers."""
    return _files(Path(root))


def read_manifest(path: str | Path) -> dict[str, object] | None:
    """The manifest of an output folder, or None when it has none (or it is unreadable)."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(path: str | Path, command: str, files: Iterable[str], *, running: bool) -> None:
    """Record ``files`` (relative POSIX paths) as written by ``command`` into ``path``."""
    write_json(
        Path(path) / MANIFEST,
        {
            "command": command,
            "brainmatch_version": __version__,
            "running": running,
            "files": sorted(files),
        },
    )


def foreign_files(path: str | Path, command: str) -> list[str]:
    """Files in ``path`` that ``command`` did not record writing (sorted)."""
    path = Path(path)
    manifest = read_manifest(path) or {}
    recorded = manifest.get("files") if manifest.get("command") == command else []
    return sorted(_files(path) - set(recorded if isinstance(recorded, list) else []))


def _check_not_inside(out: Path, inputs: Iterable[str | Path | None], option: str) -> None:
    for item in inputs:
        if item is None:
            continue
        src = Path(item).resolve()
        if out != src and (src / "derivatives") in (out, *out.parents):
            continue  # BIDS convention: outputs in <bids>/derivatives/<pipeline>
        if out == src or (out.is_relative_to(src) and src.is_dir()):
            raise BrainmatchInputError(
                f"the output folder is, or is inside, the input {src}; writing there could "
                f"overwrite the input's own files: choose another {option}",
                out,
            )


@contextlib.contextmanager
def _lock(out: Path, command: str) -> Iterator[None]:
    try:
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise BrainmatchInputError(
            f"cannot write into the output folder ({exc.strerror})", out
        ) from None
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                raise BrainmatchInputError(
                    f"another brainmatch run ({holder or 'unknown'}) is writing into this "
                    "folder; wait for it or choose another output folder",
                    out,
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command}, pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def claim_output(
    path: str | Path,
    command: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    option: str = "--out",
) -> Iterator[OutputClaim]:
    """Hold ``path`` as ``command``'s output folder for the duration of the block.

    Parameters
    ----------
    path : str or Path
        The output folder (created when missing).
    command : str
        Name of the command (``meta``, ``train``, ...).
    overwrite : bool
        Delete the files an earlier run of the same command wrote before running.
    inputs : iterable of path
        Inputs of the command: the output folder must not be, or be inside, any of them.
    option : str
        How the user named the folder (for messages).

    Yields
    ------
    OutputClaim

    Raises
    ------
    BrainmatchInputError
        The path is a file; it is an input or inside one; it holds another command's
        outputs or files the command did not write; another run holds it; it is not
        writable.
    """
    out = Path(path).absolute()
    held = _HELD.get(out)
    if held is not None:
        if held != command:
            raise BrainmatchInputError(
                f"the folder is being written by `brainmatch {held}` in this process", out
            )
        yield OutputClaim(path=out, command=command)  # the outer claim keeps the books
        return
    if out.exists() and not out.is_dir():
        raise BrainmatchInputError(f"exists and is not a folder; {option} must name a folder", out)
    _check_not_inside(out.resolve(), inputs, option)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BrainmatchInputError(
            f"cannot create the output folder ({exc.strerror})", out
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise BrainmatchInputError("the output folder is not writable", out)
    written: set[str] = set()
    try:
        with _lock(out, command):
            manifest = read_manifest(out)
            present = _files(out)
            if manifest is not None and manifest.get("command") not in (None, command):
                raise BrainmatchInputError(
                    f"the folder holds the outputs of `brainmatch {manifest.get('command')}`; "
                    f"`brainmatch {command}` will not write into it (choose another {option})",
                    out,
                )
            raw = manifest.get("files") if manifest else None
            recorded = {str(f) for f in raw} if isinstance(raw, list) else set()
            if manifest is not None and manifest.get("running"):
                # an earlier run of this command was interrupted (the lock is free, so its
                # process is gone): what it left is its own partial output
                recorded |= present
            foreign = sorted(present - recorded)
            if foreign:
                shown = ", ".join(foreign[:5]) + (
                    f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
                )
                raise BrainmatchInputError(
                    f"the folder holds files `brainmatch {command}` did not write ({shown}); "
                    f"choose a new or empty {option}",
                    out,
                )
            if overwrite:
                parents: set[Path] = set()
                for rel in sorted(recorded & present, reverse=True):
                    with contextlib.suppress(FileNotFoundError):
                        (out / rel).unlink()
                    parents.update(q for q in (out / rel).parents if q != out and out in q.parents)
                for folder in sorted(parents, key=lambda q: len(q.parts), reverse=True):
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only the command's folders, and only when empty
                recorded = set()
            write_manifest(out, command, recorded & _files(out), running=True)
            claim = OutputClaim(path=out, command=command, previous=set(recorded))
            _HELD[out] = command
            try:
                yield claim
            finally:
                _HELD.pop(out, None)
                written = recorded | _files(out)
                with contextlib.suppress(OSError):
                    write_manifest(out, command, written, running=False)
    finally:
        if created and not written:
            # the run failed before writing anything: leave no empty folder behind
            with contextlib.suppress(OSError):
                (out / MANIFEST).unlink()
                (out / LOCK).unlink()
                out.rmdir()
