"""The session-level schema: one row per participant x therapy session.

Trials that augment individual therapy sessions (a dose of D-cycloserine before exposure,
brain stimulation during it, exercise right before it, sessions scheduled by time of day)
record what happened at every session.  brainmatch reads such data in long format, one
row per participant and session, with these columns (only the first five are required;
cells of optional columns may be empty):

======================  =====================================================================
column                  meaning
======================  =====================================================================
``participant_id``      participant label (BIDS style ``sub-01`` or any text)
``arm``                 randomised arm / augmentation condition (e.g. ``DCS``, ``placebo``);
                        constant within a participant
``session``             session number (integer >= 1), increasing down a participant's rows
``fear_start``          fear / distress at the start of the session (SUDS 0-100)
``fear_end``            ... at the end of the session (SUDS 0-100)
``fear_peak``           ... at its peak during the session (SUDS 0-100)
``datetime``            when the session started (ISO 8601, e.g. ``2024-03-05T09:30``);
                        must increase with the session number
``time_of_day``         session start as ``HH:MM`` or decimal hours (derived from
                        ``datetime`` when absent)
``augmented``           1 when the active augmentation was given at this session, 0 for
                        placebo / none (derived from ``augmentation_type`` when absent)
``augmentation_type``   ``pharmacological``, ``nmda``, ``psychedelic``, ``brain_stimulation``,
                        ``exercise``, ``sleep_circadian``, ``other`` (the codes of
                        ``brainmatch meta --schema augmentation``) or ``none``; a placebo
                        session keeps the type of the augmentation it stands in for
``dose``                dose given (number >= 0; ``dose_unit`` names the unit)
``timing``              ``before``, ``during`` or ``after`` the session, or ``none``
``timing_minutes``      minutes between the augmentation and the session (>= 0): before its
                        start, after its start (during) or after its end (after)
``exercise_type``       exercise before the session: ``none``, ``aerobic``, ``resistance``,
                        ``mixed``, ``other``
``exercise_minutes``    minutes of that exercise (>= 0)
``exercise_intensity``  ``none``, ``light``, ``moderate``, ``vigorous``
``symptom_score``       between-session (weekly) symptom score measured after the session
``cortisol``            salivary cortisol (nmol/L, >= 0)
``imaging_session``     BIDS session label of a scan linked to this session (e.g. ``ses-02``)
======================  =====================================================================

Any other column is kept (e.g. participant-level brain measures such as baseline
vmPFC-amygdala connectivity, used as moderators with ``--brain-moderators``).

Spelling variants of the categories (``NMDA-agonist``, ``TMS``, ``pre-session``,
``running``, ``high``) are mapped to the codes; anything else is refused with the
closest code suggested.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.schema import AUGMENTATION_TYPES, TIMINGS

REQUIRED = ("participant_id", "arm", "session", "fear_start", "fear_end")
RATINGS = ("fear_start", "fear_peak", "fear_end")
OPTIONAL = (
    "fear_peak",
    "datetime",
    "time_of_day",
    "augmented",
    "augmentation_type",
    "dose",
    "dose_unit",
    "timing",
    "timing_minutes",
    "exercise_type",
    "exercise_minutes",
    "exercise_intensity",
    "symptom_score",
    "cortisol",
    "imaging_session",
)
COLUMNS = REQUIRED + OPTIONAL

SESSION_AUGMENTATION_TYPES = (*AUGMENTATION_TYPES, "none")
SESSION_TIMINGS = (*TIMINGS, "none")
EXERCISE_TYPES = ("none", "aerobic", "resistance", "mixed", "other")
EXERCISE_INTENSITIES = ("none", "light", "moderate", "vigorous")

_NONE = {"none": "none", "no": "none", "placebo": "none", "na": "none", "0": "none"}
ALIASES: dict[str, dict[str, str]] = {
    "augmentation_type": {
        **{c: c for c in SESSION_AUGMENTATION_TYPES},
        **_NONE,
        "pharmacology": "pharmacological",
        "drug": "pharmacological",
        "medication": "pharmacological",
        "psychedelics": "psychedelic",
        "nmda_targeting": "nmda",
        "nmda_agonist": "nmda",
        "nmda_partial_agonist": "nmda",
        "d_cycloserine": "nmda",
        "dcs": "nmda",
        "ketamine": "nmda",
        "stimulation": "brain_stimulation",
        "neurostimulation": "brain_stimulation",
        "tms": "brain_stimulation",
        "rtms": "brain_stimulation",
        "tdcs": "brain_stimulation",
        "physical_activity": "exercise",
        "sleep": "sleep_circadian",
        "circadian": "sleep_circadian",
    },
    "timing": {
        **{c: c for c in SESSION_TIMINGS},
        **_NONE,
        "pre": "before",
        "pre_session": "before",
        "prior": "before",
        "within": "during",
        "in_session": "during",
        "post": "after",
        "post_session": "after",
    },
    "exercise_type": {
        **{c: c for c in EXERCISE_TYPES},
        **_NONE,
        "running": "aerobic",
        "jogging": "aerobic",
        "cycling": "aerobic",
        "walking": "aerobic",
        "cardio": "aerobic",
        "hiit": "aerobic",
        "strength": "resistance",
        "weights": "resistance",
        "combined": "mixed",
    },
    "exercise_intensity": {
        **{c: c for c in EXERCISE_INTENSITIES},
        **_NONE,
        "low": "light",
        "mild": "light",
        "medium": "moderate",
        "moderate_intensity": "moderate",
        "high": "vigorous",
        "hard": "vigorous",
        "intense": "vigorous",
    },
}
ALLOWED = {
    "augmentation_type": SESSION_AUGMENTATION_TYPES,
    "timing": SESSION_TIMINGS,
    "exercise_type": EXERCISE_TYPES,
    "exercise_intensity": EXERCISE_INTENSITIES,
}
_TRUE = {"1", "1.0", "yes", "y", "true", "t", "active"}
_FALSE = {"0", "0.0", "no", "n", "false", "f", "placebo", "none"}


def _key(value: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(value).strip().lower()).strip("_")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def did_you_mean(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(_key(value), [_key(c) for c in choices], n=1, cutoff=0.5)
    if not close:
        return ""
    canon = {_key(c): c for c in choices}
    return f"; did you mean {canon[close[0]]!r}?"


def _suggest_category(column: str, value: Any) -> str:
    aliases = ALIASES[column]
    close = difflib.get_close_matches(_key(value), list(aliases), n=1, cutoff=0.5)
    return f"; did you mean {aliases[close[0]]!r}?" if close else ""


def _row(df: pd.DataFrame, i: int) -> int:
    """The spreadsheet line of positional row ``i`` (header is line 1)."""
    return int(df["_line"].iloc[i])


def _numeric(df: pd.DataFrame, column: str, path: Path | None) -> pd.Series:
    raw = df[column]
    if raw.dtype == object:
        raw = raw.map(lambda x: x.strip().replace(",", ".") if isinstance(x, str) else x)
    vals = pd.to_numeric(raw, errors="coerce")
    bad = vals.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BrainmatchInputError(
            f"column {column!r} row {_row(df, i)} holds {df[column].iloc[i]!r}, not a number "
            f"({int(bad.sum())} non-numeric cell(s))",
            path,
        )
    return vals.astype(float)


def _category(df: pd.DataFrame, column: str, path: Path | None) -> pd.Series:
    aliases = ALIASES[column]
    out: list[str | None] = []
    for i, value in enumerate(df[column].tolist()):
        if _missing(value) or str(value).strip() == "":
            out.append(None)
            continue
        code = aliases.get(_key(value))
        if code is None:
            raise BrainmatchInputError(
                f"column {column!r} row {_row(df, i)} is {value!r}: unknown category"
                f"{_suggest_category(column, value)} (allowed: {', '.join(ALLOWED[column])})",
                path,
            )
        out.append(code)
    return pd.Series(out, index=df.index, dtype=object)


def _hours(df: pd.DataFrame, column: str, path: Path | None) -> pd.Series:
    out: list[float] = []
    for i, value in enumerate(df[column].tolist()):
        if _missing(value) or str(value).strip() == "":
            out.append(np.nan)
            continue
        if hasattr(value, "hour") and hasattr(value, "minute"):  # datetime.time from Excel
            out.append(value.hour + value.minute / 60)
            continue
        text = str(value).strip()
        m = re.fullmatch(r"(\d{1,2})[:h.](\d{2})(?::\d{2})?", text)
        if m:
            h = int(m.group(1)) + int(m.group(2)) / 60
        else:
            try:
                h = float(text)
            except ValueError:
                raise BrainmatchInputError(
                    f"column {column!r} row {_row(df, i)} is {value!r}: give the session start "
                    f"as HH:MM or decimal hours",
                    path,
                ) from None
        if not 0 <= h < 24:
            raise BrainmatchInputError(
                f"column {column!r} row {_row(df, i)} is {value!r}: a time of day must lie in "
                f"[00:00, 24:00)",
                path,
            )
        out.append(h)
    return pd.Series(out, index=df.index, dtype=float)


def _flag(df: pd.DataFrame, column: str, path: Path | None) -> pd.Series:
    out: list[float] = []
    for i, value in enumerate(df[column].tolist()):
        if _missing(value) or str(value).strip() == "":
            out.append(np.nan)
            continue
        k = str(value).strip().lower()
        if k in _TRUE:
            out.append(1.0)
        elif k in _FALSE:
            out.append(0.0)
        else:
            raise BrainmatchInputError(
                f"column {column!r} row {_row(df, i)} is {value!r}: use 1/0 (or yes/no)", path
            )
    return pd.Series(out, index=df.index, dtype=float)


def _check_range(
    df: pd.DataFrame, column: str, lo: float, hi: float, what: str, path: Path | None
) -> None:
    vals = df[column].to_numpy(dtype=float)
    bad = np.isfinite(vals) & ((vals < lo) | (vals > hi))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BrainmatchInputError(
            f"column {column!r} row {_row(df, i)} is {vals[i]:g}, outside {what} "
            f"[{lo:g}, {hi:g}] ({int(bad.sum())} value(s) outside)",
            path,
        )


def validate_sessions(
    df: pd.DataFrame,
    path: str | Path | None = None,
    *,
    rating_scale: tuple[float, float] = (0.0, 100.0),
    symptom_scale: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Check a session table against the schema and return it normalised.

    Parameters
    ----------
    df : DataFrame
        One row per participant x session (see the module docstring for the columns).
    path : str or Path, optional
        The file it came from, named in messages.
    rating_scale : (float, float)
        Range of the within-session ratings (SUDS: 0-100).
    symptom_scale : (float, float), optional
        Range of ``symptom_score`` (unchecked when None).

    Returns
    -------
    DataFrame
        The table with categories mapped to their codes, numbers as floats, ``session``
        as int, ``time_of_day`` in decimal hours, ``augmented`` as 0/1, and the file line
        of each row in ``_line``; rows sorted by participant (in order of appearance) and
        session.

    Raises
    ------
    BrainmatchInputError
        Missing columns (with the closest existing column), unknown categories (with the
        closest code), non-numeric cells, ratings outside their scale, duplicated
        sessions, sessions out of order, an arm changing within a participant.
    """
    p = Path(path) if path is not None else None
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    if "_line" not in df.columns:
        df["_line"] = np.arange(len(df)) + 2
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        have = [c for c in df.columns if c != "_line"]
        unknown = [c for c in have if c not in COLUMNS]  # a schema column is no misspelling
        guesses = [
            f"{did_you_mean(m, unknown).removeprefix('; ').rstrip('?')} for {m!r}"
            for m in missing
            if did_you_mean(m, unknown)
        ]
        hints = f" ({'; '.join(guesses)}?)" if guesses else ""
        raise BrainmatchInputError(
            f"missing required column(s) {', '.join(repr(m) for m in missing)}{hints}; "
            f"the table has: {', '.join(have[:30])}",
            p,
        )
    lo, hi = rating_scale
    if not lo < hi:
        raise BrainmatchInputError(f"rating scale [{lo:g}, {hi:g}] is empty")

    for col in ("participant_id", "arm"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise BrainmatchInputError(f"column {col!r} row {_row(df, i)} is empty", p)
        df[col] = df[col].astype(str).str.strip()

    ses = _numeric(df, "session", p)
    if ses.isna().any():
        i = int(np.flatnonzero(ses.isna().to_numpy())[0])
        raise BrainmatchInputError(f"column 'session' row {_row(df, i)} is empty", p)
    bad = (ses != np.round(ses)) | (ses < 1)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BrainmatchInputError(
            f"column 'session' row {_row(df, i)} is {df['session'].iloc[i]!r}: session numbers "
            f"are integers >= 1",
            p,
        )
    df["session"] = ses.astype(int)

    numeric = [
        c
        for c in (
            *RATINGS,
            "dose",
            "timing_minutes",
            "exercise_minutes",
            "symptom_score",
            "cortisol",
        )
        if c in df.columns
    ]
    for col in numeric:
        df[col] = _numeric(df, col, p)
    for col in RATINGS:
        if col in df.columns:
            _check_range(df, col, lo, hi, "the rating scale (--rating-scale)", p)
    if symptom_scale is not None and "symptom_score" in df.columns:
        _check_range(df, "symptom_score", *symptom_scale, "the symptom scale", p)
    for col in ("dose", "timing_minutes", "exercise_minutes", "cortisol"):
        if col in df.columns:
            _check_range(df, col, 0.0, np.inf, "the allowed range", p)
    for col in ALLOWED:
        if col in df.columns:
            df[col] = _category(df, col, p)

    if "augmented" in df.columns:
        df["augmented"] = _flag(df, "augmented", p)
        if "augmentation_type" in df.columns:
            clash = (df["augmented"] == 1) & (df["augmentation_type"] == "none")
            if clash.any():
                i = int(np.flatnonzero(clash.to_numpy())[0])
                raise BrainmatchInputError(
                    f"row {_row(df, i)}: 'augmented' is 1 but 'augmentation_type' is 'none'", p
                )
    elif "augmentation_type" in df.columns:
        t = df["augmentation_type"]
        df["augmented"] = np.where(t.isna(), np.nan, (t != "none").astype(float))
    else:
        df["augmented"] = 0.0
    df["augmented"] = df["augmented"].fillna(0.0)

    if "datetime" in df.columns:
        parsed = pd.to_datetime(df["datetime"], errors="coerce", format="mixed")
        bad = parsed.isna() & df["datetime"].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise BrainmatchInputError(
                f"column 'datetime' row {_row(df, i)} is {df['datetime'].iloc[i]!r}: not a date "
                f"and time (use ISO 8601, e.g. 2024-03-05T09:30)",
                p,
            )
        df["datetime"] = parsed
    if "time_of_day" in df.columns:
        df["time_of_day"] = _hours(df, "time_of_day", p)
    elif "datetime" in df.columns:
        dt = df["datetime"]
        df["time_of_day"] = dt.dt.hour + dt.dt.minute / 60

    _check_participants(df, p)
    order = {pid: k for k, pid in enumerate(dict.fromkeys(df["participant_id"]))}
    df = df.assign(_order=df["participant_id"].map(order))
    df = df.sort_values(["_order", "session"], kind="stable").drop(columns="_order")
    return df.reset_index(drop=True)


def _check_participants(df: pd.DataFrame, p: Path | None) -> None:
    for pid, g in df.groupby("participant_id", sort=False):
        arms = list(dict.fromkeys(g["arm"]))
        if len(arms) > 1:
            raise BrainmatchInputError(
                f"participant {pid!r} is in more than one arm ({', '.join(arms)}); 'arm' is "
                f"the randomised condition and must be constant within a participant",
                p,
            )
        s = g["session"].to_numpy()
        lines = g["_line"].to_numpy()
        seen: dict[int, int] = {}
        for k, line in zip(s, lines, strict=True):
            if int(k) in seen:
                raise BrainmatchInputError(
                    f"participant {pid!r} has session {int(k)} twice (rows {seen[int(k)]} and "
                    f"{int(line)}): duplicated session",
                    p,
                )
            seen[int(k)] = int(line)
        down = np.flatnonzero(np.diff(s) < 0)
        if down.size:
            j = int(down[0])
            raise BrainmatchInputError(
                f"participant {pid!r}: sessions out of order: session {int(s[j + 1])} (row "
                f"{int(lines[j + 1])}) comes after session {int(s[j])} (row {int(lines[j])}); "
                f"sort each participant's rows by session",
                p,
            )
        if "datetime" in g.columns:
            dt = g["datetime"].to_numpy()
            ok = ~pd.isna(dt)
            s_ok, dt_ok, l_ok = s[ok], dt[ok], lines[ok]
            back = np.flatnonzero(np.diff(dt_ok).astype("timedelta64[s]").astype(np.int64) <= 0)
            if back.size:
                j = int(back[0])
                raise BrainmatchInputError(
                    f"participant {pid!r}: sessions out of order: session {int(s_ok[j + 1])} "
                    f"(row {int(l_ok[j + 1])}, {pd.Timestamp(dt_ok[j + 1])}) is not after "
                    f"session {int(s_ok[j])} (row {int(l_ok[j])}, {pd.Timestamp(dt_ok[j])})",
                    p,
                )
