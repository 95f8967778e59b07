"""Repeated follow-up scores summarised into one sustained outcome per patient.

A long table (``participant_id``, a time column, a score column: e.g. HAMD at weeks 8, 12,
26, 52 after the acute phase) becomes one number per patient that ``brainmatch train`` can
model as a continuous outcome, so the arm with the best *sustained* outcome is selected
rather than the best score at one time point.  Methods:

``auc``
    Time-averaged score: the area under the patient's piecewise-linear score curve over the
    visits inside the window, divided by the time the visits span (needs two visits).
``last``
    The last observed score inside the window.
``slope``
    The patient's least-squares slope of score on time (score units per time unit; needs
    two visits at different times).
``mixed``
    A linear mixed model (statsmodels ``MixedLM``, REML) with a fixed intercept and time
    slope and a random intercept and slope per patient; each patient's predicted mean score
    over the window (fixed + random effects, i.e. the BLUP line averaged from the window's
    start to its end).  Patients with few visits or who left early are shrunk towards the
    average trajectory instead of being summarised from one or two noisy scores
    (missing-at-random dropout is handled by the likelihood); the shrinkage is towards the
    pooled trajectory of every arm, so arm differences are, if anything, understated.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError

METHODS = ("auc", "last", "slope", "mixed")
ID = "participant_id"


def summarise_followup(
    scores: str | Path | pd.DataFrame,
    *,
    score_column: str,
    time_column: str = "week",
    method: str = "auc",
    start: float | None = None,
    until: float | None = None,
) -> pd.DataFrame:
    """One sustained-outcome value per patient from a long table of follow-up scores.

    Parameters
    ----------
    scores : path or DataFrame
        Long table: ``participant_id``, ``time_column``, ``score_column`` (one row per
        visit; TSV, CSV or Parquet).
    score_column, time_column : str
    method : {"auc", "last", "slope", "mixed"}
        See the module docstring.
    start, until : float, optional
        The window of visits used (default: every visit).

    Returns
    -------
    DataFrame
        ``participant_id``, ``<score_column>__<method>`` and ``n_visits`` (visits in the
        window); the value is missing for a patient the method cannot summarise (e.g. one
        visit for ``auc`` / ``slope``).
    """
    from brainmatch.change.data import read_table

    if method not in METHODS:
        raise BrainmatchInputError(f"method {method!r}: use one of {', '.join(METHODS)}")
    table, name = read_table(scores, "follow-up scores", "--followup-scores")
    for col, opt in ((ID, "participant_id"), (time_column, "time_column")):
        if col not in table.columns:
            raise BrainmatchInputError(f"{opt} {col!r}: no such column", name)
    if score_column not in table.columns:
        raise BrainmatchInputError(f"score_column {score_column!r}: no such column", name)
    t = pd.to_numeric(table[time_column], errors="coerce")
    y = pd.to_numeric(table[score_column], errors="coerce")
    if (t.isna() & table[time_column].notna()).any():
        raise BrainmatchInputError(f"time_column {time_column!r}: values are not numbers", name)
    if (y.isna() & table[score_column].notna()).any():
        raise BrainmatchInputError(f"score_column {score_column!r}: values are not numbers", name)
    long = pd.DataFrame({ID: table[ID].astype(str), "t": t, "y": y}).dropna()
    if start is not None:
        long = long[long["t"] >= start]
    if until is not None:
        long = long[long["t"] <= until]
    if long.empty:
        raise BrainmatchInputError("no follow-up score inside the window", name)
    dup = long.duplicated([ID, "t"])
    if dup.any():
        first = long[dup].iloc[0]
        raise BrainmatchInputError(
            f"{int(dup.sum())} repeated visit(s), e.g. {first[ID]} at {time_column} "
            f"{first['t']:g}: one score per participant and time",
            name,
        )
    long = long.sort_values([ID, "t"])
    out_col = f"{score_column}__{method}"
    if method == "mixed":
        values = _mixed(long, start, until, name)
    else:
        values = long.groupby(ID, sort=True).apply(_per_patient(method), include_groups=False)
    counts = long.groupby(ID, sort=True).size()
    return pd.DataFrame(
        {
            ID: counts.index,
            out_col: values.reindex(counts.index).to_numpy(float),
            "n_visits": counts,
        }
    ).reset_index(drop=True)


def _per_patient(method: str) -> Any:
    def f(g: pd.DataFrame) -> float:
        t = g["t"].to_numpy(float)
        y = g["y"].to_numpy(float)
        if method == "last":
            return float(y[-1])
        if t.size < 2 or t[-1] == t[0]:
            return float("nan")
        if method == "auc":
            return float(np.sum(np.diff(t) * (y[1:] + y[:-1]) / 2) / (t[-1] - t[0]))
        tc = t - t.mean()
        return float(np.sum(tc * (y - y.mean())) / np.sum(tc**2))

    return f


def _mixed(long: pd.DataFrame, start: float | None, until: float | None, name: str) -> pd.Series:
    import statsmodels.formula.api as smf

    n_pat = long[ID].nunique()
    if n_pat < 10 or long.groupby(ID).size().max() < 2:
        raise BrainmatchInputError(
            "method mixed: needs at least 10 participants, some with two or more visits", name
        )
    lo = float(long["t"].min()) if start is None else float(start)
    hi = float(long["t"].max()) if until is None else float(until)
    centre = (lo + hi) / 2
    scale = max(hi - lo, 1e-12)
    data = long.assign(tc=(long["t"] - centre) / scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = smf.mixedlm("y ~ tc", data, groups=data[ID], re_formula="~tc").fit(reml=True)
        except Exception as exc:  # numerical failures of the optimiser
            raise BrainmatchInputError(
                f"method mixed: the mixed model did not converge ({type(exc).__name__}); "
                "use auc, last or slope",
                name,
            ) from None
    b0 = float(fit.fe_params["Intercept"])
    # the mean of the patient's line over the window is its value at the window's centre
    re = fit.random_effects
    return pd.Series({pid: b0 + float(np.asarray(r)[0]) for pid, r in re.items()}, dtype=float)
