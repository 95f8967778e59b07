"""Confound selection, signal cleaning and connectivity without importing nilearn.

``brainmatch extract`` cleans a small (volumes x regions) matrix per run.  Doing that
with nilearn's ``load_confounds_strategy``, ``signal.clean`` and
``ConnectivityMeasure`` costs 2-3 s of imports (nilearn, then scikit-learn) and ~50 ms
per run (the confounds table is read twice, pandas and scikit-learn validation), in
the process that feeds the workers: on a 2-core machine that time is taken from the
workers.  This module computes the same numbers with numpy (and scipy's Butterworth
filter and cubic spline only when filtering is asked for).

Every function here mirrors one of nilearn 0.13 / scikit-learn 1.9 (named in its
docstring) and is tested against it (``tests/test_cleaning.py``) to float64 rounding.
One deliberate difference: with both a sample mask and a Butterworth filter, nilearn
0.13's ``_interpolate_volumes`` indexes the censored volumes with ``~sample_mask`` on
an integer index array (bitwise not, i.e. the mirrored positions), so a censored
volume whose mirror image ``n - 1 - i`` is also censored keeps its original value, and
censored volumes before the first kept one are then not trimmed before the mask is
shifted.  Here every censored volume between the first and the last kept one is
interpolated, and those outside are dropped, as nilearn documents.  The results are
identical whenever no censored volume's mirror is censored (tested both ways).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainmatch.errors import BrainmatchInputError

_EPS64 = float(np.finfo(np.float64).eps)
_MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
_SUFFIXES = {"basic": (), "full": ("derivative1", "power2", "derivative1_power2")}


@dataclass(frozen=True)
class Preset:
    """One of nilearn's ``load_confounds_strategy`` presets (its default parameters)."""

    motion: str | None
    wm_csf: str | None
    compcor: bool = False
    scrub: int = 0
    fd_threshold: float = 0.5
    std_dvars_threshold: float = 1.5


#: nilearn 0.13's ``preset_strategies`` (``load_confounds_strategy.py``); all of them
#: add fMRIPrep's cosine regressors (``high_pass``) and demean the confounds.
PRESETS = {
    "simple": Preset(motion="full", wm_csf="basic"),
    "scrubbing": Preset(motion="full", wm_csf="full", scrub=5),
    "compcor": Preset(motion="full", wm_csf=None, compcor=True),
}


def _with_suffixes(names: tuple[str, ...], model: str) -> list[str]:
    out = list(names)
    out += [f"{n}_{s}" for n in names for s in _SUFFIXES[model]]
    return out


def _require(columns: set[str], wanted: list[str], what: str, table: Path) -> None:
    missing = [c for c in wanted if c not in columns]
    if len(missing) == len(wanted):
        raise BrainmatchInputError(
            f"the confounds table has no {what} columns (needs {', '.join(wanted[:4])}...)",
            table,
        )
    if missing:
        raise BrainmatchInputError(
            f"the confounds table lacks {what} column(s) {', '.join(missing)}", table
        )


def _compcor_columns(meta: Any, sidecar: Path) -> list[str]:
    """nilearn's ``find_compcor(meta, "anat_combined", "all")``: a_comp_cor_NN of mask combined."""
    if not isinstance(meta, dict):
        raise BrainmatchInputError("confounds JSON is not an object of columns", sidecar)
    n = sum(1 for key in meta if "a_comp_cor" in key)
    names = [f"a_comp_cor_{i:02d}" for i in range(n)]
    out = []
    for name in names:
        entry = meta.get(name)
        if not isinstance(entry, dict) or "Mask" not in entry:
            raise BrainmatchInputError(
                f"confounds JSON has no 'Mask' entry for {name} (needed by compcor)", sidecar
            )
        if entry["Mask"] in ("combined",):
            out.append(name)
    if not out:
        raise BrainmatchInputError(
            "confounds JSON lists no anatomical CompCor components of the combined mask "
            "(a_comp_cor_NN with Mask 'combined')",
            sidecar,
        )
    return out


def _optimize_scrub(index: np.ndarray, n_scans: int, scrub: int) -> np.ndarray:
    """nilearn's ``optimize_scrub``: also censor segments shorter than ``scrub`` volumes."""
    idx = [int(i) for i in index]
    if idx[0] < scrub:
        idx = list(range(idx[0])) + idx
    if n_scans - (idx[-1] + 1) < scrub:
        idx = idx + list(range(idx[-1], n_scans))
    arr = np.asarray(idx)
    gaps = np.diff(arr)
    short = np.where((gaps > 1) & (gaps < scrub + 1))[0]
    extra = [i for k in short for i in range(int(arr[k]) + 1, int(arr[k + 1]))]
    return np.unique(np.concatenate([arr, np.asarray(extra, dtype=arr.dtype)]))


def select_confounds(
    table: Any,
    table_path: Path,
    strategy: str,
    *,
    meta: Any = None,
    meta_path: Path | None = None,
    fd_threshold: float | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """nilearn's ``load_confounds_strategy(img, strategy)`` on an already-read table.

    Parameters
    ----------
    table : pandas.DataFrame
        The fMRIPrep confounds table as ``pandas.read_csv(path, sep="\\t")`` reads it.
    table_path : Path
        Its path (for error messages).
    strategy : {"simple", "scrubbing", "compcor"}
    meta : dict, optional
        The confounds JSON sidecar (required for ``compcor``).
    meta_path : Path, optional
    fd_threshold : float, optional
        Framewise-displacement threshold of ``scrubbing`` (default 0.5 mm).

    Returns
    -------
    confounds : ndarray (n_volumes, n_confounds) or None
        Demeaned regressors, columns in sorted name order (as nilearn returns them).
    sample_mask : ndarray of int or None
        Volumes kept; None when the table flags no volume (no non-steady-state or
        outlier columns).
    names : list of str
    """
    preset = PRESETS[strategy]
    columns = [str(c) for c in table.columns]
    have = set(columns)
    n = len(table)
    chosen: list[str] = [c for c in columns if "non_steady_state" in c]
    chosen += [c for c in columns if "cosine" in c]
    if preset.motion:
        motion = _with_suffixes(_MOTION, preset.motion)
        _require(have, motion, "motion", table_path)
        chosen += motion
    if preset.wm_csf:
        wm_csf = _with_suffixes(("csf", "white_matter"), preset.wm_csf)
        _require(have, wm_csf, "csf / white_matter", table_path)
        chosen += wm_csf
    if preset.compcor:
        if meta is None:
            raise BrainmatchInputError(
                "confounds JSON sidecar is missing (compcor needs its component metadata)",
                meta_path,
            )
        comp = _compcor_columns(meta, meta_path or table_path)
        _require(have, comp, "anatomical CompCor", table_path)
        chosen += comp
    if preset.scrub:
        chosen += ["framewise_displacement", "std_dvars"]
    for col in dict.fromkeys(chosen):  # the columns used; others may hold anything
        if col in have and table[col].dtype.kind not in "biuf":
            raise BrainmatchInputError(
                f"confounds column {col!r} holds non-numeric values", table_path
            )
    values = {
        c: table[c].to_numpy(dtype=np.float64, na_value=np.nan)
        for c in dict.fromkeys(chosen)
        if c in have
    }
    outliers = [values[c] for c in values if "non_steady_state" in c]
    if preset.scrub:
        for col in ("framewise_displacement", "std_dvars"):
            if col not in have:
                raise BrainmatchInputError(
                    f"the confounds table has no {col} column (needed for scrubbing)", table_path
                )
        fd, dvars = values.pop("framewise_displacement"), values.pop("std_dvars")
        thr = preset.fd_threshold if fd_threshold is None else fd_threshold
        with np.errstate(invalid="ignore"):
            flagged = np.unique(
                np.concatenate(
                    [np.where(fd > thr)[0], np.where(dvars > preset.std_dvars_threshold)[0]]
                )
            )
        if flagged.size:
            flagged = _optimize_scrub(flagged, n, preset.scrub)
        for i in flagged:
            onehot = np.zeros(n)
            onehot[i] = 1.0
            outliers.append(onehot)
    regressors = sorted(
        c for c in values if "non_steady_state" not in c and "motion_outlier" not in c
    )
    sample_mask = None
    if outliers:
        stacked = np.nan_to_num(np.column_stack(outliers), nan=0.0)
        stacked = np.unique(stacked, axis=1)  # nilearn drops duplicate outlier columns
        sample_mask = np.where(stacked.sum(axis=1) == 0)[0]
    if not regressors:
        return None, sample_mask, []
    conf = np.column_stack([values[c] for c in regressors])
    if n > 1:  # the first row of derivatives is n/a in fMRIPrep tables: nilearn copies row 2
        first = np.isnan(conf[0])
        conf[0, first] = conf[1, first]
    rows = conf if sample_mask is None or not sample_mask.size else conf[sample_mask]
    conf = conf - rows.mean(axis=0)
    return conf, sample_mask, regressors


def read_confounds(
    table_path: Path,
    strategy: str,
    n_volumes: int,
    fd_threshold: float | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """Read an fMRIPrep confounds table (and JSON) and :func:`select_confounds` from it.

    Raises :class:`BrainmatchInputError` naming the file for a missing or malformed
    table or JSON, a row count other than ``n_volumes``, non-numeric values, missing
    columns, or every volume censored.
    """
    import pandas as pd

    if not table_path.exists():
        raise BrainmatchInputError(
            f"the fMRIPrep confounds table {table_path.name} is missing (needed for --denoise "
            f"{strategy})",
            table_path,
        )
    try:
        table = pd.read_csv(table_path, sep="\t", encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise BrainmatchInputError(f"malformed confounds table: {exc}", table_path) from None
    except OSError as exc:
        raise BrainmatchInputError(f"cannot read the confounds table: {exc}", table_path) from None
    if table.shape[1] < 2:
        raise BrainmatchInputError(
            "malformed confounds table: not tab-separated columns", table_path
        )
    if len(table) != n_volumes:
        raise BrainmatchInputError(
            f"confounds table has {len(table)} rows but the BOLD has {n_volumes} volumes",
            table_path,
        )
    if not {"trans_x", "rot_z"} <= set(table.columns):
        raise BrainmatchInputError(
            "confounds table lacks fMRIPrep's motion columns (trans_x ... rot_z)", table_path
        )
    meta_path = table_path.with_suffix(".json")
    meta = None
    if strategy in ("compcor", "scrubbing") and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BrainmatchInputError(f"malformed confounds JSON: {exc}", meta_path) from None
    conf, sample_mask, names = select_confounds(
        table,
        table_path,
        strategy,
        meta=meta,
        meta_path=meta_path,
        fd_threshold=fd_threshold,
    )
    if sample_mask is not None and sample_mask.size == 0:
        raise BrainmatchInputError(
            "every volume is marked as a motion outlier or non-steady-state", table_path
        )
    if conf is not None and not np.isfinite(conf).all():
        raise BrainmatchInputError("confounds contain non-numeric or missing values", table_path)
    return conf, sample_mask, names


# --- signal.clean -----------------------------------------------------------------------------


def detrend(x: np.ndarray) -> np.ndarray:
    """nilearn's ``_detrend`` (linear): remove each column's mean and linear trend."""
    out = x - x.mean(axis=0)
    if len(out) < 2:
        return out
    reg = np.arange(len(out), dtype=out.dtype)
    reg -= reg.mean()
    norm = np.sqrt((reg**2).sum())
    if not norm < _EPS64:
        reg /= norm
    out -= np.outer(reg, reg @ out)
    return out


def _zscore(x: np.ndarray, ddof: int) -> np.ndarray:
    centred = x - x.mean(axis=0)
    sd = centred.std(axis=0, ddof=ddof)
    sd[sd < _EPS64] = 1.0
    return centred / sd


def zscore_sample(x: np.ndarray) -> np.ndarray:
    """Column z-scores with the sample SD (ddof 1); constant columns become 0 (nilearn's
    ``standardize="zscore_sample"``)."""
    return _zscore(x, 1)


def butterworth(
    x: np.ndarray, t_r: float, low_pass: float | None, high_pass: float | None
) -> np.ndarray:
    """nilearn's ``signal.butterworth`` (order 5, zero-phase ``sosfiltfilt``, odd padding)."""
    from scipy import signal as sp_signal

    if low_pass is None and high_pass is None:
        return x
    fs = 1.0 / t_r
    nyq = 0.5 * fs
    eps32 = float(np.finfo(np.float32).eps)

    def wn(freq: float) -> float:  # nilearn's _check_wn: clamp into (0, Nyquist)
        if freq >= nyq:
            return nyq - nyq * 10 * eps32
        return nyq * eps32 if freq < 0 else freq

    if low_pass is not None and high_pass is not None:
        if high_pass >= low_pass:
            raise ValueError(
                f"High pass cutoff frequency ({high_pass}) is greater than or equal to low "
                f"pass filter frequency ({low_pass})"
            )
        band = [wn(high_pass), wn(low_pass)]
        if band[0] == band[1]:
            return x
        sos = sp_signal.butter(N=5, Wn=band, btype="band", output="sos", fs=fs)
    elif high_pass is not None:
        sos = sp_signal.butter(N=5, Wn=wn(high_pass), btype="high", output="sos", fs=fs)
    else:
        assert low_pass is not None
        sos = sp_signal.butter(N=5, Wn=wn(low_pass), btype="low", output="sos", fs=fs)
    return np.asarray(sp_signal.sosfiltfilt(sos, x, axis=0, padtype="odd"), dtype=np.float64)


def _interpolate(
    x: np.ndarray, sample_mask: np.ndarray, t_r: float
) -> tuple[np.ndarray, np.ndarray]:
    """Censored volumes between the first and last kept one, by a cubic spline over the
    kept ones (not-a-knot, as nilearn); the volumes outside are dropped.  Returns the
    trimmed series and the sample mask shifted to it."""
    from scipy.interpolate import CubicSpline

    times = np.arange(len(x)) * t_r
    first, last = int(sample_mask[0]), int(sample_mask[-1])
    out = x[first : last + 1].copy()
    censored = np.setdiff1d(np.arange(first, last + 1), sample_mask)
    if censored.size:
        spline = CubicSpline(times[sample_mask], x[sample_mask], extrapolate=False)
        out[censored - first] = spline(times[censored])
    return out, sample_mask - first


def _check_mask(sample_mask: Any, n: int) -> np.ndarray:
    """A sample mask as sorted volume indices (a boolean mask of length n, or indices)."""
    arr = np.asarray(sample_mask)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"a boolean sample_mask needs {n} values, got shape {arr.shape}")
        return np.flatnonzero(arr)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError("sample_mask must be volume indices or a boolean mask")
    idx = arr.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"sample_mask indices must be in 0..{n - 1}")
    if np.any(np.diff(idx) <= 0):
        raise ValueError("sample_mask indices must be increasing, without repeats")
    return idx


def clean(
    signals: np.ndarray,
    *,
    confounds: np.ndarray | None = None,
    sample_mask: np.ndarray | None = None,
    t_r: float | None = None,
    detrend_signals: bool = True,
    low_pass: float | None = None,
    high_pass: float | None = None,
    standardize: bool = True,
) -> np.ndarray:
    """nilearn's ``signal.clean`` with ``filter="butterworth"``, ``standardize_confounds=True``
    and ``standardize="zscore_sample"`` (or ``None``).

    Steps, in nilearn's order: censoring (or, when filtering, interpolating the censored
    volumes); detrending signals and confounds; Butterworth filtering of both, then
    censoring; z-scoring the confounds (population SD) and projecting them out of the
    signals (pivoted QR, columns with ``|R_ii| <= 100 eps`` dropped); z-scoring.

    Raises
    ------
    ValueError
        From scipy when the series is shorter than the filter's padding.
    """
    x = np.array(signals, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"signals must be 2D (volumes x series), got shape {x.shape}")
    n = len(x)
    c = None
    if confounds is not None:
        c = np.array(confounds, dtype=np.float64)
        c = c[:, None] if c.ndim == 1 else c
        if c.ndim != 2 or len(c) != n:
            raise ValueError(f"confounds have shape {c.shape}; they need one row per volume ({n})")
    filtering = low_pass is not None or high_pass is not None
    if filtering and t_r is None:
        raise ValueError("Repetition time (t_r) must be specified for butterworth filtering.")
    mask = None if sample_mask is None else _check_mask(sample_mask, n)
    if (n if mask is None else len(mask)) < 2:
        raise ValueError("cleaning needs at least 2 volumes (after censoring)")
    if mask is not None:
        if filtering:
            assert t_r is not None
            x, shifted = _interpolate(x, mask, t_r)
            if c is not None:
                c, _ = _interpolate(c, mask, t_r)
            mask = shifted
        else:
            x = x[mask]
            c = None if c is None else c[mask]
            mask = None
    if detrend_signals:
        x = detrend(x)
        c = None if c is None else detrend(c)
    if filtering:
        assert t_r is not None
        x = butterworth(x, t_r, low_pass, high_pass)
        c = None if c is None else butterworth(c, t_r, low_pass, high_pass)
        if mask is not None:
            x = x[mask]
            c = None if c is None else c[mask]
    if c is not None:
        from scipy.linalg import qr

        c = _zscore(c, 0)
        q, r, _ = qr(c, mode="economic", pivoting=True)
        q = q[:, np.abs(np.diag(r)) > _EPS64 * 100.0]
        x -= q @ (q.T @ x)
    return zscore_sample(x) if standardize else x


# --- ConnectivityMeasure ------------------------------------------------------------------------


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """scikit-learn's ``LedoitWolf().fit(x).covariance_`` (centred data, one block)."""
    n, p = x.shape
    if not np.isfinite(x).all():
        raise ValueError("the series contain NaN or infinite values")
    xc = x - x.mean(axis=0)
    if p == 1:
        return np.atleast_2d((xc**2).mean())
    x2 = xc**2
    trace = x2.sum(axis=0) / n
    mu = trace.sum() / p
    emp = xc.T @ xc / n
    beta_ = float(np.sum(x2.T @ x2))
    delta_ = float(np.sum(emp**2))
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace.sum() + p * mu**2) / p
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    mu = np.trace(emp) / p
    shrunk = (1.0 - shrinkage) * emp
    shrunk.flat[:: p + 1] += shrinkage * mu
    return shrunk


def cov_to_corr(cov: np.ndarray) -> np.ndarray:
    """nilearn's ``cov_to_corr``."""
    d = np.atleast_2d(1.0 / np.sqrt(np.diag(cov)))
    corr = cov * d * d.T
    np.fill_diagonal(corr, 1.0)
    return corr


def correlation(x: np.ndarray) -> np.ndarray:
    """``ConnectivityMeasure(kind="correlation").fit_transform([x])[0]``: Ledoit-Wolf
    covariance of the z-scored (population SD) series, as correlations."""
    return cov_to_corr(ledoit_wolf(_zscore(x, 0)))


def partial_correlation(x: np.ndarray) -> np.ndarray:
    """``ConnectivityMeasure(kind="partial correlation")``: from the inverse of the
    Ledoit-Wolf covariance of the series."""
    partial = -cov_to_corr(np.linalg.inv(ledoit_wolf(x)))
    np.fill_diagonal(partial, 1.0)
    return partial


__all__ = [
    "PRESETS",
    "butterworth",
    "clean",
    "correlation",
    "cov_to_corr",
    "detrend",
    "ledoit_wolf",
    "partial_correlation",
    "read_confounds",
    "select_confounds",
    "zscore_sample",
]
