"""Denoising of region signals and connectivity, with nilearn's exact semantics.

The region signals are small (volumes x regions).  They are cleaned as nilearn's
``signal.clean`` cleans them (the function ``NiftiLabelsMasker`` applies after
extracting region means), with confounds chosen as nilearn's
``load_confounds_strategy`` chooses them, and connectivity is nilearn's
``ConnectivityMeasure`` (Ledoit-Wolf covariance).  The arithmetic lives in
:mod:`brainmatch.features.cleaning`, which imports neither nilearn nor scikit-learn
and is tested equal to them; only the group-level tangent space uses nilearn.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def read_tr(sidecar: Path, header_tr: float | None = None) -> float:
    """``RepetitionTime`` (s) from a BOLD JSON sidecar, checked against the NIfTI header.

    ``header_tr`` is the header's ``pixdim[4]`` in seconds; when it is set (> 0) and
    differs from the sidecar by more than 1 %, the run is refused: one of the two is
    wrong, and every frequency-based measure (filters, fALFF, the task HRF) would be off.
    """
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
    if header_tr is not None and header_tr > 0 and abs(header_tr - tr) > 0.01 * tr:
        raise BrainmatchInputError(
            f"RepetitionTime {tr:g} s in the sidecar disagrees with the NIfTI header's "
            f"{header_tr:g} s (pixdim[4]); fix whichever is wrong",
            sidecar,
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
    """Confound regressors and sample mask for one BOLD run (nilearn's
    ``load_confounds_strategy(bold, options.denoise)``, computed by
    :func:`brainmatch.features.cleaning.read_confounds`).

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
    from brainmatch.features.cleaning import read_confounds

    return read_confounds(
        confounds_path(bold), options.denoise, n_volumes, fd_threshold=options.fd_threshold
    )


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
    """nilearn ``signal.clean`` with the masker's arguments (computed by
    :func:`brainmatch.features.cleaning.clean`); clear errors on short runs."""
    from brainmatch.features.cleaning import clean

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
        out = clean(
            signals,
            confounds=confounds,
            sample_mask=sample_mask,
            t_r=tr,
            detrend_signals=options.detrend,
            low_pass=options.low_pass,
            high_pass=options.high_pass,
            standardize=std,
        )
    except ValueError as exc:
        if "padlen" in str(exc):
            raise BrainmatchInputError(
                f"only {n_kept} volumes: fewer than the Butterworth filter needs ({exc})", path
            ) from None
        raise BrainmatchInputError(f"cannot clean the signals: {exc}", path) from None
    return out


def connectivity(series: list[np.ndarray], kind: str) -> list[np.ndarray]:
    """nilearn ``ConnectivityMeasure(kind=...)`` matrices of each subject's series.

    ``correlation`` and ``partial`` are computed by :mod:`brainmatch.features.cleaning`
    (tested equal to nilearn); ``tangent``, a group-level fit, uses nilearn itself.
    """
    if kind != "tangent":
        from brainmatch.features.cleaning import correlation, partial_correlation

        one = correlation if kind == "correlation" else partial_correlation
        return [one(np.asarray(s, dtype=np.float64)) for s in series]
    from nilearn.connectome import ConnectivityMeasure

    measure = ConnectivityMeasure(kind="tangent")
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
