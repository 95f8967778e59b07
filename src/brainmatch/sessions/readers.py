"""Read session-level tables (CSV / TSV / XLSX, long format) and check them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.readers import read_table
from brainmatch.sessions.schema import validate_sessions


def read_sessions(
    path: str | Path,
    *,
    rating_scale: tuple[float, float] = (0.0, 100.0),
    symptom_scale: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Read a session table (one row per participant x session) and validate it.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (comma or semicolon separated), ``.tsv`` or ``.xlsx`` (first sheet).
    rating_scale : (float, float)
        Range of the within-session ratings (SUDS 0-100 by default).
    symptom_scale : (float, float), optional
        Range of ``symptom_score``.

    Returns
    -------
    DataFrame
        The normalised table (see :func:`brainmatch.sessions.schema.validate_sessions`).

    Raises
    ------
    BrainmatchInputError
        The file is missing or unreadable, or breaks the schema; the message names the
        file, the row (its line in the file) and the problem.
    """
    p = Path(path)
    if p.is_dir():
        cand = p / "sessions.tsv"
        if not cand.is_file():
            raise BrainmatchInputError("is a folder without sessions.tsv; give the table", p)
        p = cand
    df = read_table(p)
    df["_line"] = range(2, len(df) + 2)
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()][0]
        raise BrainmatchInputError(f"column {dup!r} appears twice", p)
    return validate_sessions(df, p, rating_scale=rating_scale, symptom_scale=symptom_scale)
