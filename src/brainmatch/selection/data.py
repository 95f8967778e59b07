"""Read and check the tables ``brainmatch train`` / ``recommend`` take.

Every problem is a :class:`~brainmatch.errors.BrainmatchInputError` naming the file and
what is wrong (unknown or mixed-up columns, non-numeric features, IDs in one table only,
arms with too few patients).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError

ID = "participant_id"
#: Non-feature columns a feature table may carry.
META_COLUMNS = ("participant_id", "session", "site", "run", "task", "space", "atlas")
MIN_PER_ARM = 10
RECOMMENDED_PER_ARM = 100


def read_table(source: str | Path | pd.DataFrame, what: str) -> tuple[pd.DataFrame, str]:
    """Read a Parquet / TSV / CSV table (or pass a DataFrame through).

    Returns
    -------
    table : DataFrame
    name : str
        The file name (or ``"<what> table"``) for messages.
    """
    if isinstance(source, pd.DataFrame):
        return source.copy(), f"{what} table"
    if source is None:
        raise BrainmatchInputError(f"no {what} table given")
    from brainmatch._table import read_any_table  # one reader for every command

    path = Path(source)
    table = read_any_table(path, what)
    return table, str(path)


def table_metadata(source: str | Path | pd.DataFrame) -> dict[str, Any]:
    """Provenance a feature table carries: Parquet key-value metadata and a JSON sidecar."""
    if isinstance(source, pd.DataFrame):
        return dict(source.attrs) if source.attrs else {}
    path = Path(source)
    meta: dict[str, Any] = {}
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            kv = pq.read_schema(path).metadata or {}
            for key, value in kv.items():
                k = key.decode("utf-8", "replace")
                if k == "pandas":
                    continue
                text = value.decode("utf-8", "replace")
                try:
                    meta[k] = json.loads(text)
                except ValueError:
                    meta[k] = text
        except Exception:
            pass
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            side = json.loads(sidecar.read_text(encoding="utf-8"))
            if isinstance(side, dict):  # keep provenance, drop per-subject / per-column lists
                meta["sidecar"] = {k: v for k, v in side.items() if k not in ("inputs", "columns")}
        except ValueError:
            pass
    return meta


def _suggest(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    return f"{hint} (columns: {shown})"


def _ids(table: pd.DataFrame, name: str) -> pd.Series:
    if ID not in table.columns:
        raise BrainmatchInputError(f"no '{ID}' column{_suggest(ID, list(table.columns))}", name)
    ids = table[ID].astype(str).str.strip()
    if ids.isin(["", "nan", "None", "<NA>"]).any():
        raise BrainmatchInputError(f"'{ID}' has empty values", name)
    return ids


def feature_columns(table: pd.DataFrame, name: str, exclude: set[str]) -> list[str]:
    """Names of the numeric feature columns; non-numeric ones are an error."""
    cols = [c for c in table.columns if c not in META_COLUMNS and c not in exclude]
    if not cols:
        raise BrainmatchInputError("the feature table has no feature columns", name)
    bad = []
    for c in cols:
        col = table[c]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            continue
        converted = pd.to_numeric(col, errors="coerce")
        if converted.isna().sum() > col.isna().sum():
            bad.append(str(c))
        else:
            table[c] = converted
    if bad:
        raise BrainmatchInputError(
            f"{len(bad)} feature column(s) are not numeric: {', '.join(bad[:10])}"
            f"{' ...' if len(bad) > 10 else ''} (features must be numbers; move labels such "
            "as site or sex to the outcomes table)",
            name,
        )
    return [str(c) for c in cols]


def one_row_per_participant(table: pd.DataFrame, name: str, session: str | None) -> pd.DataFrame:
    """Keep one session (``session``) and refuse duplicated participants."""
    if "session" in table.columns and session is not None:
        keep = table["session"].astype(str).isin([session, f"ses-{session}"])
        if not keep.any():
            raise BrainmatchInputError(f"no row has session {session!r}", name)
        table = table[keep]
    ids = _ids(table, name)
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        extra = (
            " (the table has several sessions: choose one with session=)"
            if "session" in table.columns
            else ""
        )
        raise BrainmatchInputError(
            f"{len(dup)} participant(s) have more than one row, e.g. {', '.join(dup[:5])}{extra}",
            name,
        )
    table = table.copy()
    table[ID] = ids
    return table


def read_outcome_tables(
    outcomes: str | Path | pd.DataFrame | list[Any] | tuple[Any, ...],
) -> tuple[pd.DataFrame, str]:
    """Read one outcome table, or several merged on ``participant_id`` (e.g. BIDS
    ``participants.tsv`` + ``phenotype/outcomes.tsv``); columns already seen are kept from
    the first table that has them."""
    sources = list(outcomes) if isinstance(outcomes, list | tuple) else [outcomes]
    if not sources:
        raise BrainmatchInputError("no outcomes table given")
    table, name = read_table(sources[0], "outcomes")
    table = one_row_per_participant(table, name, None)
    names = [name]
    for src in sources[1:]:
        extra, ename = read_table(src, "outcomes")
        extra = one_row_per_participant(extra, ename, None)
        only = sorted(set(extra[ID]) ^ set(table[ID]))
        if only:
            raise BrainmatchInputError(
                f"{len(only)} participant(s) are in only one of the outcome tables "
                f"({name}, {ename}): {', '.join(only[:10])}{' ...' if len(only) > 10 else ''}",
                ename,
            )
        _check_agreement(table, name, extra, ename)
        extra = extra[[c for c in extra.columns if c == ID or c not in table.columns]]
        table = table.merge(extra, on=ID, how="left")
        names.append(ename)
    return table, " + ".join(names)


def _check_agreement(first: pd.DataFrame, fname: str, other: pd.DataFrame, oname: str) -> None:
    """Refuse two outcome tables that give a participant different values in a shared
    column (e.g. a different arm or site): which one is right cannot be guessed."""
    shared = [c for c in other.columns if c != ID and c in first.columns]
    if not shared:
        return
    a = first.set_index(ID)
    b = other.set_index(ID).reindex(a.index)
    for col in shared:
        x, y = a[col], b[col]
        xn, yn = pd.to_numeric(x, errors="coerce"), pd.to_numeric(y, errors="coerce")
        numeric = (xn.notna() | x.isna()).all() and (yn.notna() | y.isna()).all()
        both = x.notna() & y.notna()
        if numeric:
            differ = both & ~np.isclose(xn.fillna(0), yn.fillna(0), rtol=1e-9, atol=0)
        else:
            differ = both & (x.astype(str).str.strip() != y.astype(str).str.strip())
        if differ.any():
            ids = differ[differ].index.tolist()
            first_id = ids[0]
            raise BrainmatchInputError(
                f"the outcome tables {fname} and {oname} disagree on column {col!r} for "
                f"{len(ids)} participant(s), e.g. {first_id}: {x[first_id]!r} vs "
                f"{y[first_id]!r}; correct one table (brainmatch will not guess which is right)",
                oname,
            )


#: Largest absolute feature / outcome value accepted: beyond it squares and sums overflow
#: double precision (standardisation, ridge kernels, JSON output).
MAX_ABS_VALUE = 1e100


@dataclass
class TrainingData:
    """Merged, checked training data.

    Attributes
    ----------
    ids : ndarray of str
    X : ndarray of shape (n, p)
        Raw features (NaN = missing).
    feature_names : list of str
    treatment : ndarray of str
    arms : list of str
    y : ndarray of float
    binary : bool
    covariates : DataFrame
        Raw covariate columns (incl. the baseline column first when given).
    sites : ndarray of str or None
    warnings : list of str
    data_hash : str
    feature_metadata : dict
    baseline : bool
        Whether the first covariate column is the baseline score (outcome model only).
    """

    ids: np.ndarray
    X: np.ndarray
    feature_names: list[str]
    treatment: np.ndarray
    arms: list[str]
    y: np.ndarray
    binary: bool
    covariates: pd.DataFrame
    sites: np.ndarray | None
    warnings: list[str] = field(default_factory=list)
    data_hash: str = ""
    baseline: bool = False
    feature_metadata: dict[str, Any] = field(default_factory=dict)


def load_training_data(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any] | tuple[Any, ...],
    *,
    treatment_column: str,
    outcome_column: str,
    baseline_column: str | None = None,
    site_column: str | None = None,
    covariates: tuple[str, ...] = (),
    session: str | None = None,
    min_per_arm: int = MIN_PER_ARM,
) -> TrainingData:
    """Read, check and merge the feature and outcome tables.

    Raises
    ------
    BrainmatchInputError
        Unknown or mixed-up columns, non-numeric features, IDs in the outcome table with
        no features, an arm with fewer than ``min_per_arm`` patients with an outcome, an
        outcome column that is not numeric, features that contain the outcome.
    """
    ftab, fname = read_table(features, "features")
    ftab = one_row_per_participant(ftab, fname, session)
    otab, oname = read_outcome_tables(outcomes)
    warnings: list[str] = []

    # columns and their roles
    for opt, col in (
        ("treatment_column=", treatment_column),
        ("outcome_column=", outcome_column),
    ):
        if col not in otab.columns:
            where = (
                " (it is in the features table: pass the outcomes table as OUTCOMES)"
                if col in ftab.columns
                else ""
            )
            raise BrainmatchInputError(
                f"{opt}{col!r}: no such column{where}{_suggest(col, list(map(str, otab.columns)))}",
                oname,
            )
    if treatment_column == outcome_column:
        raise BrainmatchInputError(
            "treatment_column and outcome_column name the same column", oname
        )
    if outcome_column in ftab.columns:
        raise BrainmatchInputError(
            f"the outcome column {outcome_column!r} is also a feature column: it would leak the "
            "outcome into the predictors; remove it from the features table",
            fname,
        )
    roles: list[tuple[str, str | None]] = [
        ("baseline_column=", baseline_column),
        ("site_column=", site_column),
        *(("covariates=", c) for c in covariates),
    ]
    taken = {
        outcome_column: "the outcome (outcome_column)",
        treatment_column: "the treatment (treatment_column)",
        ID: "the participant ID",
    }
    given: dict[str, str] = {}
    for opt, role in roles:
        if not role:
            continue
        if role in taken:
            raise BrainmatchInputError(
                f"{opt}{role!r} is {taken[role]}: it cannot also be a predictor or a site",
                oname,
            )
        if role in given:
            raise BrainmatchInputError(
                f"{opt}{role!r} is given twice (also as {given[role]}{role!r})", oname
            )
        given[role] = opt
        if role not in otab.columns and role not in ftab.columns:
            raise BrainmatchInputError(
                f"{opt}{role!r}: no such column in the outcomes table (nor in the features "
                f"table){_suggest(role, [str(x) for x in otab.columns])}",
                oname,
            )
    extra_cols = list(given)
    used_in_f = {c for c in extra_cols if c in ftab.columns and c not in otab.columns}
    fcols = feature_columns(ftab, fname, used_in_f | {treatment_column})

    # outcome values
    y_raw = otab[outcome_column]
    y_num = pd.to_numeric(y_raw, errors="coerce")
    if (y_num.isna() & y_raw.notna()).any():
        bad = y_raw[y_num.isna() & y_raw.notna()].astype(str).unique()[:5]
        hint = ""
        treat_values = otab[treatment_column].dropna()
        if pd.to_numeric(treat_values, errors="coerce").notna().all():
            hint = " (are treatment_column and outcome_column swapped?)"
        raise BrainmatchInputError(
            f"outcome_column={outcome_column!r} must be numeric, found {', '.join(bad)}{hint}",
            oname,
        )
    treat = otab[treatment_column]
    if pd.api.types.is_float_dtype(treat) and treat.dropna().nunique() > 10:
        raise BrainmatchInputError(
            f"treatment_column={treatment_column!r} holds {treat.nunique()} different numbers; "
            "it should name the arm each patient received (are the columns mixed up?)",
            oname,
        )

    # ids
    f_ids, o_ids = set(ftab[ID]), set(otab[ID])
    no_features = sorted(o_ids - f_ids)
    if no_features:
        raise BrainmatchInputError(
            f"{len(no_features)} of {len(o_ids)} participants in the outcomes table have no row "
            f"in the features table ({fname}): {', '.join(no_features[:10])}"
            f"{' ...' if len(no_features) > 10 else ''}",
            oname,
        )
    only_features = sorted(f_ids - o_ids)
    if only_features:
        warnings.append(
            f"{len(only_features)} participants in the features table are not in the outcomes "
            f"table and were not used: {', '.join(only_features[:10])}"
            f"{' ...' if len(only_features) > 10 else ''}"
        )

    merged = otab.merge(ftab, on=ID, how="inner", suffixes=("", "__features"))
    merged["__y"] = pd.to_numeric(merged[outcome_column], errors="coerce")
    missing_t = merged[treatment_column].isna()
    if missing_t.any():
        warnings.append(f"{int(missing_t.sum())} participants without a treatment were excluded")
    missing_y = merged["__y"].isna() & ~missing_t
    if missing_y.any():
        warnings.append(
            f"{int(missing_y.sum())} participants without an outcome (e.g. dropouts) were "
            "excluded; if dropout depends on prognosis this biases every estimate"
        )
    needed = [c for c in extra_cols]
    merged = merged[~missing_t & ~merged["__y"].isna()].reset_index(drop=True)
    for c in needed:
        n_miss = int(merged[c].isna().sum())
        if n_miss:
            warnings.append(
                f"column {c!r} is missing for {n_miss} participants (imputed with "
                "the training mean / most common value inside each fold)"
            )
    treatment = merged[treatment_column].astype(str).str.strip().to_numpy()
    arms = sorted(set(treatment.tolist()))
    folded: dict[str, list[str]] = {}
    for a in arms:
        folded.setdefault(" ".join(a.casefold().split()), []).append(a)
    clash = [group for group in folded.values() if len(group) > 1]
    if clash:
        shown = "; ".join(
            ", ".join(f"{a!r} ({int((treatment == a).sum())} patients)" for a in group)
            for group in clash
        )
        raise BrainmatchInputError(
            f"treatment_column={treatment_column!r}: arm labels that differ only in case or "
            f"spacing would be separate arms: {shown}; write each arm the same way",
            oname,
        )
    if len(arms) < 2:
        raise BrainmatchInputError(
            f"treatment_column={treatment_column!r}: only one arm ({arms[0]}) among patients "
            "with an outcome; treatment selection needs at least two",
            oname,
        )
    counts = {a: int((treatment == a).sum()) for a in arms}
    small = {a: cnt for a, cnt in counts.items() if cnt < min_per_arm}
    if small:
        raise BrainmatchInputError(
            "arm(s) with too few patients with an outcome to fit and validate a model: "
            + ", ".join(f"{a} ({cnt})" for a, cnt in small.items())
            + f"; need at least {min_per_arm} per arm (about 300 for a trustworthy model)",
            oname,
        )
    for arm, cnt in counts.items():
        if cnt < RECOMMENDED_PER_ARM:
            warnings.append(
                f"arm {arm} has {cnt} patients: too few for a trustworthy treatment-selection "
                "claim (fewer than 100 per arm; about 300 per arm are needed for adequate power, "
                "Luedtke, Sadikova & Kessler 2019)"
            )
    y = merged["__y"].to_numpy(dtype=float)
    if not np.isfinite(y).all() or np.abs(y).max() > MAX_ABS_VALUE:
        bad_rows = merged.loc[~np.isfinite(y) | (np.abs(y) > MAX_ABS_VALUE), ID].tolist()
        raise BrainmatchInputError(
            f"outcome_column={outcome_column!r}: {len(bad_rows)} value(s) are infinite or "
            f"larger than {MAX_ABS_VALUE:g} in absolute value (e.g. {', '.join(bad_rows[:5])}); "
            "rescale the outcome",
            oname,
        )
    if np.ptp(y) == 0:
        raise BrainmatchInputError(
            f"outcome_column={outcome_column!r} has the same value ({y[0]:g}) for every "
            "patient with an outcome: there is nothing to predict",
            oname,
        )
    for a in arms:
        ya = y[treatment == a]
        if np.ptp(ya) == 0:
            rows = merged.loc[treatment == a, ID].tolist()
            warnings.append(
                f"outcome_column={outcome_column!r} is constant ({ya[0]:g}) among the {ya.size} "
                f"patients of arm {a} ({', '.join(rows[:5])}{' ...' if len(rows) > 5 else ''}): "
                "that arm's outcome model predicts a constant"
            )
    values = set(np.unique(y).tolist())
    binary = values <= {0.0, 1.0}
    X = merged[fcols].to_numpy(dtype=float)
    all_missing = [fcols[j] for j in np.flatnonzero(np.isnan(X).all(axis=0))]
    if all_missing:
        raise BrainmatchInputError(
            f"feature column(s) with no values: {', '.join(all_missing[:10])}", fname
        )
    if np.isinf(X).any():
        raise BrainmatchInputError("features contain infinite values", fname)
    huge = np.nan_to_num(np.abs(X)) > MAX_ABS_VALUE
    if huge.any():
        cols = [fcols[j] for j in np.flatnonzero(huge.any(axis=0))]
        rows = merged.loc[huge.any(axis=1), ID].tolist()
        raise BrainmatchInputError(
            f"feature value(s) larger than {MAX_ABS_VALUE:g} in absolute value in column(s) "
            f"{', '.join(cols[:10])} (participants {', '.join(rows[:5])}): they overflow double "
            "precision when standardised; rescale the features",
            fname,
        )
    n_missing = int(np.isnan(X).sum())
    if n_missing:
        warnings.append(
            f"{n_missing} missing feature values ({100 * n_missing / X.size:.1f} %) "
            "imputed with the training-fold median"
        )
    cov_cols = ([baseline_column] if baseline_column else []) + list(covariates)
    cov = merged[cov_cols].copy() if cov_cols else pd.DataFrame(index=merged.index)
    if baseline_column:  # the baseline score is a number (a covariate may be a category)
        raw = merged[baseline_column]
        bad = pd.to_numeric(raw, errors="coerce").isna() & raw.notna()
        if bad.any():
            where = oname if baseline_column in otab.columns else fname
            raise BrainmatchInputError(
                f"baseline_column={baseline_column!r} must be numeric, found "
                f"{raw[bad].iloc[0]!r} (participant {merged.loc[bad, ID].iloc[0]})",
                where,
            )
    sites = merged[site_column].astype(str).to_numpy() if site_column else None
    digest = hashlib.sha256()
    digest.update(
        pd.util.hash_pandas_object(
            merged[[ID, treatment_column, "__y", *fcols, *set(extra_cols)]], index=False
        )
        .to_numpy()
        .tobytes()
    )
    return TrainingData(
        ids=merged[ID].to_numpy(dtype=str),
        X=X,
        feature_names=fcols,
        treatment=treatment,
        arms=arms,
        y=y,
        binary=binary,
        covariates=cov,
        sites=sites,
        warnings=warnings,
        data_hash="sha256:" + digest.hexdigest(),
        feature_metadata=table_metadata(features),
        baseline=bool(baseline_column),
    )
