"""Tables in, validated survival treatment selection out (``brainmatch durability``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.change.data import ID, META_COLUMNS, read_table
from brainmatch.durability.validate import DurabilityResult, validate_durability
from brainmatch.errors import BrainmatchInputError

#: Length of one unit in weeks.
_UNITS = {"d": 1 / 7, "w": 1.0, "m": 52.1775 / 12, "y": 52.1775}


def parse_horizon(value: str | float, time_unit: str = "weeks") -> float:
    """``--horizon``: a number in the time column's unit, or with a unit (``52w``, ``12m``,
    ``1y``, ``365d``) converted to ``time_unit`` (days, weeks, months or years)."""
    unit = time_unit.strip().lower()[:1]
    if unit not in _UNITS:
        raise BrainmatchInputError(f"--time-unit {time_unit!r}: use days, weeks, months or years")
    if isinstance(value, int | float):
        number, suffix = float(value), unit
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([dwmy]?)\s*", value.lower())
        if not m:
            raise BrainmatchInputError(
                f"--horizon {value!r}: expected a number with an optional unit, e.g. 52w, 12m, 1y"
            )
        number, suffix = float(m.group(1)), (m.group(2) or unit)
    if number <= 0:
        raise BrainmatchInputError(f"--horizon {value!r}: must be positive")
    return number * _UNITS[suffix] / _UNITS[unit]


def read_survival_data(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any],
    *,
    treatment_column: str,
    time_column: str,
    event_column: str,
    covariates: list[str] | tuple[str, ...] = (),
    session: str | None = None,
    site_column: str | None = None,
) -> dict[str, Any]:
    """Merge a feature table with outcome tables into survival data (shared by
    ``brainmatch durability`` and ``brainmatch train --time-column``).

    Returns
    -------
    dict
        ``X`` (complete matrix), ``time``, ``event``, ``arm``, ``ids``, ``site`` (None
        without ``site_column``), ``features`` (column names), ``medians`` (the imputation
        values), ``notes`` and ``sources``.
    """
    ftab, fname = read_table(features, "features", "--features")
    if "session" in ftab.columns:
        if session is None:
            labels = sorted(ftab["session"].astype(str).unique())
            raise BrainmatchInputError(
                f"the feature table has sessions {labels}: pass --session (e.g. the baseline)",
                fname,
            )
        ftab = ftab[ftab["session"].astype(str).str.removeprefix("ses-") == session]
        if ftab.empty:
            raise BrainmatchInputError(f"--session {session!r}: no rows", fname)
    srcs = outcomes if isinstance(outcomes, list | tuple) else [outcomes]
    otab, oname = read_table(srcs[0], "outcomes", "--outcomes")
    for src in srcs[1:]:
        extra, ename = read_table(src, "outcomes", "--outcomes")
        new = [c for c in extra.columns if c == ID or c not in otab.columns]
        otab = otab.merge(extra[new], on=ID, how="left")
        oname = f"{oname} + {ename}"
    for opt, col in (
        ("--treatment-column", treatment_column),
        ("--time-column", time_column),
        ("--event-column", event_column),
        *(("--covariates", c) for c in covariates),
        *((("--site-column", site_column),) if site_column else ()),
    ):
        if col not in otab.columns:
            raise BrainmatchInputError(f"{opt} {col!r}: no such column", oname)
    if ID not in ftab.columns or ID not in otab.columns:
        raise BrainmatchInputError(f"both tables need a '{ID}' column")
    ftab[ID] = ftab[ID].astype(str)
    otab[ID] = otab[ID].astype(str)
    merged = otab.merge(ftab, on=ID, how="inner", suffixes=("", "__f"))
    tt = pd.to_numeric(merged[time_column], errors="coerce")
    ee = pd.to_numeric(merged[event_column], errors="coerce")
    bad_e = (ee.notna() & ~ee.isin([0, 1])) | (ee.isna() & merged[event_column].notna())
    if bad_e.any():
        raise BrainmatchInputError(
            f"--event-column {event_column!r}: values must be 0 (censored) or 1 (event)", oname
        )
    if (tt.isna() & merged[time_column].notna()).any():
        raise BrainmatchInputError(f"--time-column {time_column!r}: values are not numbers", oname)
    if (tt <= 0).any():
        raise BrainmatchInputError(f"--time-column {time_column!r}: times must be positive", oname)
    keep = tt.notna() & ee.notna() & merged[treatment_column].notna()
    if site_column and (merged.loc[keep, site_column].isna()).any():
        raise BrainmatchInputError(
            f"--site-column {site_column!r}: "
            f"{int(merged.loc[keep, site_column].isna().sum())} patient(s) have no site",
            oname,
        )
    notes = []
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} participant(s) without follow-up were left out")
    if keep.sum() < 20:
        raise BrainmatchInputError(
            f"only {int(keep.sum())} participant(s) have features, an arm and follow-up", oname
        )
    merged = merged[keep].reset_index(drop=True)
    fcols = [c for c in ftab.columns if c not in META_COLUMNS and c != ID and c in merged.columns]
    fcols = [c for c in fcols if pd.api.types.is_numeric_dtype(merged[c])]
    cols = fcols + list(covariates)
    X = merged[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    X[~np.isfinite(X)] = np.nan
    empty = np.all(np.isnan(X), axis=0)
    with np.errstate(invalid="ignore"):
        flat = ~empty & ~(np.nanstd(X, axis=0) > 0)
    if (empty | flat).any():
        notes.append(
            f"{int(empty.sum())} feature(s) with no values and {int(flat.sum())} constant "
            "feature(s) were left out"
        )
        X = X[:, ~(empty | flat)]
        cols = [c for c, d in zip(cols, empty | flat, strict=True) if not d]
    if not cols:
        raise BrainmatchInputError("no usable feature (all missing or constant)", fname)
    miss = ~np.isfinite(X)
    if miss.any():
        med = np.nanmedian(X, axis=0)
        X[miss] = np.take(med, np.nonzero(miss)[1])
        notes.append(f"{int(miss.sum())} missing feature value(s) set to the column median")
    return {
        "X": X,
        "time": tt[keep].to_numpy(dtype=float),
        "event": ee[keep].to_numpy(dtype=float),
        "arm": merged[treatment_column].astype(str).to_numpy(),
        "ids": merged[ID].to_numpy(),
        "site": merged[site_column].astype(str).to_numpy() if site_column else None,
        "features": cols,
        "medians": np.nanmedian(np.where(miss, np.nan, X), axis=0),
        "notes": notes,
        "sources": [fname, oname],
    }


def durability_analysis(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any],
    *,
    treatment_column: str,
    time_column: str,
    event_column: str,
    horizon: str | float = 52.0,
    time_unit: str = "weeks",
    covariates: list[str] | tuple[str, ...] = (),
    session: str | None = None,
    site_column: str | None = None,
    model: str = "lasso-cox",
    penalizer: float | str | None = None,
    n_splits: int = 5,
    n_repeats: int = 2,
    n_bootstrap: int = 500,
    n_permutations: int = 0,
    seed: int = 0,
) -> DurabilityResult:
    """Read a feature table and outcome tables and validate selection by relapse-free survival.

    Parameters
    ----------
    features : path or DataFrame
        One row per participant (or per participant and session: pass ``session``).
    outcomes : path, DataFrame or list
        Tables with the arm, the time to relapse / censoring and the event indicator.
    treatment_column, time_column, event_column : str
    horizon : str or float
        ``52w``-style or a number in ``time_unit``.
    covariates : sequence of str
        Numeric outcome-table columns added to the features (e.g. age, baseline severity).
    session : str, optional
        Keep this session of a long feature table (e.g. ``pre``).
    site_column : str, optional
        Outcome-table column with each patient's site: features are harmonised by ComBat
        inside every training fold.
    model, penalizer, n_splits, n_repeats, n_bootstrap, n_permutations, seed
        See :func:`~brainmatch.durability.validate.validate_durability`.
    """
    return read_and_validate(
        features,
        outcomes,
        treatment_column=treatment_column,
        time_column=time_column,
        event_column=event_column,
        horizon=horizon,
        time_unit=time_unit,
        covariates=covariates,
        session=session,
        site_column=site_column,
        model=model,
        penalizer=penalizer,
        n_splits=n_splits,
        n_repeats=n_repeats,
        n_bootstrap=n_bootstrap,
        n_permutations=n_permutations,
        seed=seed,
    )[0]


def read_and_validate(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any],
    *,
    treatment_column: str,
    time_column: str,
    event_column: str,
    horizon: str | float,
    time_unit: str,
    covariates: list[str] | tuple[str, ...],
    session: str | None,
    site_column: str | None,
    model: str,
    penalizer: float | str | None,
    n_splits: int,
    n_repeats: int,
    n_bootstrap: int,
    n_permutations: int,
    seed: int,
) -> tuple[DurabilityResult, dict[str, Any], float]:
    """:func:`durability_analysis` with the data read (for ``train_durability``'s final fit).

    Returns the result, the :func:`read_survival_data` dictionary and the horizon in
    ``time_unit``.
    """
    h = parse_horizon(horizon, time_unit)
    d = read_survival_data(
        features,
        outcomes,
        treatment_column=treatment_column,
        time_column=time_column,
        event_column=event_column,
        covariates=covariates,
        session=session,
        site_column=site_column,
    )
    res = validate_durability(
        d["X"],
        d["time"],
        d["event"],
        d["arm"],
        ids=d["ids"],
        sites=d["site"],
        horizon=h,
        model=model,
        penalizer=penalizer,
        n_splits=n_splits,
        n_repeats=n_repeats,
        n_bootstrap=n_bootstrap,
        n_permutations=n_permutations,
        seed=seed,
    )
    res.notes = d["notes"] + res.notes
    res.params.update({"time_unit": time_unit, "features": d["features"], "sources": d["sources"]})
    return res, d, h
