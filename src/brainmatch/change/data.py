"""Read and check the tables ``brainmatch change`` takes.

A long feature table (one row per participant and session, as ``brainmatch extract``
writes it for a dataset with ``ses-`` folders: a ``session`` column holding the label
without ``ses-``) and one or more participant-level tables (arm, site, covariates,
symptom scores) merged on ``participant_id``.  Every problem is a
:class:`~brainmatch.errors.BrainmatchInputError` naming the file or option.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError

ID = "participant_id"
#: Non-feature columns a feature table may carry.
META_COLUMNS = ("participant_id", "session", "site", "run", "task", "space", "atlas")
#: Session labels recognised as the pre-treatment scan, in order of preference.
BASELINE_LABELS = ("pre", "baseline", "base", "bl", "screening", "t0", "0", "00", "1", "01")
MIN_PER_ARM = 3


def read_table(
    source: str | Path | pd.DataFrame, what: str, option: str
) -> tuple[pd.DataFrame, str]:
    """Read a Parquet / TSV / CSV table (or pass a DataFrame through)."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), f"{what} table"
    path = Path(source)
    if not path.exists():
        raise BrainmatchInputError(f"{option}: {what} file not found", path)
    if path.is_dir():
        raise BrainmatchInputError(
            f"{option}: expected a table (Parquet, TSV or CSV), got a folder", path
        )
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            table = pd.read_parquet(path)
        elif name.endswith((".tsv", ".tsv.gz", ".txt")):
            table = pd.read_csv(path, sep="\t", na_values=["n/a", "NA", ""])
        elif name.endswith((".csv", ".csv.gz")):
            table = pd.read_csv(path, na_values=["n/a", "NA", ""])
        else:
            raise BrainmatchInputError(
                f"{option}: unknown table format {path.suffix!r}: use .parquet, .tsv or .csv", path
            )
    except BrainmatchInputError:
        raise
    except Exception as exc:
        raise BrainmatchInputError(
            f"{option}: cannot read the {what} table ({exc})", path
        ) from None
    if table.shape[0] == 0:
        raise BrainmatchInputError(f"{option}: the {what} table has no rows", path)
    return table, str(path)


def feature_metadata(source: str | Path | pd.DataFrame) -> dict[str, Any]:
    """The ``features.json`` sidecar ``brainmatch extract`` writes beside the table (if any)."""
    if isinstance(source, pd.DataFrame):
        return dict(source.attrs) if source.attrs else {}
    sidecar = Path(source).with_suffix(".json")
    if sidecar.is_file():
        try:
            side = json.loads(sidecar.read_text(encoding="utf-8"))
        except ValueError:
            return {}
        if isinstance(side, dict):
            return {k: v for k, v in side.items() if k not in ("inputs", "columns")}
    return {}


def _suggest(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    return f"{hint} (columns: {shown})"


def _ids(table: pd.DataFrame, name: str) -> pd.Series:
    if ID not in table.columns:
        raise BrainmatchInputError(
            f"no '{ID}' column{_suggest(ID, list(map(str, table.columns)))}", name
        )
    ids = table[ID].astype(str).str.strip()
    if ids.isin(["", "nan", "None", "<NA>"]).any():
        raise BrainmatchInputError(f"'{ID}' has empty values", name)
    return ids


def _natural_key(label: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", label.lower()))


def order_sessions(labels: list[str], given: list[str] | None, name: str) -> list[str]:
    """Order of the time points: ``given`` (``--sessions``) or inferred (baseline first)."""
    present = sorted(set(labels))
    if given:
        given = [g.removeprefix("ses-") for g in given]
        unknown = [g for g in given if g not in present]
        if unknown:
            raise BrainmatchInputError(
                f"--sessions: {', '.join(map(repr, unknown))} not in the feature table's "
                f"session column (it has {', '.join(map(repr, present))})",
                name,
            )
        if len(given) < 2:
            raise BrainmatchInputError("--sessions: give at least two sessions (baseline first)")
        return given
    if len(present) < 2:
        raise BrainmatchInputError(
            f"the session column has only {present!r}: change needs at least two time points "
            "per participant (simulate with --sessions 2, or extract a dataset with ses- folders)",
            name,
        )
    if set(present) == {"pre", "post"}:
        return ["pre", "post"]
    lowered = {p.lower(): p for p in present}
    base = next((lowered[b] for b in BASELINE_LABELS if b in lowered), None)

    def key(label: str) -> tuple[int, tuple[Any, ...]]:
        low = label.lower()
        rank = 2 if low.startswith(("follow", "fu")) else 1  # post-treatment before follow-up
        return rank, _natural_key(label)

    rest = sorted((p for p in present if p != base), key=key)
    if base is None:
        return sorted(present, key=key)
    return [base, *rest]


@dataclass
class ChangeData:
    """The merged, checked inputs of a change analysis.

    Attributes
    ----------
    rows : DataFrame
        One row per participant-session kept: ``participant_id``, ``session``, ``arm``,
        ``site`` (if any), covariates, ``__symptom_change`` (if any).
    Y : ndarray of shape (n_rows, n_features)
    features : list of str
    sessions : list of str
        Baseline first.
    arms : list of str
    participants : DataFrame
        One row per participant (arm, site, covariates, symptom change).
    notes : list of str
    excluded : dict of str to str
        Feature -> reason it was not analysed.
    metadata : dict
        The feature table's provenance (``features.json``).
    """

    rows: pd.DataFrame
    Y: np.ndarray
    features: list[str]
    sessions: list[str]
    arms: list[str]
    participants: pd.DataFrame
    site_column: str | None
    covariates: list[str]
    symptom: str | None
    notes: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


def _column(table: pd.DataFrame, column: str, option: str, name: str) -> None:
    if column not in table.columns:
        raise BrainmatchInputError(
            f"{option} {column!r}: no such column{_suggest(column, list(map(str, table.columns)))}",
            name,
        )


def load_change_data(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any] | tuple[Any, ...],
    *,
    treatment_column: str = "arm",
    session_column: str = "session",
    sessions: list[str] | None = None,
    site_column: str | None = None,
    covariates: list[str] | tuple[str, ...] = (),
    outcome_column: str | None = None,
    baseline_column: str | None = None,
    measures: list[str] | tuple[str, ...] | None = None,
) -> ChangeData:
    """Read, check and merge the feature table and the participant tables.

    Parameters
    ----------
    features : path or DataFrame
        Long table: ``participant_id``, ``session`` and numeric feature columns.
    outcomes : path, DataFrame or list of them
        Participant-level tables merged on ``participant_id``.
    treatment_column, session_column, site_column : str
        Column names (``site_column=None``: single-site trial).
    sessions : list of str, optional
        Time points in order, baseline first (default: inferred, ``pre`` before ``post``).
    covariates : list of str
        Participant-level adjustment columns (numeric, or categorical coded as dummies).
    outcome_column, baseline_column : str, optional
        Symptom score after treatment and before; their difference (after minus before) is
        the symptom change that brain change is correlated with.  ``outcome_column`` alone
        is taken as the change itself.
    measures : list of str, optional
        Keep only features whose prefix (``amp``, ``falff``, ``conn``, ``vol`` ...) is listed.

    Returns
    -------
    ChangeData
    """
    ftab, fname = read_table(features, "features", "--features")
    meta = feature_metadata(features)
    srcs = list(outcomes) if isinstance(outcomes, list | tuple) else [outcomes]
    if not srcs:
        raise BrainmatchInputError("--outcomes: no participants / outcomes table given")
    otab, oname = read_table(srcs[0], "outcomes", "--outcomes")
    oids = _ids(otab, oname)
    otab[ID] = oids
    if oids.duplicated().any():
        raise BrainmatchInputError(
            f"--outcomes: {oids[oids.duplicated()].iloc[0]!r} appears on more than one row "
            "(one row per participant expected)",
            oname,
        )
    for src in srcs[1:]:
        extra, ename = read_table(src, "outcomes", "--outcomes")
        extra[ID] = _ids(extra, ename)
        if extra[ID].duplicated().any():
            raise BrainmatchInputError(
                "--outcomes: a participant appears on more than one row", ename
            )
        new = [c for c in extra.columns if c == ID or c not in otab.columns]
        otab = otab.merge(extra[new], on=ID, how="left")
        oname = f"{oname} + {ename}"

    ftab[ID] = _ids(ftab, fname)
    if session_column not in ftab.columns:
        raise BrainmatchInputError(
            f"--session-column {session_column!r}: no such column in the feature table; change "
            "needs one row per participant and session (as `brainmatch extract` writes for "
            f"ses- folders){_suggest(session_column, list(map(str, ftab.columns)))}",
            fname,
        )
    ses = ftab[session_column].astype(str).str.strip().str.removeprefix("ses-")
    ftab[session_column] = ses
    if ses.isin(["", "nan", "n/a", "None", "<NA>"]).any():
        raise BrainmatchInputError(f"--session-column {session_column!r} has empty values", fname)
    dup = ftab.duplicated([ID, session_column])
    if dup.any():
        row = ftab.loc[dup].iloc[0]
        raise BrainmatchInputError(
            f"{row[ID]} session {row[session_column]!r} appears on more than one row "
            "(one row per participant and session expected; average runs first)",
            fname,
        )
    order = order_sessions(ses.tolist(), sessions, fname)
    ftab = ftab[ftab[session_column].isin(order)]

    _column(otab, treatment_column, "--treatment-column", oname)
    if treatment_column in ftab.columns and treatment_column != ID:
        ftab = ftab.drop(columns=[treatment_column])
    if site_column is not None:
        if site_column not in otab.columns and site_column in ftab.columns:
            per = ftab.groupby(ID)[site_column].nunique()
            if (per > 1).any():
                raise BrainmatchInputError(
                    f"--site-column {site_column!r}: participant {per.index[per > 1][0]} has "
                    "more than one site",
                    fname,
                )
            otab = otab.merge(
                ftab.groupby(ID)[site_column].first().reset_index(), on=ID, how="left"
            )
        _column(otab, site_column, "--site-column", oname)
    covariates = list(covariates)
    for c in covariates:
        _column(otab, c, "--covariates", oname)
    symptom = None
    if outcome_column is not None:
        _column(otab, outcome_column, "--outcome-column", oname)
        after = pd.to_numeric(otab[outcome_column], errors="coerce")
        if (
            after.notna().sum() < after.size
            and otab[outcome_column].notna().sum() > after.notna().sum()
        ):
            raise BrainmatchInputError(
                f"--outcome-column {outcome_column!r}: values are not numbers", oname
            )
        if baseline_column is not None:
            _column(otab, baseline_column, "--baseline-column", oname)
            before = pd.to_numeric(otab[baseline_column], errors="coerce")
            otab["__symptom_change"] = after - before
        else:
            otab["__symptom_change"] = after
        symptom = outcome_column
    elif baseline_column is not None:
        raise BrainmatchInputError("--baseline-column needs --outcome-column as well")

    # feature columns
    exclude = {treatment_column, session_column, *(covariates), *(c for c in [site_column] if c)}
    cols = [c for c in ftab.columns if c not in META_COLUMNS and c not in exclude]
    if measures:
        wanted = set(measures)
        present = sorted({str(c).split("__", 1)[0] for c in cols if "__" in str(c)})
        unknown = sorted(wanted - set(present))
        if unknown:
            raise BrainmatchInputError(
                f"--measures: {', '.join(unknown)} not in the feature table (it has "
                f"{', '.join(present) or 'no prefixed features'})",
                fname,
            )
        cols = [c for c in cols if str(c).split("__", 1)[0] in wanted]
    if not cols:
        raise BrainmatchInputError("the feature table has no feature columns", fname)
    bad = []
    for c in cols:
        if not (pd.api.types.is_numeric_dtype(ftab[c]) or pd.api.types.is_bool_dtype(ftab[c])):
            conv = pd.to_numeric(ftab[c], errors="coerce")
            if conv.isna().sum() > ftab[c].isna().sum():
                bad.append(str(c))
            else:
                ftab[c] = conv
    if bad:
        raise BrainmatchInputError(
            f"{len(bad)} feature column(s) are not numeric: {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''} (move labels such as site or arm to --outcomes)",
            fname,
        )

    notes: list[str] = []
    if not sessions:
        notes.append(
            f"time points in the order {' -> '.join(order)} (inferred; --sessions sets it)"
        )
    f_ids, o_ids = set(ftab[ID]), set(otab[ID])
    only_f = sorted(f_ids - o_ids)
    if only_f:
        notes.append(
            f"{len(only_f)} participant(s) in the feature table are not in the outcomes table "
            f"and were left out (e.g. {only_f[0]})"
        )
    keep_cols = [ID, treatment_column, *([site_column] if site_column else []), *covariates]
    if symptom:
        keep_cols.append("__symptom_change")
    part = otab[list(dict.fromkeys(keep_cols))].copy()
    part = part[part[ID].isin(f_ids)]
    no_arm = part[treatment_column].isna()
    if no_arm.any():
        notes.append(
            f"{int(no_arm.sum())} participant(s) without a {treatment_column!r} were left out"
        )
        part = part[~no_arm]
    for c in ([site_column] if site_column else []) + covariates:
        miss = part[c].isna()
        if miss.any():
            notes.append(f"{int(miss.sum())} participant(s) with {c!r} missing were left out")
            part = part[~miss]
    part = part.rename(columns={treatment_column: "arm"})
    part["arm"] = part["arm"].astype(str).str.strip()
    if site_column:
        part = part.rename(columns={site_column: "site"})
        part["site"] = part["site"].astype(str)
    arms = sorted(part["arm"].unique())
    if len(arms) < 2:
        raise BrainmatchInputError(
            f"--treatment-column {treatment_column!r}: need at least two arms, found {arms}", oname
        )
    rows = ftab[[ID, session_column, *cols]].merge(part, on=ID, how="inner")
    rows = rows.rename(columns={session_column: "session"})
    rows["__t"] = rows["session"].map({s: i for i, s in enumerate(order)})
    rows = rows.sort_values([ID, "__t"]).reset_index(drop=True)
    # participants need a baseline row; with only a follow-up row they add nothing to change
    has_base = rows.groupby(ID)["__t"].transform("min") == 0
    if (~has_base).any():
        n = rows.loc[~has_base, ID].nunique()
        notes.append(f"{n} participant(s) without a {order[0]!r} (baseline) session were left out")
        rows = rows[has_base].reset_index(drop=True)
    n_follow = rows[rows["__t"] > 0].groupby("arm")[ID].nunique().reindex(arms, fill_value=0)
    few = n_follow[n_follow < MIN_PER_ARM]
    if len(few):
        raise BrainmatchInputError(
            f"arm {few.index[0]!r} has {int(few.iloc[0])} participant(s) with a follow-up session "
            f"({', '.join(order[1:])}); change needs at least {MIN_PER_ARM} per arm",
            fname,
        )
    Y = rows[cols].to_numpy(dtype=float)
    Y[~np.isfinite(Y)] = np.nan
    excluded: dict[str, str] = {}
    # features without within-participant variation (e.g. FreeSurfer volumes from one
    # cross-sectional run copied to every session) carry no information on change
    pid = pd.factorize(rows[ID])[0]
    dev = Y - pd.DataFrame(Y).groupby(pid).transform("mean").to_numpy()
    within = np.nanmax(np.abs(dev), axis=0, initial=0.0)
    spread = np.nanstd(Y, axis=0)
    flat = ~(within > 1e-9 * np.maximum(spread, 1e-300))
    for j in np.flatnonzero(flat):
        excluded[str(cols[j])] = "no change within any participant (same value in every session)"
    too_few = (np.isfinite(Y) & (rows["__t"].to_numpy() > 0)[:, None]).sum(axis=0) < 2 * MIN_PER_ARM
    for j in np.flatnonzero(too_few & ~flat):
        excluded[str(cols[j])] = "too few follow-up values"
    keep = ~(flat | too_few)
    if not keep.any():
        raise BrainmatchInputError(
            "no feature varies between sessions within participants (nothing to analyse)", fname
        )
    if flat.any():
        notes.append(
            f"{int(flat.sum())} feature(s) are identical in every session of every participant "
            "(e.g. FreeSurfer volumes from a single cross-sectional run) and were not analysed"
        )
    features_kept = [str(c) for c, k in zip(cols, keep, strict=True) if k]
    participants = (
        part[part[ID].isin(set(rows[ID]))].set_index(ID).loc[rows[ID].unique()].reset_index()
    )
    return ChangeData(
        rows=rows.drop(columns=cols),
        Y=Y[:, keep],
        features=features_kept,
        sessions=order,
        arms=arms,
        participants=participants,
        site_column=site_column,
        covariates=covariates,
        symptom=symptom,
        notes=notes,
        excluded=excluded,
        metadata=meta,
        sources={"features": fname, "outcomes": oname},
    )
