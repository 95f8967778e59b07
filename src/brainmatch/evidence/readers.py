"""Read effect-size tables: CSV / TSV / XLSX, and the Metapsy data standard.

:func:`read_table` reads any of the formats (the delimiter of a ``.csv`` is sniffed;
semicolon-separated files with decimal commas, as Metapsy and European spreadsheets
write them, are recognised).  :func:`effects_table` turns the table into one row per
comparison with ``yi`` (effect) and ``vi`` (sampling variance), either from columns
holding precomputed effects or from raw data (means / SDs / ns, change scores, or
event counts, see :mod:`brainmatch.evidence.effects`).

Metapsy (https://docs.metapsy.org/data/): a ``data.csv`` with ``study``,
``condition_arm1`` / ``condition_arm2``, ``multi_arm1`` / ``multi_arm2``, the
precomputed Hedges' g ``.g`` and its standard error ``.g_se`` (positive ``g`` favours
arm 1), one row per comparison *and outcome instrument*.  :func:`metapsy_comparisons`
combines the instruments of one comparison into a single effect (compound-symmetric
correlation ``rho``, metafor's ``aggregate``) so each comparison counts once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence import effects as es

NA_VALUES = ["NA", "N/A", "n/a", "na", "NaN", "nan", "", "."]
METAPSY_COLUMNS = {"study", "condition_arm1", "condition_arm2", ".g", ".g_se"}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV or XLSX table.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (comma or semicolon separated; decimal commas with semicolons),
        ``.tsv`` / ``.txt`` (tab separated) or ``.xlsx`` (first sheet).

    Returns
    -------
    DataFrame
        The table; ``NA``, ``n/a`` and empty cells are missing.
    """
    from brainmatch._table import read_any_table

    df = read_any_table(path)
    unnamed = [c for c in df.columns if c.startswith("Unnamed:") or c == ""]
    if unnamed and df[unnamed].isna().all().all():
        df = df.drop(columns=unnamed)
    return df


def is_metapsy(df: pd.DataFrame) -> bool:
    """True when the table follows the Metapsy data standard."""
    return METAPSY_COLUMNS.issubset(df.columns)


def require_columns(df: pd.DataFrame, columns: list[str], path: str | Path | None) -> None:
    """Raise naming every missing column (and the ones that exist)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        have = ", ".join(map(str, df.columns[:30]))
        raise BrainmatchInputError(
            f"missing column(s) {', '.join(repr(m) for m in missing)}; the table has: {have}", path
        )


def numeric_column(
    df: pd.DataFrame, column: str, path: str | Path | None, allow_missing: bool = False
) -> np.ndarray:
    """A column as floats; non-numeric cells raise an error naming row and value.

    Parameters
    ----------
    df : DataFrame
        The table.
    column : str
        Column name.
    path : str or Path or None
        File, for the message.
    allow_missing : bool
        Keep missing cells as NaN instead of raising.

    Returns
    -------
    ndarray
        Float values.
    """
    require_columns(df, [column], path)
    raw = df[column]
    if raw.dtype == object:
        raw = raw.map(lambda x: x.strip().replace(",", ".") if isinstance(x, str) else x)
    vals = pd.to_numeric(raw, errors="coerce")
    bad = vals.isna() & raw.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BrainmatchInputError(
            f"column {column!r} row {i + 2} holds {df[column].iloc[i]!r}, not a number "
            f"({int(bad.sum())} non-numeric cell(s))",
            path,
        )
    if not allow_missing and vals.isna().any():
        i = int(np.flatnonzero(vals.isna().to_numpy())[0])
        raise BrainmatchInputError(
            f"column {column!r} row {i + 2} is empty ({int(vals.isna().sum())} missing cell(s))",
            path,
        )
    return vals.to_numpy(dtype=float)


def apply_selection(
    df: pd.DataFrame, select: list[str] | None, path: str | Path | None
) -> pd.DataFrame:
    """Keep rows matching every ``COLUMN=VALUE`` (``VALUE`` may be ``a|b`` for either).

    Parameters
    ----------
    df : DataFrame
        The table.
    select : list of str
        Conditions ``COLUMN=VALUE``; ``COLUMN!=VALUE`` excludes.
    path : str or Path or None
        File, for messages.

    Returns
    -------
    DataFrame
        The matching rows.
    """
    for cond in select or []:
        m = re.fullmatch(r"\s*([^=!]+?)\s*(!?=)\s*(.*)", cond)
        if not m:
            raise BrainmatchInputError(f"--select {cond!r} is not COLUMN=VALUE")
        col, op, value = m.group(1), m.group(2), m.group(3)
        require_columns(df, [col], path)
        wanted = {v.strip().lower() for v in value.split("|")}
        hit = df[col].astype(str).str.strip().str.lower().isin(wanted)
        df = df[hit] if op == "=" else df[~hit]
        if df.empty:
            raise BrainmatchInputError(f"no rows left after --select {cond!r}", path)
    return df


@dataclass
class RawColumns:
    """Column names holding raw data, for effects computed from it."""

    m1: str = "m1"
    sd1: str = "sd1"
    n1: str = "n1"
    m2: str = "m2"
    sd2: str = "sd2"
    n2: str = "n2"
    events1: str = "events1"
    events2: str = "events2"


def effects_table(
    df: pd.DataFrame,
    *,
    path: str | Path | None = None,
    effect: str | None = None,
    variance: str | None = None,
    se: str | None = None,
    measure: str | None = None,
    raw: RawColumns | None = None,
    study: str | None = None,
) -> pd.DataFrame:
    """Add ``yi``, ``vi`` and ``study_label`` columns to a table of studies.

    Parameters
    ----------
    df : DataFrame
        One row per comparison.
    path : str or Path, optional
        File, for messages.
    effect : str, optional
        Column with precomputed effects (needs ``variance`` or ``se``).
    variance, se : str, optional
        Column with the sampling variance, or with the standard error.
    measure : {"SMD", "SMDC", "MD", "OR", "RR"}, optional
        Compute effects from raw columns (see :class:`RawColumns`; ``SMDC`` reads
        mean changes and SDs of change from the same columns).
    raw : RawColumns, optional
        Raw-data column names.
    study : str, optional
        Column with study labels (default: ``study`` if present, else row numbers).

    Returns
    -------
    DataFrame
        A copy with ``yi``, ``vi`` and ``study_label``.
    """
    out = df.copy()
    if effect is not None:
        if (variance is None) == (se is None):
            raise BrainmatchInputError(
                "give exactly one of --variance COL or --se COL with --effect"
            )
        yi = numeric_column(out, effect, path)
        if variance is not None:
            vi = numeric_column(out, variance, path)
            what = f"variance column {variance!r}"
        else:
            s = numeric_column(out, str(se), path)
            vi = s**2
            what = f"standard-error column {se!r}"
            bad_se = s <= 0
            if bad_se.any():
                i = int(np.flatnonzero(bad_se)[0])
                raise BrainmatchInputError(
                    f"{what} row {i + 2} is {s[i]!r}: standard errors must be positive", path
                )
        bad = ~(vi > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BrainmatchInputError(
                f"{what} row {i + 2} is {vi[i]!r}: variances must be positive "
                f"({int(bad.sum())} zero or negative)",
                path,
            )
    elif measure is not None:
        measure = measure.upper()
        if measure not in es.MEASURES:
            raise BrainmatchInputError(
                f"unknown --measure {measure!r}; use one of {', '.join(es.MEASURES)}"
            )
        rc = raw or RawColumns()
        if measure in ("OR", "RR"):
            cols = [rc.events1, rc.n1, rc.events2, rc.n2]
        else:
            cols = [rc.m1, rc.sd1, rc.n1, rc.m2, rc.sd2, rc.n2]
        require_columns(out, cols, path)
        args = [numeric_column(out, c, path) for c in cols]
        try:
            yi, vi = es.MEASURES[measure](*args)
        except BrainmatchInputError as exc:
            raise BrainmatchInputError(exc.reason, path) from None
    else:
        raise BrainmatchInputError(
            "say how to get effects: --effect COL with --variance/--se COL, "
            "or --measure SMD|SMDC|MD|OR|RR with the raw-data columns",
            path,
        )
    out["yi"] = yi
    out["vi"] = vi
    if study is not None:
        require_columns(out, [study], path)
        out["study_label"] = out[study].astype(str)
    elif "study" in out.columns:
        out["study_label"] = out["study"].astype(str)
    else:
        out["study_label"] = [f"study {i + 1}" for i in range(len(out))]
    return out


def aggregate_within(df: pd.DataFrame, keys: list[str], rho: float = 0.5) -> pd.DataFrame:
    """Combine rows sharing ``keys`` (e.g. several instruments of one comparison).

    Parameters
    ----------
    df : DataFrame
        Table with ``yi`` and ``vi``.
    keys : list of str
        Columns identifying one comparison.
    rho : float
        Assumed correlation between the combined effects' sampling errors.

    Returns
    -------
    DataFrame
        One row per comparison (first row's other columns kept, ``n_outcomes`` added).
    """
    rows = []
    grouped = df.groupby(keys, dropna=False, sort=False)
    for _, g in grouped:
        y, v = es.aggregate_dependent(g["yi"].to_numpy(), g["vi"].to_numpy(), rho)
        row = g.iloc[0].copy()
        row["yi"], row["vi"], row["n_outcomes"] = y, v, len(g)
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def metapsy_comparisons(df: pd.DataFrame, rho: float = 0.5) -> pd.DataFrame:
    """Metapsy rows -> one effect per comparison (instruments combined).

    Parameters
    ----------
    df : DataFrame
        A Metapsy ``data.csv`` (possibly filtered).
    rho : float
        Within-study correlation between instruments (0.5, as metapsyTools assumes).

    Returns
    -------
    DataFrame
        Columns of the first row of each comparison plus ``yi``, ``vi``, ``n_outcomes``,
        ``study_label``, ``arm1``, ``arm2``, ``arm1_id``, ``control_id`` and the group sizes
        ``n_group1`` / ``n_group2`` (first available of the msd, change, event,
        randomised and baseline sizes) (the shared control arm:
        comparisons of one study with the same ``control_id`` share its participants).
    """
    need = ["study", "condition_arm1", "condition_arm2", ".g", ".g_se"]
    require_columns(df, need, None)
    d = df.copy()
    d = d[d[".g"].notna() & d[".g_se"].notna()]
    if d.empty:
        raise BrainmatchInputError("no Metapsy rows with both .g and .g_se")
    d["yi"] = d[".g"].astype(float)
    d["vi"] = d[".g_se"].astype(float) ** 2
    for side in ("1", "2"):
        n = pd.Series(np.nan, index=d.index)
        for c in (
            f"n_arm{side}",
            f"n_change_arm{side}",
            f".totaln_arm{side}",
            f"totaln_arm{side}",
            f"rand_arm{side}",
            f"baseline_n_arm{side}",
        ):
            if c in d.columns:
                n = n.fillna(pd.to_numeric(d[c], errors="coerce"))
        d[f"n_group{side}"] = n
    for c in ("multi_arm1", "multi_arm2"):
        if c not in d.columns:
            d[c] = np.nan
        d[c] = d[c].fillna("")
    keys = ["study", "condition_arm1", "multi_arm1", "condition_arm2", "multi_arm2"]
    agg = aggregate_within(d, keys, rho)
    agg["arm1"] = agg["condition_arm1"].astype(str)
    agg["arm2"] = agg["condition_arm2"].astype(str)
    agg["arm1_id"] = agg["condition_arm1"].astype(str) + "|" + agg["multi_arm1"].astype(str)
    agg["control_id"] = agg["condition_arm2"].astype(str) + "|" + agg["multi_arm2"].astype(str)
    label = agg["study"].astype(str)
    multi = agg.duplicated("study", keep=False)
    suffix = agg["condition_arm1"].astype(str) + np.where(
        agg["multi_arm1"].astype(str) != "", " " + agg["multi_arm1"].astype(str), ""
    )
    agg["study_label"] = np.where(
        multi, label + " (" + suffix + " vs " + agg["condition_arm2"].astype(str) + ")", label
    )
    return agg


def split_shared_controls(
    df: pd.DataFrame, study: str, control: str, n_control: str | None
) -> pd.DataFrame:
    """Handle multi-arm studies whose comparisons share one control group.

    The shared control's participants would otherwise be counted once per
    comparison.  Following the Cochrane Handbook (sec. 23.3.4), the control group is
    split evenly between its ``m`` comparisons: for standardised mean differences the
    control's contribution ``1/n_c`` to each sampling variance becomes ``m/n_c``,
    i.e. ``vi += (m - 1) / n_c``.

    Parameters
    ----------
    df : DataFrame
        Table with ``yi``, ``vi``.
    study, control : str
        Columns identifying the study and its control arm.
    n_control : str or None
        Column with the control group's size (required when a control is shared).

    Returns
    -------
    DataFrame
        Copy with adjusted ``vi`` and ``shared_control_m`` (comparisons per control).
    """
    out = df.copy()
    m = out.groupby([study, control], dropna=False)[control].transform("size").to_numpy()
    out["shared_control_m"] = m
    if (m > 1).any():
        if n_control is None or n_control not in out.columns:
            raise BrainmatchInputError(
                "some comparisons share a control group (multi-arm studies); give the control "
                "group size column (--n-control COL) to split it, or --multiarm ignore"
            )
        nc = pd.to_numeric(out[n_control], errors="coerce").to_numpy(dtype=float)
        shared = m > 1
        if np.any(~np.isfinite(nc[shared]) | (nc[shared] <= 0)):
            raise BrainmatchInputError(
                f"column {n_control!r} lacks a positive control size for a multi-arm study"
            )
        out.loc[shared, "vi"] = out.loc[shared, "vi"].to_numpy() + (m[shared] - 1) / nc[shared]
    return out
