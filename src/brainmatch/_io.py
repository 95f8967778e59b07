"""Atomic file writes: a reader never sees a half-written file.

Each writer writes to a temporary file in the destination folder and then renames it
over the destination (``os.replace`` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it to ``path`` on success.

    Parameters
    ----------
    path : str or Path
        Final destination.
    mode : {"w", "wb"}
        Text or binary write mode.
    **kwargs
        Passed to :func:`open` (e.g. ``encoding``, ``newline``).

    Yields
    ------
    file object
        The open temporary file.  On an exception it is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def default_mode() -> int:
    """Permissions a newly created file gets under the current umask (0o666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (keys in insertion order) atomically.

    ``indent=None`` writes one line with Python's C encoder (the indented form is
    encoded in pure Python: ~3x slower on a record of thousands of features).
    """
    text = json.dumps(obj, indent=indent, allow_nan=False)
    write_text(path, text + "\n")


def write_tsv(path: str | Path, table: pd.DataFrame, float_format: str | None = None) -> None:
    """Write a table as BIDS TSV (tab separated, ``n/a`` for missing) atomically."""
    text = table.to_csv(
        sep="\t", index=False, na_rep="n/a", float_format=float_format, lineterminator="\n"
    )
    write_text(path, text)


def json_safe(obj: Any) -> Any:
    """A structure JSON can hold: numpy scalars and arrays as Python numbers and lists,
    NaN and infinities as None, keys as strings, paths as strings, timestamps as ISO 8601.

    The one JSON cleaner of brainmatch: results' ``to_dict()`` and reports call it."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, pd.Timestamp | datetime.date):
        return obj.isoformat()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
