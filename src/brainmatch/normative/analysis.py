"""Fit a normative model on controls and score anyone against it (the analyses behind
``brainmatch normative fit`` / ``score``), with typed results.

:func:`fit_normative` reads the controls' feature table (and covariates), checks it
(patients mixed in, too few controls, constant features), estimates the model's
calibration on held-out controls (split within sites), refits on every control and
returns a :class:`NormativeFitResult`.  :func:`score_normative` turns anyone's features
into deviation z-scores and circuit scores (:class:`NormativeScoreResult`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from brainmatch._io import write_json, write_tsv
from brainmatch.errors import BrainmatchInputError
from brainmatch.normative.model import EXTREME_Z, NormativeModel

ID = "participant_id"
#: Columns that are never features.
NON_FEATURES = {
    "participant_id",
    "session",
    "session_id",
    "run",
    "task",
    "space",
    "atlas",
    "site",
    "age",
    "sex",
    "group",
    "diagnosis",
    "dx",
    "arm",
}
#: Columns that say who is a patient, and the values that mean "healthy control".
GROUP_COLUMNS = ("group", "diagnosis", "dx", "patient", "is_patient", "case", "status", "arm")
CONTROL_VALUES = {"control", "controls", "hc", "healthy", "healthy control", "cn", "nc", "0", "0.0"}
#: Calibration target: share of |z| < 1.96 in held-out controls.
CALIBRATION_RANGE = (0.93, 0.97)
#: Controls per design column from which ``heteroskedastic=None`` models the noise variance.
HETERO_PER_COLUMN = 20
#: Share of held-out controls with too many extreme deviations that flags contamination.
SUSPECT_SHARE = 0.03
#: ... and at least this many of them (one odd person in a small hold-out is no evidence).
SUSPECT_MIN = 3
MODEL_FILE = "normative_model.npz"
FORMAT = "brainmatch-normative-model"
FORMAT_VERSION = 1
_FIT_MARKER = ".brainmatch-normative-fit"
_SCORE_MARKER = ".brainmatch-normative-score"


# --- tables --------------------------------------------------------------------------------
def read_table(source: str | Path | pd.DataFrame, what: str) -> tuple[pd.DataFrame, str]:
    """Read a Parquet / TSV / CSV table, or pass a DataFrame through (copied)."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), f"{what} table"
    path = Path(source)
    if not path.is_file():
        raise BrainmatchInputError(
            f"{what} file not found" if not path.exists() else f"{what}: expected a table file",
            path,
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(path)
        elif suffix in (".tsv", ".txt"):
            table = pd.read_csv(path, sep="\t", na_values=["n/a"])
        elif suffix == ".csv":
            table = pd.read_csv(path, na_values=["n/a"])
        else:
            raise BrainmatchInputError(f"{what}: expected .parquet, .tsv or .csv", path)
    except BrainmatchInputError:
        raise
    except Exception as exc:  # pandas raises many kinds
        raise BrainmatchInputError(f"cannot read the {what} table: {exc}", path) from None
    if ID not in table.columns:
        first = str(table.columns[0]) if len(table.columns) else ""
        if first.lower() in ("subjid", "subject", "subject_id", "sub", "id"):
            table = table.rename(columns={table.columns[0]: ID})
        else:
            raise BrainmatchInputError(f"no {ID!r} column in the {what} table", path)
    table[ID] = table[ID].astype(str)
    dup = table[ID][table[ID].duplicated()].unique().tolist()
    if dup:
        raise BrainmatchInputError(
            f"participant(s) {', '.join(dup[:5])} appear more than once in the {what} table",
            path,
        )
    return table, str(path)


def merge_covariates(
    features: pd.DataFrame, fname: str, covariates: str | Path | pd.DataFrame | None
) -> pd.DataFrame:
    """Add the columns of a covariate table to the feature table (by participant)."""
    if covariates is None:
        return features
    cov, cname = read_table(covariates, "covariates")
    missing = sorted(set(features[ID]) - set(cov[ID]))
    if missing:
        raise BrainmatchInputError(
            f"{len(missing)} participant(s) of {fname} have no row in the covariate table: "
            f"{', '.join(missing[:5])}",
            cname,
        )
    cov = cov[[c for c in cov.columns if c == ID or c not in features.columns]]
    return features.merge(cov, on=ID, how="left")


def feature_columns(table: pd.DataFrame, exclude: set[str]) -> list[str]:
    """Numeric columns that are features (not IDs, covariates, site or group columns)."""
    skip = {c.lower() for c in NON_FEATURES | exclude} | set(GROUP_COLUMNS)
    cols = []
    for c in table.columns:
        if str(c).lower() in skip or c in exclude:
            continue
        if pd.api.types.is_numeric_dtype(table[c]) or pd.api.types.is_bool_dtype(table[c]):
            cols.append(str(c))
    return cols


def group_check(table: pd.DataFrame) -> list[str]:
    """Warnings when a group / diagnosis column says some rows are not healthy controls."""
    out = []
    for c in table.columns:
        if str(c).lower() not in GROUP_COLUMNS:
            continue
        values = table[c].dropna().astype(str).str.strip().str.lower()
        patients = values[~values.isin(CONTROL_VALUES)]
        if len(patients):
            kinds = ", ".join(sorted(patients.unique())[:5])
            out.append(
                f"{len(patients)} of {len(table)} rows of the controls table have {c} = {kinds}: "
                "they look like patients; a normative model must be fitted on healthy controls "
                "only (patients in the reference shrink every patient's deviations)"
            )
    return out


def feature_provenance(source: str | Path | pd.DataFrame) -> dict[str, Any]:
    """How the features were extracted: the ``features.json`` sidecar that ``brainmatch
    extract`` writes beside its table (options and atlas only), or ``{}``."""
    if isinstance(source, pd.DataFrame):
        side = source.attrs.get("sidecar") if source.attrs else None
        return (
            {k: side[k] for k in ("options", "atlas") if k in side}
            if isinstance(side, dict)
            else {}
        )
    sidecar = Path(source).with_suffix(".json")
    try:
        side = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: side[k] for k in ("options", "atlas") if isinstance(side, dict) and k in side}


def contamination_check(z: NDArray[np.float64]) -> dict[str, Any]:
    """Excess of people with many extreme deviations among held-out controls.

    Under the normative model each |z| > 2.6 has probability 0.0093, so a person's count of
    extreme deviations over F features is about Binomial(F, 0.0093) (more spread when
    features are correlated).  Patients mixed into the controls show up as an excess of
    people whose count exceeds that distribution's 99.9th percentile and the robust bound
    median + 5 x MAD of the counts themselves (for correlated features): more than
    :data:`SUSPECT_SHARE` of the held-out controls is suspect.  Patients whose deviations
    are small or spread thinly are not detectable this way; a group / diagnosis column is
    checked separately (:func:`group_check`).

    Returns
    -------
    dict
        ``share_extreme`` (observed), ``expected_extreme``, ``persons_flagged`` (share),
        ``count_threshold_median``, ``n_flagged``, ``suspect`` (bool).
    """
    p = 2 * stats.norm.sf(EXTREME_Z)
    ok = ~np.isnan(z)
    k = ok.sum(axis=1)
    counts = (np.abs(np.where(ok, z, 0.0)) > EXTREME_Z).sum(axis=1)
    share = float(counts.sum() / max(ok.sum(), 1))
    thr = stats.binom.ppf(0.999, np.maximum(k, 1), p)
    # correlated features (a person's global signal moves many connections at once) spread
    # the counts far beyond the binomial: a robust bound from the counts themselves
    med = float(np.median(counts))
    mad = 1.4826 * float(np.median(np.abs(counts - med)))
    thr = np.maximum(thr, med + 5.0 * mad)
    over = counts > np.maximum(thr, 1)
    flagged = float(np.mean(over))
    # 0.1% expected; correlated features spread the counts (about 1% of clean controls
    # in the simulated cohorts), hence the margin
    suspect = bool(flagged > SUSPECT_SHARE and over.sum() >= SUSPECT_MIN)
    return {
        "share_extreme": share,
        "expected_extreme": float(p),
        "persons_flagged": flagged,
        "n_flagged": int(over.sum()),
        "count_threshold_median": float(np.median(thr)),
        "suspect": suspect,
    }


def _split(n: int, sites: NDArray[Any] | None, holdout: float, seed: int) -> NDArray[np.bool_]:
    """Boolean test mask: ``holdout`` share of each site (at least one per site of >= 5)."""
    rng = np.random.default_rng([seed, 13])
    test = np.zeros(n, dtype=bool)
    groups = np.zeros(n, dtype=object) if sites is None else sites
    for g in pd.unique(groups):
        idx = np.flatnonzero(groups == g)
        k = round(holdout * idx.size)
        if idx.size >= 5:
            k = max(k, 1)
        k = min(k, idx.size - 2)
        if k > 0:
            test[rng.choice(idx, size=k, replace=False)] = True
    return test


def fit_metrics(
    model: NormativeModel, X: pd.DataFrame, Y: NDArray[np.float64], train_y: NDArray[np.float64]
) -> pd.DataFrame:
    """Per-feature diagnostics of a fitted model on held-out controls.

    Explained variance, standardised mean squared error, Pearson correlation, mean
    standardised log loss (MSLL, Rasmussen & Williams 2006: the model's negative log
    predictive density minus that of a Gaussian with the training mean and variance;
    negative is better), and calibration of the deviations (mean, SD, skew, excess
    kurtosis, share of |z| < 1.96).
    """
    from brainmatch.circuits import feature_label

    mean, _ = model.predict(X)
    z, _ = model.zscores(X, Y)
    logp = model.log_likelihood(X, Y)
    mu0 = np.nanmean(train_y, axis=0)
    var0 = np.nanvar(train_y, axis=0)
    # every statistic is computed for all features at once over each feature's observed
    # rows (a per-feature loop over a connectome's thousands of columns took seconds)
    ok = ~np.isnan(Y)
    n_ok = ok.sum(axis=0)

    def masked(a: NDArray[np.float64]) -> NDArray[np.float64]:
        # a value the model left undefined on an observed row makes the statistic NaN,
        # as it would be over that feature's observed rows alone
        return np.where(ok, a, np.nan)

    def col_mean(a: NDArray[np.float64]) -> NDArray[np.float64]:
        # the mean over observed rows; NaN (with no warning) where a feature has none
        total = np.where(ok, a, 0.0).sum(axis=0)
        undefined = (np.isnan(a) & ok).any(axis=0) | (n_ok == 0)
        return np.where(undefined, np.nan, total / np.maximum(n_ok, 1))

    y, m, zz = masked(Y), masked(mean), masked(z)
    dy = y - col_mean(y)
    vy = col_mean(dy**2)
    r = y - m
    var_r = col_mean((r - col_mean(r)) ** 2)
    nlp0 = 0.5 * np.log(2 * np.pi * var0) + 0.5 * (y - mu0) ** 2 / var0
    msll = col_mean(-logp - nlp0)
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = vy > 0
        explained = np.where(positive, 1 - var_r / vy, np.nan)
        smse = np.where(positive, col_mean(r**2) / vy, np.nan)
        dm = m - col_mean(m)
        sm = col_mean(dm**2)
        rho = col_mean(dy * dm) / np.sqrt(vy * sm)
        rho = np.where((n_ok > 2) & (np.sqrt(sm) > 0), np.clip(rho, -1.0, 1.0), np.nan)
        mz = col_mean(zz)
        dz = zz - mz
        m2, m3, m4 = col_mean(dz**2), col_mean(dz**3), col_mean(dz**4)
        sd_z = np.where(n_ok > 1, np.sqrt(m2 * n_ok / np.maximum(n_ok - 1, 1)), np.nan)
        # scipy.stats.skew / kurtosis (biased, Fisher): NaN for a numerically constant
        # sample, as scipy returns
        flat = m2 <= (np.finfo(float).resolution * mz) ** 2
        skew = np.where((n_ok > 2) & ~flat, m3 / m2**1.5, np.nan)
        kurt = np.where((n_ok > 3) & ~flat, m4 / m2**2 - 3.0, np.nan)
        below = col_mean((np.abs(zz) < 1.96).astype(float))
        above = col_mean((np.abs(zz) > EXTREME_Z).astype(float))
    names = list(model.feature_names_)
    return pd.DataFrame(
        {
            "feature": names,
            "label": [feature_label(name) for name in names],
            "n_test": n_ok.astype(int),
            "explained_variance": explained,
            "smse": smse,
            "rho": rho,
            "msll": msll,
            "mean_z": mz,
            "sd_z": sd_z,
            "skew_z": skew,
            "kurtosis_z": kurt,
            "share_abs_z_below_1_96": below,
            "share_abs_z_above_2_6": above,
        }
    )


def _prepare_out(path: Path, marker: str, overwrite_ok: tuple[str, ...]) -> None:
    """Create ``path``; refuse a non-empty folder that holds another command's or a user's
    files (reruns of the same command may replace their own outputs)."""
    if path.exists() and not path.is_dir():
        raise BrainmatchInputError("exists and is not a folder", path)
    if path.is_dir() and any(path.iterdir()):
        if not (path / marker).exists():
            raise BrainmatchInputError(
                "folder is not empty and does not hold an earlier output of this command; "
                "choose a new or empty --out folder",
                path,
            )
        for name in overwrite_ok:
            if (path / name).is_file():
                (path / name).unlink()
    path.mkdir(parents=True, exist_ok=True)
    (path / marker).write_text(
        "written by brainmatch; a rerun of the same command may replace it\n"
    )


# --- results --------------------------------------------------------------------------------
def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "n/a" if not math.isfinite(x) else f"{x:.3g}"
    return str(x)


@dataclass
class NormativeFitResult:
    """What :func:`fit_normative` produced.

    Attributes
    ----------
    model : NormativeModel
        Fitted on every control.
    fit_metrics : DataFrame
        Per-feature diagnostics on held-out controls (empty without a hold-out).
    summary : dict
        Counts, overall calibration, contamination check, options.
    warnings : list of str
    model_path : Path or None
        Where :meth:`save` wrote the model.
    """

    model: NormativeModel
    fit_metrics: pd.DataFrame
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    model_path: Path | None = None
    report_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Summary and warnings as plain JSON."""
        return {"summary": self.summary, "warnings": self.warnings}

    def save(self, out_dir: str | Path) -> Path:
        """Write ``normative_model.npz``, ``fit_metrics.tsv`` and ``fit_summary.json`` to
        ``out_dir`` (an earlier ``report.html`` is removed: the report is rendered by
        :func:`brainmatch.reports.normative.write_fit_report`); returns the model path."""
        out = Path(out_dir)
        _prepare_out(
            out, _FIT_MARKER, (MODEL_FILE, "fit_metrics.tsv", "fit_summary.json", "report.html")
        )
        self.model_path = save_normative_model(out / MODEL_FILE, self)
        write_tsv(out / "fit_metrics.tsv", self.fit_metrics, float_format="%.6g")
        write_json(out / "fit_summary.json", self.to_dict())
        return self.model_path

    def _repr_html_(self) -> str:
        s = self.summary
        cal = s.get("calibration") or {}
        rows = "".join(
            f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>"
            for k, v in [
                ("controls", s["n_controls"]),
                ("features", s["n_features"]),
                ("sites", ", ".join(s["sites"]) or "none"),
                ("held-out mean z", cal.get("mean_z", float("nan"))),
                ("held-out SD z", cal.get("sd_z", float("nan"))),
                ("held-out share |z| < 1.96", cal.get("share_abs_z_below_1_96", float("nan"))),
            ]
        )
        warn = "".join(f"<li>{w}</li>" for w in self.warnings)
        return f"<b>Normative model</b><table>{rows}</table>" + (f"<ul>{warn}</ul>" if warn else "")


@dataclass
class NormativeScoreResult:
    """What :func:`score_normative` produced.

    Attributes
    ----------
    deviations : DataFrame
        ``participant_id`` + one z column per feature (the model's feature names).
    circuits : DataFrame
        Long table of circuit scores (:func:`brainmatch.circuits.circuit_scores`).
    people : DataFrame
        Per person: site status, extrapolation, count of extreme deviations.
    fit_metrics : DataFrame
        The model's held-out diagnostics.
    warnings : list of str
    model_summary : dict
    """

    deviations: pd.DataFrame
    circuits: pd.DataFrame
    people: pd.DataFrame
    fit_metrics: pd.DataFrame
    warnings: list[str]
    model_summary: dict[str, Any]
    report_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Per-person summary, warnings and model summary as plain JSON."""
        return {
            "people": json.loads(self.people.to_json(orient="records")),
            "warnings": self.warnings,
            "model": self.model_summary,
        }

    def save(self, out_dir: str | Path) -> Path:
        """Write ``deviations.tsv`` (+ ``.json`` sidecar), ``circuits.tsv``,
        ``fit_metrics.tsv``, ``people.tsv`` and ``score_summary.json`` (an earlier
        ``report.html`` is removed: the report is rendered by
        :func:`brainmatch.reports.normative.write_score_report`)."""
        out = Path(out_dir)
        names = ("deviations.tsv", "deviations.json", "circuits.tsv", "fit_metrics.tsv")
        _prepare_out(
            out, _SCORE_MARKER, (*names, "people.tsv", "score_summary.json", "report.html")
        )
        write_tsv(out / "deviations.tsv", self.deviations, float_format="%.6g")
        write_json(
            out / "deviations.json",
            {
                "Description": "Deviation z-scores from a brainmatch normative model: "
                "(value - predicted mean) / predicted SD given age, sex and site, one column "
                "per input feature (same names).",
                "Model": self.model_summary,
            },
        )
        write_tsv(out / "circuits.tsv", self.circuits, float_format="%.6g")
        write_tsv(out / "fit_metrics.tsv", self.fit_metrics, float_format="%.6g")
        write_tsv(out / "people.tsv", self.people, float_format="%.6g")
        write_json(out / "score_summary.json", self.to_dict())
        return out

    def _repr_html_(self) -> str:
        head = self.people.head(20).to_html(index=False)
        warn = "".join(f"<li>{w}</li>" for w in self.warnings)
        return f"<b>Normative deviations</b>{head}" + (f"<ul>{warn}</ul>" if warn else "")


# --- model file -----------------------------------------------------------------------------
def save_normative_model(path: Path, result: NormativeFitResult) -> Path:
    """Write the model as NPZ + JSON (never a pickle), with a content hash."""
    from brainmatch.selection.modelfile import save_model

    arrays, meta = result.model.get_state()
    metrics = result.fit_metrics
    for col in metrics.columns:
        if col not in ("feature", "label"):
            arrays[f"metric__{col}"] = metrics[col].to_numpy(float)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **meta,
        "metric_columns": [c for c in metrics.columns if c not in ("feature", "label")],
        "summary": result.summary,
        "warnings": result.warnings,
    }
    return save_model(path, arrays, meta)


def load_normative_model(
    path: str | Path, *, trust: bool = False
) -> tuple[NormativeModel, pd.DataFrame, dict[str, Any]]:
    """Read a model file written by :func:`save_normative_model`.

    Refuses files that are not brainmatch normative models, were written by a newer
    brainmatch, were modified after writing, or are not signed with the user's / site's
    model key (unless ``trust``; see :mod:`brainmatch.selection.modelfile`).

    Returns
    -------
    model, fit_metrics, meta
    """
    from brainmatch.selection.modelfile import read_signed

    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise BrainmatchInputError("normative model file not found", path)
    # the same bounded reading, versions, content hash and keyed signature as
    # treatment-selection models
    arrays, meta = read_signed(path, fmt=FORMAT, what="normative model", trust=trust)
    model = NormativeModel.from_state(arrays, meta)
    from brainmatch.circuits import feature_label

    metrics = pd.DataFrame(
        {"feature": model.feature_names_, "label": [feature_label(c) for c in model.feature_names_]}
    )
    for col in meta.get("metric_columns", []):
        metrics[col] = arrays[f"metric__{col}"]
    return model, metrics, meta


# --- analyses -------------------------------------------------------------------------------
def fit_normative(
    features: str | Path | pd.DataFrame,
    covariates: str | Path | pd.DataFrame | None = None,
    *,
    covariate_columns: tuple[str, ...] | list[str] = (),
    site_column: str | None = None,
    feature_names: list[str] | None = None,
    holdout: float = 0.2,
    n_knots: int = 5,
    heteroskedastic: bool | None = None,
    likelihood: str = "normal",
    seed: int = 0,
    out_dir: str | Path | None = None,
) -> NormativeFitResult:
    """Fit a normative model on healthy controls' features.

    Parameters
    ----------
    features : path or DataFrame
        Controls' feature table (``participant_id`` + numeric feature columns; Parquet,
        TSV or CSV, e.g. ``brainmatch extract``'s ``features.parquet``).
    covariates : path or DataFrame, optional
        Table with the covariate and site columns when they are not in ``features``.
    covariate_columns : sequence of str
        Covariates (e.g. ``("age", "sex")``); none: the reference is the controls'
        distribution adjusted for nothing.
    site_column : str, optional
        Site column (batch effect).
    feature_names : list of str, optional
        Features to model (default: every numeric column that is not an ID, covariate,
        site or group column).
    holdout : float
        Share of controls per site held out to estimate the calibration and fit
        diagnostics (0 disables); the final model is refitted on every control.
    heteroskedastic : bool, optional
        Noise variance depending on the design (True) or one per feature (False).  None
        (default): heteroskedastic when there are at least :data:`HETERO_PER_COLUMN`
        controls per design column, homoskedastic otherwise (a variance model with as many
        terms as the mean overfits small samples: held-out z too wide).
    n_knots, likelihood :
        See :class:`NormativeModel`.
    seed : int
        Seed of the hold-out split.
    out_dir : path, optional
        Write the outputs there (:meth:`NormativeFitResult.save`).

    Returns
    -------
    NormativeFitResult
    """
    table, fname = read_table(features, "features")
    provenance = feature_provenance(features)
    table = merge_covariates(table, fname, covariates)
    covs = [c.strip() for c in covariate_columns if c.strip()]
    for c in [*covs, *([site_column] if site_column else [])]:
        if c not in table.columns:
            raise BrainmatchInputError(
                f"column {c!r} is in neither the feature nor the covariate table "
                f"(columns: {', '.join(map(str, table.columns[:12]))} ...)",
                fname,
            )
    if not 0 <= holdout < 0.9:
        raise BrainmatchInputError(f"holdout {holdout}: must be in [0, 0.9)")
    exclude = {*covs, *([site_column] if site_column else [])}
    if feature_names is None:
        cols = feature_columns(table, exclude)
    else:
        cols = list(feature_names)
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise BrainmatchInputError(f"feature column(s) not found: {', '.join(missing[:5])}")
    if not cols:
        raise BrainmatchInputError("no numeric feature columns in the table", fname)
    warnings = group_check(table)
    # rows with missing covariates cannot be placed on the norm
    need = [*covs, *([site_column] if site_column else [])]
    bad_rows = table[need].isna().any(axis=1) if need else pd.Series(False, index=table.index)
    if bad_rows.any():
        warnings.append(
            f"{int(bad_rows.sum())} control(s) with missing covariates were left out: "
            f"{', '.join(table.loc[bad_rows, ID].astype(str).head(5))}"
        )
        table = table[~bad_rows].reset_index(drop=True)
    Y = table[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    # features that cannot be modelled are left out (named), not the whole fit refused
    with np.errstate(invalid="ignore"):
        sd = np.nanstd(Y, axis=0)
    n_obs = (~np.isnan(Y)).sum(axis=0)
    unusable = ~(sd > 1e-12 * np.maximum(np.abs(np.nanmean(np.where(n_obs > 0, Y, 0), 0)), 1.0))
    unusable |= n_obs < max(10, len(table) // 2)
    if unusable.all():
        raise BrainmatchInputError(
            "every feature is constant or mostly missing in the controls", fname
        )
    if unusable.any():
        dropped = [c for c, u in zip(cols, unusable, strict=True) if u]
        warnings.append(
            f"{len(dropped)} feature(s) constant or missing in more than half of the controls were "
            f"left out of the model: {', '.join(dropped[:8])}{' ...' if len(dropped) > 8 else ''}"
        )
        cols = [c for c, u in zip(cols, unusable, strict=True) if not u]
        Y = Y[:, ~unusable]
    X = table[need].copy() if need else pd.DataFrame(index=table.index)
    sites = table[site_column].astype(str).to_numpy() if site_column else None

    if heteroskedastic is None:
        from brainmatch.normative._design import learn_design

        n_columns = learn_design(X, covs, sites, n_knots=n_knots).n_columns
        heteroskedastic = len(table) >= HETERO_PER_COLUMN * n_columns

    def make() -> NormativeModel:
        return NormativeModel(
            covariates=tuple(covs),
            site_column=site_column,
            n_knots=n_knots,
            heteroskedastic=heteroskedastic,
            likelihood=likelihood,
        )

    metrics = pd.DataFrame()
    calibration: dict[str, Any] = {}
    contamination: dict[str, Any] = {}
    n = len(table)
    test = _split(n, sites, holdout, seed) if holdout > 0 else np.zeros(n, dtype=bool)
    if holdout > 0 and test.sum() < 10:
        warnings.append(
            f"only {int(test.sum())} controls would be held out: calibration on held-out "
            "controls was not estimated (more controls are needed)"
        )
        test[:] = False
    if test.any():
        Xtr, Ytr = X[~test].reset_index(drop=True), Y[~test]
        held = make().fit(Xtr, pd.DataFrame(Ytr, columns=cols))
        metrics = fit_metrics(held, X[test].reset_index(drop=True), Y[test], Ytr)
        zt, _ = held.zscores(X[test].reset_index(drop=True), pd.DataFrame(Y[test], columns=cols))
        flat = zt[~np.isnan(zt)]
        calibration = {
            "n_train": int((~test).sum()),
            "n_test": int(test.sum()),
            "mean_z": float(flat.mean()),
            "sd_z": float(flat.std(ddof=1)),
            "share_abs_z_below_1_96": float(np.mean(np.abs(flat) < 1.96)),
            "features_calibrated": float(
                np.mean(
                    metrics["share_abs_z_below_1_96"].between(*CALIBRATION_RANGE)
                    | (metrics["n_test"] < 50)
                )
            ),
        }
        share = calibration["share_abs_z_below_1_96"]
        if not CALIBRATION_RANGE[0] <= share <= CALIBRATION_RANGE[1]:
            warnings.append(
                f"held-out controls are miscalibrated: {100 * share:.1f}% have |z| < 1.96 "
                f"(expected 93-97%); deviations may be {'over' if share < 0.93 else 'under'}"
                "-stated"
            )
        contamination = contamination_check(zt)
        if contamination["suspect"]:
            cc = contamination
            warnings.append(
                f"the controls look mixed with patients: {100 * cc['persons_flagged']:.1f}% of "
                f"held-out controls have more extreme deviations (|z| > {EXTREME_Z}) than a "
                f"normative sample allows (expected 0.1%; {100 * cc['share_extreme']:.2f}% of "
                f"values are extreme, expected {100 * cc['expected_extreme']:.2f}%); fit on "
                "healthy controls only"
            )
    model = make().fit(X, pd.DataFrame(Y, columns=cols))
    n_per_site = (
        pd.Series(sites).value_counts().sort_index().astype(int).to_dict()
        if sites is not None
        else {}
    )
    summary = {
        "source": fname,
        "n_controls": n,
        "n_features": len(cols),
        "covariates": covs,
        "site_column": site_column,
        "sites": model.design_.sites,
        "controls_per_site": n_per_site,
        "design_columns": model.design_.columns,
        "heteroskedastic": heteroskedastic,
        "likelihood": likelihood,
        "n_knots": n_knots,
        "holdout": holdout,
        "seed": seed,
        "covariate_ranges": {
            item["name"]: [item["min"], item["max"]]
            for item in model.design_.covariates
            if item["kind"] != "categorical"
        },
        "calibration": calibration,
        "contamination": contamination,
        "feature_provenance": provenance,
    }
    result = NormativeFitResult(
        model=model, fit_metrics=metrics, summary=summary, warnings=warnings
    )
    if out_dir is not None:
        result.save(out_dir)
    return result


def score_normative(
    model: str | Path | NormativeModel,
    features: str | Path | pd.DataFrame,
    covariates: str | Path | pd.DataFrame | None = None,
    *,
    adapt: str | Path | pd.DataFrame | None = None,
    threshold: float = 1.0,
    out_dir: str | Path | None = None,
) -> NormativeScoreResult:
    """Deviation z-scores and circuit scores of anyone against a normative model.

    Parameters
    ----------
    model : path or NormativeModel
        ``normative_model.npz`` (or its folder) or a fitted model.
    features : path or DataFrame
        Feature table with the model's features (extra columns are ignored).
    covariates : path or DataFrame, optional
        Covariate / site columns when they are not in ``features``.
    adapt : path or DataFrame, optional
        Healthy controls of sites the model has not seen (features + covariates + site):
        the model is adapted to those sites before scoring.
    threshold : float
        |mean z| of a circuit score called under- / hyper-active.
    out_dir : path, optional
        Write the outputs there (:meth:`NormativeScoreResult.save`).

    Returns
    -------
    NormativeScoreResult
    """
    from brainmatch.circuits import circuit_scores

    meta: dict[str, Any]
    if isinstance(model, NormativeModel):
        nm, metrics, meta = model, pd.DataFrame(), {"summary": {}}
    else:
        nm, metrics, meta = load_normative_model(model)
    table, fname = read_table(features, "features")
    table = merge_covariates(table, fname, covariates)
    missing = [c for c in nm.feature_names_ if c not in table.columns]
    if missing:
        raise BrainmatchInputError(
            f"{len(missing)} of the model's {len(nm.feature_names_)} features are not in the "
            f"table: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}",
            fname,
        )
    need = list(nm.covariates)
    absent = [c for c in need if c not in table.columns]
    if absent:
        raise BrainmatchInputError(
            f"the model needs covariate column(s) {', '.join(absent)}; add them to the table or "
            "pass --covariates TABLE",
            fname,
        )
    warnings: list[str] = []
    if nm.site_column and nm.site_column not in table.columns and len(nm.design_.sites) > 1:
        warnings.append(
            f"no site column {nm.site_column!r}: everyone is scored against the average site "
            "(with the between-site variance added); pass the site to use the site's own norm"
        )
    if adapt is not None:
        atab, aname = read_table(adapt, "adaptation controls")
        cols = [*nm.covariates, *([nm.site_column] if nm.site_column else [])]
        lack = [c for c in [*cols, *nm.feature_names_] if c not in atab.columns]
        if lack:
            raise BrainmatchInputError(
                f"the adaptation table lacks column(s) {', '.join(lack[:8])}", aname
            )
        warnings += [w.replace("controls table", "adaptation table") for w in group_check(atab)]
        nm.adapt(atab[cols].reset_index(drop=True), atab[nm.feature_names_])
    cov_cols = [c for c in [*need, nm.site_column] if c and c in table.columns]
    X = table[cov_cols].reset_index(drop=True)
    z, info = nm.zscores(X, table[nm.feature_names_])
    if info["out_of_range"]:
        warnings += [f"{m}: deviations there are extrapolations" for m in info["out_of_range"]]
    status = info["site_status"]
    unseen = sorted(
        set(table.loc[status == "unseen", nm.site_column].astype(str))
        if nm.site_column and nm.site_column in table.columns
        else set()
    )
    if unseen:
        warnings.append(
            f"site(s) {', '.join(unseen)} were not in the controls and no adaptation controls were "
            "given: their people are scored against the average site with the between-site "
            "variance added (pass --adapt with a few of their controls)"
        )
    ids = table[ID].astype(str).to_numpy()
    dev = pd.DataFrame(z, columns=nm.feature_names_)
    dev.insert(0, ID, ids)
    circuits = circuit_scores(dev, threshold=threshold)
    finite = ~np.isnan(z)
    people = pd.DataFrame(
        {
            ID: ids,
            "site_status": status,
            "extrapolated": info["extrapolated"],
            "n_features": finite.sum(axis=1),
            "n_extreme": (np.abs(np.where(finite, z, 0)) > EXTREME_Z).sum(axis=1),
            "n_extreme_negative": (np.where(finite, z, 0) < -EXTREME_Z).sum(axis=1),
            "n_extreme_positive": (np.where(finite, z, 0) > EXTREME_Z).sum(axis=1),
            "mean_abs_z": np.nanmean(np.abs(z), axis=1),
        }
    )
    summary = dict(meta.get("summary", {}))
    summary.update(
        {
            "path": None if isinstance(model, NormativeModel) else str(model),
            "brainmatch_version": meta.get("brainmatch_version"),
            "adapted_sites": sorted(nm.adapted_sites_),
        }
    )
    result = NormativeScoreResult(
        deviations=dev,
        circuits=circuits,
        people=people,
        fit_metrics=metrics,
        warnings=warnings,
        model_summary=summary,
    )
    if out_dir is not None:
        result.save(out_dir)
    return result
