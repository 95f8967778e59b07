"""Denoising of region signals and connectivity, with nilearn's exact semantics.

The region signals are small (volumes x regions), so brainmatch cleans them with
nilearn's own ``signal.clean`` (the function ``NiftiLabelsMasker`` applies after
extracting region means) and reads confounds with nilearn's
``load_confounds_strategy``: the same options give the same numbers, by construction.
Connectivity uses nilearn's ``ConnectivityMeasure`` (Ledoit-Wolf covariance).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError

DENOISE_STRATEGIES = ("none", "simple", "scrubbing", "compcor")
CONNECTIVITY_KINDS = {
    "correlation": "pearsoncorrelation",
    "partial": "partialcorrelation",
    "tangent": "tangent",
}
#: Feature-name prefix of each connectivity kind.
CONNECTIVITY_PREFIX = {"correlation": "conn", "partial": "pconn", "tangent": "tconn"}


@dataclass(frozen=True)
class CleanOptions:
    """How region signals are cleaned (the meaning of nilearn's arguments).

    Parameters
    ----------
    denoise : {"none", "simple", "scrubbing", "compcor"}
        ``load_confounds_strategy`` preset applied with the fMRIPrep confounds table.
    standardize : {"zscore", "none"}
        ``zscore`` is nilearn's ``"zscore_sample"`` (ddof = 1).
    detrend : bool
    low_pass, high_pass : float, optional
        Butterworth cut-offs in Hz (TR from the BOLD's JSON sidecar).
    fd_threshold : float, optional
        Framewise-displacement threshold (mm) for ``scrubbing`` (nilearn's default 0.5).
    """

    denoise: str = "simple"
    standardize: str = "zscore"
    detrend: bool = True
    low_pass: float | None = None
    high_pass: float | None = None
    fd_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.denoise not in DENOISE_STRATEGIES:
            raise BrainmatchInputError(
                f"--denoise must be one of {', '.join(DENOISE_STRATEGIES)}, got {self.denoise!r}"
            )
        if self.standardize not in ("zscore", "none"):
            raise BrainmatchInputError(
                f"--standardize must be zscore or none, got {self.standardize!r}"
            )
        for name in ("low_pass", "high_pass", "fd_threshold"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise BrainmatchInputError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.low_pass and self.high_pass and self.high_pass >= self.low_pass:
            raise BrainmatchInputError(
                f"--high-pass ({self.high_pass} Hz) must be below --low-pass ({self.low_pass} Hz)"
            )
        if self.fd_threshold is not None and self.denoise != "scrubbing":
            raise BrainmatchInputError("--fd-threshold only applies with --denoise scrubbing")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for metadata and hashing)."""
        return asdict(self)


def read_tr(sidecar: Path) -> float:
    """``RepetitionTime`` (s) from a BOLD JSON sidecar."""
    if not sidecar.exists():
        raise BrainmatchInputError(
            "BOLD JSON sidecar is missing (needed for RepetitionTime)", sidecar
        )
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BrainmatchInputError(f"malformed JSON sidecar: {exc}", sidecar) from None
    tr = meta.get("RepetitionTime") if isinstance(meta, dict) else None
    if not isinstance(tr, int | float) or isinstance(tr, bool) or not (0 < tr < 100):
        raise BrainmatchInputError(
            f"sidecar has no valid RepetitionTime (got {tr!r}); it must be seconds > 0", sidecar
        )
    return float(tr)


def confounds_path(bold: Path) -> Path:
    """The fMRIPrep confounds TSV that belongs to a BOLD file (may not exist)."""
    name = bold.name
    stem = name.split("_space-")[0] if "_space-" in name else name.split("_desc-")[0]
    return bold.with_name(f"{stem}_desc-confounds_timeseries.tsv")


def load_confounds(
    bold: Path, options: CleanOptions, n_volumes: int
) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """Confound regressors and sample mask for one BOLD run.

    Returns
    -------
    confounds : ndarray (n_volumes, n_confounds) or None
    sample_mask : ndarray of int or None
        Volumes kept (scrubbing, non-steady-state volumes).
    names : list of str
        Confound column names.
    """
    if options.denoise == "none":
        return None, None, []
    table = confounds_path(bold)
    if not table.exists():
        raise BrainmatchInputError(
            f"the fMRIPrep confounds table {table.name} is missing (needed for --denoise "
            f"{options.denoise})",
            table,
        )
    _check_confounds_table(table, n_volumes)
    if options.denoise in ("compcor", "scrubbing"):
        sidecar = table.with_suffix(".json")
        if options.denoise == "compcor" and not sidecar.exists():
            raise BrainmatchInputError(
                "confounds JSON sidecar is missing (compcor needs its component metadata)", sidecar
            )
        if sidecar.exists():
            try:
                json.loads(sidecar.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise BrainmatchInputError(f"malformed confounds JSON: {exc}", sidecar) from None
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    kwargs: dict[str, Any] = {}
    if options.fd_threshold is not None:
        kwargs["fd_threshold"] = options.fd_threshold
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # nilearn only accepts .nii.gz names; it uses the name to find the confounds
            name = str(bold) + ".gz" if bold.name.endswith(".nii") else str(bold)
            conf, sample_mask = load_confounds_strategy(name, options.denoise, **kwargs)
    except (ValueError, KeyError, OSError, IndexError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrainmatchInputError(f"cannot use the confounds table: {msg}", table) from None
    if conf is None or conf.shape[1] == 0:
        return None, sample_mask, []
    values = conf.to_numpy(dtype=np.float64)
    if len(values) != n_volumes:
        raise BrainmatchInputError(
            f"confounds table has {len(values)} rows but the BOLD has {n_volumes} volumes", table
        )
    if not np.isfinite(values).all():
        raise BrainmatchInputError("confounds contain non-numeric or missing values", table)
    return values, sample_mask, [str(c) for c in conf.columns]


def _check_confounds_table(table: Path, n_volumes: int) -> None:
    try:
        head = pd.read_csv(table, sep="\t", na_values="n/a", nrows=n_volumes + 2)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise BrainmatchInputError(f"malformed confounds table: {exc}", table) from None
    if head.shape[1] < 2:
        raise BrainmatchInputError("malformed confounds table: not tab-separated columns", table)
    if len(head) != n_volumes:
        raise BrainmatchInputError(
            f"confounds table has {len(head)} rows but the BOLD has {n_volumes} volumes", table
        )
    needed = {"trans_x", "rot_z"}
    if not needed <= set(head.columns):
        raise BrainmatchInputError(
            "confounds table lacks fMRIPrep's motion columns (trans_x ... rot_z)", table
        )
    bad = [c for c in head.columns if head[c].dtype == object]
    if bad:
        raise BrainmatchInputError(f"confounds column {bad[0]!r} holds non-numeric values", table)


def clean_signals(
    signals: np.ndarray,
    *,
    confounds: np.ndarray | None,
    sample_mask: np.ndarray | None,
    tr: float | None,
    options: CleanOptions,
    standardize: bool | None = None,
    path: Path | None = None,
) -> np.ndarray:
    """nilearn ``signal.clean`` with the masker's arguments; clear errors on short runs."""
    from nilearn import signal

    std = options.standardize == "zscore" if standardize is None else standardize
    n_kept = len(sample_mask) if sample_mask is not None else len(signals)
    n_conf = 0 if confounds is None else confounds.shape[1]
    needed = n_conf + 1 + int(options.detrend) + 2
    if n_kept < needed:
        raise BrainmatchInputError(
            f"only {n_kept} usable volumes, fewer than the {needed} that {n_conf} confound "
            f"regressors{' and detrending' if options.detrend else ''} need",
            path,
        )
    if (options.low_pass or options.high_pass) and tr is None:
        raise BrainmatchInputError("filtering needs the TR (RepetitionTime)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = signal.clean(
                signals,
                detrend=options.detrend,
                standardize="zscore_sample" if std else False,
                standardize_confounds=True,
                t_r=tr,
                low_pass=options.low_pass,
                high_pass=options.high_pass,
                confounds=confounds,
                sample_mask=sample_mask,
            )
    except ValueError as exc:
        if "padlen" in str(exc):
            raise BrainmatchInputError(
                f"only {n_kept} volumes: fewer than the Butterworth filter needs ({exc})", path
            ) from None
        raise BrainmatchInputError(f"cannot clean the signals: {exc}", path) from None
    return np.asarray(out, dtype=np.float64)


def connectivity(series: list[np.ndarray], kind: str) -> list[np.ndarray]:
    """nilearn ``ConnectivityMeasure(kind=...)`` matrices of each subject's series."""
    from nilearn.connectome import ConnectivityMeasure

    kinds = {"correlation": "correlation", "partial": "partial correlation", "tangent": "tangent"}
    measure = ConnectivityMeasure(kind=kinds[kind])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mats = measure.fit_transform(series)
    return [np.asarray(m, dtype=np.float64) for m in mats]


def fisher_z(matrix: np.ndarray) -> np.ndarray:
    """arctanh of a correlation matrix (off-diagonal; diagonal set to 0)."""
    r = np.clip(matrix, -1 + 1e-7, 1 - 1e-7)
    z = np.arctanh(r)
    np.fill_diagonal(z, 0.0)
    return z


def amplitude_features(
    cleaned: np.ndarray,
    raw_mean: np.ndarray,
    tr: float | None,
    band: tuple[float, float] = (0.01, 0.08),
) -> tuple[np.ndarray, np.ndarray]:
    """Regional amplitude (% signal) and fALFF of cleaned, unstandardised signals.

    Returns
    -------
    amplitude : ndarray (n_regions,)
        Standard deviation of the cleaned signal as a percentage of the region's mean
        raw intensity.
    falff : ndarray (n_regions,)
        Fraction of amplitude in ``band`` (Zou et al. 2008): the sum of the amplitude
        spectrum over 0.01-0.08 Hz divided by its sum over all frequencies above 0.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = 100.0 * cleaned.std(axis=0, ddof=1) / np.abs(raw_mean)
    falff = np.full(cleaned.shape[1], np.nan)
    if tr is not None and len(cleaned) > 4:
        spec = np.abs(np.fft.rfft(cleaned - cleaned.mean(axis=0), axis=0))
        freqs = np.fft.rfftfreq(len(cleaned), d=tr)
        total = spec[1:].sum(axis=0)
        inband = spec[(freqs >= band[0]) & (freqs <= band[1])].sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            falff = np.where(total > 0, inband / total, np.nan)
    return amp, falff
