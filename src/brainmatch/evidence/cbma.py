"""Coordinate-based meta-analysis of brain change (``brainmatch cbma``), with NiMARE.

The statistics are NiMARE's: activation likelihood estimation (ALE; Turkeltaub et al.
2002, Eickhoff et al. 2009, 2012) or multilevel kernel density analysis (MKDA; Wager et
al. 2007), the approximate null for uncorrected p, and Monte Carlo family-wise error
correction (random relocation of every focus inside the mask, ``iterations`` times) at
the voxel level and at the cluster level with a cluster-forming threshold of p < 0.001,
as GingerALE and pyALE use.  Contrasts of two sets of experiments are NiMARE's
``ALESubtraction`` (label permutation; Laird et al. 2005, Eickhoff et al. 2012) with
cluster-level FWE; conjunctions are the minimum statistic over voxels significant in
both sets (Nichols et al. 2005).  The Monte Carlo nulls, the observed ALE map and the
subtraction's permutations run on brainmatch's compiled engines
(:mod:`~brainmatch.evidence.ale_engine`, :mod:`~brainmatch.evidence.ale_subtraction`),
which reproduce NiMARE's numbers for the same seed; ``engine="nimare"`` runs NiMARE's.

What brainmatch adds: readers with clear errors (:mod:`brainmatch.evidence.cbma_io`),
Talairach conversion, a check that foci lie in the brain, a cluster table with
Harvard-Oxford labels and the share of each cluster inside the affect network, atomic
NIfTI / TSV / JSON outputs and an HTML report with glass-brain figures.

Public API
----------
- :func:`run_cbma` (read, analyse, save: one call)
- :class:`CoordinateMetaAnalysis` (``fit(coordinates) -> self``, ``result_``)
- :func:`subtract` (two sets: ``A - B`` and ``B - A``), :func:`conjunction`
- :class:`CBMAResult` (``clusters``, ``maps``, ``summary()``, ``save(out_dir)``)
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from brainmatch._heap import frozen_heap
from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.cbma_io import CoordinateTable

METHODS = ("ale", "mkda")
ENGINES = ("brainmatch", "nimare")
#: Below this many experiments ALE results are unreliable (Eickhoff et al. 2016).
MIN_RELIABLE_EXPERIMENTS = 17

#: Citations used in methods paragraphs (key -> reference).
REFERENCES: dict[str, str] = {
    "turkeltaub2002": "Turkeltaub PE, Eden GF, Jones KM, Zeffiro TA (2002). Meta-analysis of the "
    "functional neuroanatomy of single-word reading. NeuroImage 16:765-780.",
    "eickhoff2009": "Eickhoff SB, Laird AR, Grefkes C, Wang LE, Zilles K, Fox PT (2009). "
    "Coordinate-based ALE meta-analysis of neuroimaging data: a random-effects "
    "approach based on empirical estimates of spatial uncertainty. Hum Brain "
    "Mapp 30:2907-2926.",
    "eickhoff2012": "Eickhoff SB, Bzdok D, Laird AR, Kurth F, Fox PT (2012). Activation "
    "likelihood estimation meta-analysis revisited. NeuroImage 59:2349-2361.",
    "eickhoff2016": "Eickhoff SB, Nichols TE, Laird AR, et al. (2016). Behavior, sensitivity, and "
    "power of activation likelihood estimation characterized by massive "
    "empirical simulation. NeuroImage 137:70-85.",
    "wager2007": "Wager TD, Lindquist M, Kaplan L (2007). Meta-analysis of functional "
    "neuroimaging data: current and future directions. Soc Cogn Affect Neurosci "
    "2:150-158.",
    "laird2005": "Laird AR, Fox PM, Price CJ, et al. (2005). ALE meta-analysis: controlling the "
    "false discovery rate and performing statistical contrasts. Hum Brain Mapp "
    "25:155-164.",
    "nichols2005": "Nichols T, Brett M, Andersson J, Wager T, Poline JB (2005). Valid conjunction "
    "inference with the minimum statistic. NeuroImage 25:653-660.",
    "lancaster2007": "Lancaster JL, Tordesillas-Gutierrez D, Martinez M, et al. (2007). Bias "
    "between MNI and Talairach coordinates analyzed using the ICBM-152 brain "
    "template. Hum Brain Mapp 28:1194-1205.",
    "salo2023": "Salo T, Yarkoni T, Nichols TE, et al. (2023). NiMARE: Neuroimaging "
    "Meta-Analysis Research Environment. Aperture Neuro 3:1-32.",
    "desikan2006": "Desikan RS, Segonne F, Fischl B, et al. (2006). An automated labeling system "
    "for subdividing the human cerebral cortex on MRI scans into gyral based "
    "regions of interest. NeuroImage 31:968-980 (Harvard-Oxford atlas).",
}

_LOG_NAMES = ("nimare", "nilearn", "arviz", "arviz.preview")


def _silence_import_logs() -> None:
    """NiMARE configures INFO logging on import and arviz (via PyMARE) logs at INFO while
    importing: keep both out of the user's terminal and logs."""
    for name in ("arviz", "arviz.preview", "nimare"):
        lg = logging.getLogger(name)
        if lg.level == logging.NOTSET or lg.level < logging.WARNING:
            lg.setLevel(logging.WARNING)


def _tqdm_to_progress(progress: Callable[[int, int], None] | None) -> Callable[..., Any]:
    """A stand-in for NiMARE's ``tqdm``: no bar of its own, reports to ``progress``."""

    def fake(iterable: Iterable[Any] | None = None, total: int | None = None, **_: Any) -> Any:
        if iterable is None:
            return contextlib.nullcontext()
        n = total if total is not None else (len(iterable) if isinstance(iterable, Sized) else 0)

        def gen() -> Iterator[Any]:
            for i, item in enumerate(iterable, start=1):
                yield item
                if progress is not None and n:
                    progress(i, n)

        return gen()

    return fake


_TQDM_MODULES = ("nimare.meta.cbma.base", "nimare.meta.cbma.ale", "nimare.meta.cbma.mkda")


@contextlib.contextmanager
def _quiet(progress: Callable[[int, int], None] | None = None) -> Iterator[None]:
    """Silence NiMARE's warnings, INFO logging and tqdm bars during a call.

    NiMARE's progress bars are replaced by calls to ``progress(done, total)`` (so the CLI
    shows one Rich bar, and logs get no raw tqdm output).
    """
    import importlib

    loggers = [logging.getLogger(n) for n in _LOG_NAMES]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    patched: list[tuple[Any, Any]] = []
    for modname in _TQDM_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:  # pragma: no cover - NiMARE layout changed
            continue
        if hasattr(mod, "tqdm"):
            patched.append((mod, mod.tqdm))
            mod.tqdm = _tqdm_to_progress(progress)  # type: ignore[attr-defined]
    # nilearn calls gc.collect() on every image it unmasks (once per permutation in
    # NiMARE's subtraction); with a large heap each call costs ~1 s
    try:
        with frozen_heap(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for mod, original in patched:
            mod.tqdm = original
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def brain_mask() -> nib.Nifti1Image:
    """NiMARE's packaged MNI152 2 mm brain mask, the analysis mask (no download)."""
    _silence_import_logs()
    from nimare.utils import get_template

    with _quiet():
        mask = get_template("mni152_2mm", mask="brain")
    return nib.Nifti1Image(np.asarray(mask.dataobj).astype(np.uint8), mask.affine)


def check_in_brain(
    coords: CoordinateTable, mask: nib.Nifti1Image, max_outside_mm: float = 15.0
) -> list[str]:
    """Fail on foci outside the brain; report foci just outside the mask.

    A focus farther than ``max_outside_mm`` from the nearest brain voxel of ``mask`` (or
    outside the template's field of view) is almost always a typo, a sign error or
    Talairach coordinates labelled MNI, and is an error.  Foci closer than that (common
    near the cortical surface and cerebellum) are kept: their kernels still reach brain
    voxels, as in GingerALE and NiMARE.

    Returns
    -------
    list of str
        Notes for the report.
    """
    data = np.asarray(mask.dataobj) > 0
    xyz = coords.foci[["x", "y", "z"]].to_numpy(dtype=float)
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(mask.affine), xyz)).astype(int)
    shape = np.array(data.shape)
    inside_fov = ((ijk >= 0) & (ijk < shape)).all(axis=1)
    zooms = np.abs(np.diag(mask.affine)[:3])
    dist = ndimage.distance_transform_edt(~data, sampling=zooms)
    d = np.full(len(xyz), np.inf)
    d[inside_fov] = dist[tuple(ijk[inside_fov].T)]
    bad = d > max_outside_mm
    if bad.any():
        rows = coords.foci.loc[bad]
        first = rows.iloc[0]
        where = first["row"] if isinstance(first["row"], str) else f"row {first['row']}"
        reported = (first["x_reported"], first["y_reported"], first["z_reported"])
        how_far = (
            "outside the MNI template's field of view"
            if not np.isfinite(d[bad][0])
            else f"{d[bad][0]:.0f} mm from the nearest brain voxel"
        )
        raise BrainmatchInputError(
            f"{where}: focus ({reported[0]:g}, {reported[1]:g}, {reported[2]:g}) "
            f"[{first['space']}] of experiment {first['experiment']!r} lies outside the brain "
            f"({how_far}); {int(bad.sum())} focus/foci are more than {max_outside_mm:g} mm "
            "outside. Check the signs, the column order and the space (MNI or TAL)",
            coords.source,
        )
    near = int(((d > 0) & ~bad).sum())
    if near:
        return [
            f"{near} focus/foci lie outside the brain mask but within {max_outside_mm:g} mm "
            "of it (kept; their kernels still reach brain voxels)"
        ]
    return []


def _dataset(coords: CoordinateTable) -> Any:
    from nimare.dataset import Dataset

    with _quiet():
        return Dataset(coords.to_nimare_dict(), target="mni152_2mm")


def _check_k(coords: CoordinateTable, minimum: int, what: str) -> None:
    k = coords.n_experiments
    if k < minimum:
        raise BrainmatchInputError(
            f"{what} needs at least {minimum} experiments, the input has {k} after selection "
            "(ALE tests for convergence across experiments; with fewer than about 17 the "
            "results are driven by single experiments, Eickhoff et al. 2016)",
            coords.source,
        )


@dataclass
class CBMAResult:
    """Outcome of one coordinate-based meta-analysis (a main effect, contrast or conjunction).

    Attributes
    ----------
    kind : {"main", "subtraction", "conjunction"}
    method : {"ale", "mkda"}
    name : str
        Label of the analysis (used in reports).
    maps : dict of str to nibabel.Nifti1Image
        ``stat`` (ALE or MKDA density; ALE difference for contrasts), ``z`` (uncorrected),
        ``logp_voxel_fwe``, ``logp_cluster_fwe`` (-log10 FWE p) and ``z_fwe_cluster``
        (``z`` inside clusters significant at cluster-level FWE, else 0).
    clusters : pandas.DataFrame
        Significant clusters (see :func:`cluster_table`).
    params : dict
        Method, iterations, thresholds, seed, counts.
    notes : list of str
        What was done to the input (conversions, selections, foci near the mask edge).
    description : str
        Methods paragraph.
    references : list of str
        Keys of :data:`REFERENCES` cited in ``description``.
    experiments : pandas.DataFrame
        One row per experiment used.
    foci : pandas.DataFrame
        Foci used (MNI), for figures.
    seconds : float
        Wall time of the analysis.
    warnings : list of str
        Cautions about the result (e.g. fewer than 17 experiments, Eickhoff et al. 2016).
    contributions : pandas.DataFrame
        Leave-one-experiment-out contribution of each experiment to each cluster
        (:func:`jackknife_table`); empty when there is no cluster.
    null : NullDistributions, optional
        Per-iteration maxima of the Monte Carlo null (main effects).
    """

    kind: str
    method: str
    name: str
    maps: dict[str, nib.Nifti1Image]
    clusters: pd.DataFrame
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    description: str = ""
    references: list[str] = field(default_factory=list)
    experiments: pd.DataFrame = field(default_factory=pd.DataFrame)
    foci: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    contributions: pd.DataFrame = field(default_factory=pd.DataFrame)
    null: Any = None

    @property
    def n_significant(self) -> int:
        """Number of significant clusters."""
        return len(self.clusters)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: parameters, counts, clusters, notes, methods text."""
        clusters = self.clusters.replace({np.nan: None}).to_dict(orient="records")
        return {
            "kind": self.kind,
            "name": self.name,
            "method": self.method,
            **self.params,
            "n_significant_clusters": self.n_significant,
            "clusters": clusters,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "contributions": self.contributions.to_dict(orient="records"),
            "description": self.description,
            "references": [REFERENCES[k] for k in self.references],
            "seconds": round(self.seconds, 2),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (as :meth:`summary`)."""
        return self.summary()

    def save(self, out_dir: str | Path) -> Path:
        """Write maps (NIfTI), ``clusters.tsv``, ``experiments.tsv`` and ``results.json``
        into ``out_dir`` (each file atomically; figures and ``report.html``:
        :func:`brainmatch.reports.cbma.write_report`)."""
        from brainmatch.evidence.cbma_outputs import save_result

        return save_result(self, Path(out_dir))

    def _repr_html_(self) -> str:
        from brainmatch.evidence.cbma_outputs import result_html

        return result_html(self)


class CoordinateMetaAnalysis:
    """ALE or MKDA meta-analysis of peak coordinates with Monte Carlo FWE correction.

    Parameters
    ----------
    method : {"ale", "mkda"}
        ALE (Eickhoff et al. 2012, sample-size-dependent Gaussian kernels) or MKDA
        density (Wager et al. 2007, 10 mm spheres, experiments weighted equally).
    iterations : int
        Monte Carlo iterations of the FWE correction (pyALE's published analyses use
        10000; GingerALE recommends at least 1000).
    voxel_thresh : float
        Cluster-forming threshold, uncorrected voxel p (default 0.001).
    alpha : float
        Cluster-level FWE threshold (clusters with ``p_fwe < alpha`` are reported).
    n_jobs : int
        Threads for the Monte Carlo iterations (``engine="brainmatch"``) or NiMARE's
        processes (``engine="nimare"``).
    random_state : int
        Seed of the random relocations (NiMARE's draws for this seed).
    max_outside_mm : float
        Foci farther than this from the brain mask are an input error.
    min_experiments : int
        Fewer experiments is an input error (2 at the very least).
    engine : {"brainmatch", "nimare"}
        Who computes the Monte Carlo null: brainmatch's compiled engine
        (:mod:`brainmatch.evidence.ale_engine`; same draws, same arithmetic, 10x or more
        faster) or NiMARE's ``FWECorrector`` (the reference).
    scheduler : str, optional
        Dask distributed scheduler address: the Monte Carlo iterations run there in chunks
        (``engine="brainmatch"`` only).
    jackknife : bool
        Add the leave-one-experiment-out contribution of every experiment to every
        significant cluster (:func:`jackknife_table`).

    Attributes
    ----------
    result_ : CBMAResult
        Set by :meth:`fit`.
    estimator_ : nimare estimator
        The fitted NiMARE estimator (observed maps and uncorrected null).
    null_ : brainmatch.evidence.ale_engine.NullDistributions
        Per-iteration maxima of the Monte Carlo null.
    """

    def __init__(
        self,
        method: str = "ale",
        iterations: int = 5000,
        voxel_thresh: float = 0.001,
        alpha: float = 0.05,
        n_jobs: int = 1,
        random_state: int = 0,
        max_outside_mm: float = 15.0,
        min_experiments: int = 2,
        engine: str = "brainmatch",
        scheduler: str | None = None,
        jackknife: bool = True,
    ) -> None:
        self.method = method
        self.iterations = iterations
        self.voxel_thresh = voxel_thresh
        self.alpha = alpha
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.max_outside_mm = max_outside_mm
        self.min_experiments = min_experiments
        self.engine = engine
        self.scheduler = scheduler
        self.jackknife = jackknife

    def _validate(self) -> None:
        if self.method not in METHODS:
            raise BrainmatchInputError(
                f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}"
            )
        if self.engine not in ENGINES:
            raise BrainmatchInputError(
                f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}"
            )
        if not (isinstance(self.iterations, int) and self.iterations >= 1):
            raise BrainmatchInputError(
                f"--iterations must be a positive whole number, got {self.iterations}"
            )
        for name, value in (("--voxel-thresh", self.voxel_thresh), ("--alpha", self.alpha)):
            if not 0 < value < 1:
                raise BrainmatchInputError(f"{name} must be between 0 and 1, got {value}")
        if self.min_experiments < 2:
            raise BrainmatchInputError("min_experiments must be at least 2")
        if not (isinstance(self.n_jobs, int) and self.n_jobs >= 1):
            raise BrainmatchInputError(f"--n-jobs must be at least 1, got {self.n_jobs}")

    def fit(
        self,
        coordinates: CoordinateTable,
        name: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CoordinateMetaAnalysis:
        """Run the meta-analysis and its FWE correction.

        Parameters
        ----------
        coordinates : CoordinateTable
            From :func:`brainmatch.evidence.cbma_io.read_coordinates`.
        name : str, optional
            Label of the analysis in reports (default: the file's stem).
        progress : callable, optional
            ``progress(done, total)`` over the Monte Carlo iterations.

        Returns
        -------
        self
        """
        _silence_import_logs()
        from nimare.meta.cbma import ALE, MKDADensity

        self._validate()
        _check_k(coordinates, self.min_experiments, "a meta-analysis")
        start = time.perf_counter()
        mask = brain_mask()
        notes = [*coordinates.notes, *check_in_brain(coordinates, mask, self.max_outside_mm)]
        warns = _few_experiments_warning(coordinates.n_experiments)
        dataset = _dataset(coordinates)
        cls = ALE if self.method == "ale" else MKDADensity
        with _quiet(progress):
            estimator = cls(null_method="approximate", random_state=self.random_state)
            result = estimator.fit(dataset)
            ss_thresh = float(estimator._p_to_summarystat(self.voxel_thresh))
            plan = None
            if self.engine == "brainmatch":
                from brainmatch.evidence.ale_engine import plan_from_estimator, run_null

                try:
                    plan = plan_from_estimator(estimator, ss_thresh)
                except ValueError as exc:  # a kernel or layout the engine does not handle
                    notes.append(f"Monte Carlo by NiMARE's FWECorrector ({exc})")
            engine_used = "nimare" if plan is None else "brainmatch"
            if plan is None:
                null = _nimare_null(estimator, result, self)
            else:
                null = run_null(
                    plan,
                    self.iterations,
                    self.random_state,
                    n_jobs=self.n_jobs,
                    scheduler=self.scheduler,
                    progress=progress,
                )
            stat = result.get_map("stat")
            observed: Any = None
            observed_ids: list[str] = []
            if plan is not None and plan.kind == "ale":
                # the observed ALE map from the engine's kernels (equal to NiMARE's)
                from brainmatch.evidence.ale_engine import ale_values, observed_ma

                observed, observed_ids = observed_ma(estimator, plan)
                stat = _unmask(ale_values(observed), estimator.masker.mask_img)
            z = result.get_map("z")
        self.estimator_ = estimator
        self.null_ = null
        logp_v, logp_c = fwe_maps(stat, ss_thresh, null)
        clusters, sig_mask = cluster_table(
            stat, z, logp_c, stat_threshold=ss_thresh, alpha=self.alpha
        )
        contributions = pd.DataFrame()
        if self.jackknife and len(clusters):
            labelled = _label_clusters(stat, ss_thresh, sig_mask)
            ma_rows = None
            if observed is not None:  # the engine's MA rows, in the estimator's id order
                where = {e: i for i, e in enumerate(observed_ids)}
                ma_rows = observed[[where[str(e)] for e in estimator.inputs_["id"]]]
            contributions = jackknife_table(estimator, clusters, labelled, ma=ma_rows)
        z_fwe = _masked(z, sig_mask)
        maps = {
            "stat": stat,
            "z": z,
            "logp_voxel_fwe": logp_v,
            "logp_cluster_fwe": logp_c,
            "z_fwe_cluster": z_fwe,
        }
        voxel_mm3 = float(abs(np.linalg.det(stat.affine[:3, :3])))
        params = {
            "n_experiments": coordinates.n_experiments,
            "n_foci": len(coordinates.foci),
            "n_subjects": coordinates.n_subjects,
            "iterations": self.iterations,
            "voxel_thresh": self.voxel_thresh,
            "alpha": self.alpha,
            "random_state": self.random_state,
            "engine": engine_used,
            "stat_threshold": ss_thresh,
            "cluster_size_threshold_mm3": float(np.quantile(null.max_size, 1 - self.alpha))
            * voxel_mm3,
            "source": str(coordinates.source),
            "software": _versions(),
        }
        refs = (
            ["eickhoff2009", "eickhoff2012", "turkeltaub2002"]
            if self.method == "ale"
            else ["wager2007"]
        )
        if any("Talairach" in n for n in coordinates.notes):
            refs.append("lancaster2007")
        if warns:
            refs.append("eickhoff2016")
        refs += ["salo2023", "desikan2006"]
        self.result_ = CBMAResult(
            kind="main",
            method=self.method,
            name=name or coordinates.source.stem,
            maps=maps,
            clusters=clusters,
            params=params,
            notes=notes,
            description=_describe_main(self, coordinates, params),
            references=refs,
            experiments=coordinates.experiments,
            foci=coordinates.foci[["experiment", "x", "y", "z"]].copy(),
            seconds=time.perf_counter() - start,
            warnings=warns,
            contributions=contributions,
            null=null,
        )
        return self


def _nimare_null(estimator: Any, result: Any, est: CoordinateMetaAnalysis) -> Any:
    """NiMARE's own Monte Carlo null (the reference engine), as NullDistributions."""
    from nimare.correct import FWECorrector

    from brainmatch.evidence.ale_engine import NullDistributions

    corrector = FWECorrector(
        method="montecarlo",
        voxel_thresh=est.voxel_thresh,
        n_iters=est.iterations,
        n_cores=est.n_jobs,
    )
    # the corrected result carries a copy of the estimator holding the null
    nd = corrector.transform(result).estimator.null_distributions_
    return NullDistributions(
        max_stat=np.asarray(nd["values_level-voxel_corr-fwe_method-montecarlo"], np.float32),
        max_size=np.asarray(
            nd["values_desc-size_level-cluster_corr-fwe_method-montecarlo"], np.float32
        ),
        max_mass=np.asarray(
            nd["values_desc-mass_level-cluster_corr-fwe_method-montecarlo"], np.float32
        ),
    )


def _few_experiments_warning(k: int) -> list[str]:
    if k >= MIN_RELIABLE_EXPERIMENTS:
        return []
    return [
        f"only {k} experiments: ALE needs about {MIN_RELIABLE_EXPERIMENTS} or more; with fewer, "
        "significant clusters are often driven by one or two experiments and results are "
        "unreliable (Eickhoff et al. 2016). Check the contribution table."
    ]


def _logp(p: np.ndarray) -> np.ndarray:
    """-log10(p) in float32, p clipped to the positive float32 range (as NiMARE)."""
    p32 = np.clip(np.asarray(p, dtype=np.float32), np.finfo(np.float32).tiny, np.float32(1))
    return np.asarray(-np.log10(p32), dtype=np.float32)


def fwe_maps(
    stat: nib.Nifti1Image, threshold: float, null: Any
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Voxel- and cluster-size-level FWE ``-log10(p)`` maps from a Monte Carlo null.

    The same computation as NiMARE's ``correct_fwe_montecarlo``: voxel p is the share of
    iterations whose maximum statistic reaches the voxel's; clusters are face-connected
    voxels with ``stat > threshold`` and a cluster's p is the share of iterations whose
    largest cluster is at least as large (``nimare.stats.null_to_p``, upper tail).

    Returns
    -------
    logp_voxel, logp_cluster : nibabel.Nifti1Image
    """
    from nimare.stats import null_to_p

    data = np.asarray(stat.dataobj, dtype=np.float32)
    mask = np.asarray(brain_mask().dataobj) > 0
    values = data[mask]
    p_vox = null_to_p(values, null.max_stat, tail="upper")
    vox = np.zeros(data.shape, dtype=np.float32)
    vox[mask] = _logp(p_vox)
    thresh = np.zeros(data.shape, dtype=np.float32)
    thresh[mask] = values
    thresh[thresh <= threshold] = 0
    conn = ndimage.generate_binary_structure(3, 1)
    labelled, _ = ndimage.label(thresh, conn)
    _, idx, sizes = np.unique(labelled, return_inverse=True, return_counts=True)
    sizes[0] = 0
    p_size = null_to_p(sizes, null.max_size, tail="upper")
    p_map = np.asarray(p_size)[np.reshape(idx, labelled.shape)]
    clu = np.zeros(data.shape, dtype=np.float32)
    clu[mask] = _logp(p_map[mask])
    return nib.Nifti1Image(vox, stat.affine), nib.Nifti1Image(clu, stat.affine)


def _label_clusters(stat: nib.Nifti1Image, threshold: float, keep: np.ndarray) -> np.ndarray:
    """Face-connected labels of the significant clusters (0 elsewhere)."""
    data = np.asarray(stat.dataobj, dtype=np.float32)
    labelled, _ = ndimage.label((data > threshold) & keep, ndimage.generate_binary_structure(3, 1))
    return np.asarray(labelled)


def jackknife_table(
    estimator: Any, clusters: pd.DataFrame, labelled: np.ndarray, ma: Any = None
) -> pd.DataFrame:
    """Leave-one-experiment-out contribution of each experiment to each cluster.

    As NiMARE's ``Jackknife``: for every experiment, the statistic is recomputed without
    it and the contribution to a cluster is the mean over the cluster's voxels of
    ``1 - stat_without / stat``; NiMARE's ``FocusCounter`` gives the number of the
    experiment's foci inside the cluster.  brainmatch recomputes the statistic only at the
    cluster voxels from the experiments' modelled-activation values, instead of refitting
    the whole analysis once per experiment.

    Parameters
    ----------
    estimator : fitted NiMARE ``ALE`` or ``MKDADensity``
    clusters : pandas.DataFrame
        From :func:`cluster_table`.
    labelled : ndarray of int
        Face-connected labels of the significant clusters.
    ma : scipy.sparse matrix, optional
        The experiments' MA rows in ``estimator.inputs_["id"]`` order (e.g. the engine's,
        :func:`brainmatch.evidence.ale_engine.observed_ma`); by default NiMARE's kernel
        transformer computes them.

    Returns
    -------
    pandas.DataFrame
        One row per (cluster, experiment) with ``cluster_id``, ``experiment``,
        ``contribution`` (share, 0-1), ``n_foci_in_cluster``; sorted by cluster and
        decreasing contribution.
    """
    from nimare.meta.kernel import ALEKernel

    masker = estimator.masker
    mask = np.asarray(masker.mask_img.dataobj) > 0
    coords = estimator.inputs_["coordinates"]
    ids = list(estimator.inputs_["id"])
    if ma is None:  # the experiments' MA rows (the engine's, when the caller has them)
        ma = estimator.kernel_transformer.transform(coords, masker=masker, return_type="sparse")
    ma = ma.tocsr()
    label_masked = labelled[mask]
    # cluster_table sorts by size; map each table row to its label through its peak voxel
    inv = np.linalg.inv(masker.mask_img.affine)
    rows: list[dict[str, Any]] = []
    ijk_foci = np.rint(
        nib.affines.apply_affine(inv, coords[["x", "y", "z"]].to_numpy(dtype=float))
    ).astype(int)
    focus_ids = coords["id"].to_numpy()
    is_ale = isinstance(estimator.kernel_transformer, ALEKernel)
    weights = None
    if not is_ale:
        wv = getattr(estimator, "weight_vec_", None)
        weights = np.ones(len(ids)) if wv is None else np.asarray(wv, dtype=np.float64).ravel()
    for row in clusters.itertuples():
        peak = np.rint(nib.affines.apply_affine(inv, [row.x, row.y, row.z])).astype(int)
        lab = int(labelled[tuple(peak)])
        if lab == 0:
            continue
        cols = np.flatnonzero(label_masked == lab)
        vals = ma[:, cols].toarray().astype(np.float64)
        if is_ale:
            logs = np.log1p(-vals)
            total = logs.sum(axis=0)
            full = 1.0 - np.exp(total)
            without = 1.0 - np.exp(total[None, :] - logs)
        else:
            assert weights is not None
            full = (weights[:, None] * vals).sum(axis=0)
            n = len(ids)
            # NiMARE renormalises the weights to sum to the number of experiments kept
            scale = (n - 1) / np.maximum(n - weights, 1e-12)
            without = (full[None, :] - weights[:, None] * vals) * scale[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            prop = np.nan_to_num(without / full[None, :])
        contrib = (1.0 - prop).mean(axis=1)
        in_cluster = labelled[tuple(np.clip(ijk_foci, 0, np.array(labelled.shape) - 1).T)] == lab
        for e, exp_id in enumerate(ids):
            n_in = int((in_cluster & (focus_ids == exp_id)).sum())
            rows.append(
                {
                    "cluster_id": int(row.cluster_id),
                    "experiment": str(exp_id).rsplit("-", 1)[0],
                    "contribution": float(contrib[e]),
                    "n_foci_in_cluster": n_in,
                }
            )
    table = pd.DataFrame(
        rows, columns=["cluster_id", "experiment", "contribution", "n_foci_in_cluster"]
    )
    return table.sort_values(
        ["cluster_id", "contribution"], ascending=[True, False], kind="stable"
    ).reset_index(drop=True)


def run_cbma(
    coordinates: str | Path,
    out_dir: str | Path | None = None,
    *,
    select: list[str] | None = None,
    method: str = "ale",
    iterations: int = 5000,
    voxel_thresh: float = 0.001,
    alpha: float = 0.05,
    n_jobs: int = 1,
    random_state: int = 0,
    name: str | None = None,
    engine: str = "brainmatch",
    progress: Callable[[int, int], None] | None = None,
) -> CBMAResult:
    """Read a coordinate file, run the meta-analysis and (optionally) write every output.

    The one call ``brainmatch demo`` needs, e.g. on NiMARE's packaged
    ``nidm_pain_dset.json`` with ``iterations=100``.

    Parameters
    ----------
    coordinates : str or Path
        Any format :func:`~brainmatch.evidence.cbma_io.read_coordinates` reads.
    out_dir : str or Path, optional
        Where to write maps, ``clusters.tsv`` and ``results.json`` (the report:
        :func:`brainmatch.reports.write_report`).
    select : list of str, optional
        ``COLUMN=VALUE`` row selections.
    method, iterations, voxel_thresh, alpha, n_jobs, random_state, engine
        As :class:`CoordinateMetaAnalysis`.
    name : str, optional
        Label of the analysis.
    progress : callable, optional
        ``progress(done, total)`` over the Monte Carlo iterations.

    Returns
    -------
    CBMAResult
    """
    from brainmatch.evidence.cbma_io import read_coordinates

    table = read_coordinates(coordinates, select=select)
    est = CoordinateMetaAnalysis(
        method=method,
        iterations=iterations,
        voxel_thresh=voxel_thresh,
        alpha=alpha,
        n_jobs=n_jobs,
        random_state=random_state,
        engine=engine,
    )
    result = est.fit(table, name=name, progress=progress).result_
    if out_dir is not None:
        result.save(out_dir)
    return result


def _versions() -> dict[str, str]:
    import nilearn
    import nimare

    from brainmatch import __version__

    return {"brainmatch": __version__, "nimare": nimare.__version__, "nilearn": nilearn.__version__}


def _unmask(values: np.ndarray, mask_img: Any) -> nib.Nifti1Image:
    """A float32 image holding masked ``values`` (C order) in the mask, 0 elsewhere."""
    inside = np.asarray(mask_img.dataobj) > 0
    data = np.zeros(inside.shape, dtype=np.float32)
    data[inside] = values
    return nib.Nifti1Image(data, mask_img.affine)


def _masked(img: nib.Nifti1Image, keep: np.ndarray) -> nib.Nifti1Image:
    data = np.asarray(img.dataobj, dtype=np.float32) * keep
    return nib.Nifti1Image(data.astype(np.float32), img.affine)


# --------------------------------------------------------------------------- clusters


_ATLAS_CACHE: dict[tuple[Any, ...], tuple[np.ndarray, dict[int, str], np.ndarray | None]] = {}


def _atlas_arrays(
    shape: tuple[int, int, int], affine: np.ndarray
) -> tuple[np.ndarray, dict[int, str], np.ndarray | None]:
    """Harvard-Oxford labels and the binarised affect-network mask on the analysis grid
    (resampled once per grid and process: a ``--versus`` run labels four analyses)."""
    key = (tuple(shape), np.asarray(affine, dtype=float).round(6).tobytes())
    if key not in _ATLAS_CACHE:
        _ATLAS_CACHE[key] = _load_atlas_arrays(shape, affine)
    return _ATLAS_CACHE[key]


def _load_atlas_arrays(
    shape: tuple[int, int, int], affine: np.ndarray
) -> tuple[np.ndarray, dict[int, str], np.ndarray | None]:
    from brainmatch import atlases

    loader = getattr(atlases, "load_atlas", None)
    ho = loader("harvard-oxford") if loader else atlases.load_shipped_atlas("harvard-oxford")
    resample = getattr(atlases, "resample_atlas", None)
    if resample is not None:
        ho_data = resample(ho, shape, affine)
    else:
        ho_data = np.asarray(atlases.resample_labels(ho.image, shape, affine).dataobj)
    names = {int(i): str(n) for i, n in zip(ho.labels["index"], ho.labels["name"], strict=True)}
    affect: np.ndarray | None = None
    if loader is not None:
        try:
            aff_atlas = loader("affect")
        except BrainmatchInputError:
            aff_atlas = None
        if aff_atlas is not None:
            aff = (
                resample(aff_atlas, shape, affine)
                if resample is not None
                else np.asarray(atlases.resample_labels(aff_atlas.image, shape, affine).dataobj)
            )
            affect = np.asarray(aff) > 0
    return np.asarray(ho_data), names, affect


def _regions(labels: np.ndarray, names: dict[int, str], top: int = 3) -> str:
    """The cluster's share per Harvard-Oxford region, largest first."""
    values, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts)
    parts = []
    for idx in order[:top]:
        name = names.get(int(values[idx]), "unlabelled") if values[idx] else "unlabelled"
        parts.append(f"{name} {100 * counts[idx] / labels.size:.0f}%")
    return "; ".join(parts)


def cluster_table(
    stat: nib.Nifti1Image,
    z: nib.Nifti1Image,
    logp_cluster: nib.Nifti1Image | None,
    *,
    stat_threshold: float | None = None,
    z_threshold: float | None = None,
    alpha: float = 0.05,
    two_sided: bool = False,
    min_voxels: int = 1,
    significant_only_from_map: bool = False,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Clusters of supra-threshold voxels, with peak, size, FWE p, label and affect overlap.

    Clusters are face-connected components (as NiMARE forms them) of voxels with
    ``stat > stat_threshold`` (or ``|z| > z_threshold``).  When ``logp_cluster`` is
    given, only clusters with cluster-level FWE ``p < alpha`` are kept.  With
    ``significant_only_from_map``, clusters are instead the components of the voxels
    whose ``logp_cluster`` passes ``alpha`` (the estimator's own cluster definition),
    split by the sign of ``z`` when ``two_sided``; ``p_fwe`` is their smallest p.

    Returns
    -------
    clusters : pandas.DataFrame
        Columns ``cluster_id``, ``x``, ``y``, ``z`` (peak, MNI mm), ``volume_mm3``,
        ``n_voxels``, ``peak_stat``, ``peak_z``, ``p_fwe`` (cluster-level FWE p, empty when
        not computed), ``label`` (Harvard-Oxford region at the peak, or the cluster's
        largest region when the peak is unlabelled), ``regions`` (the three largest
        shares) and ``affect_overlap`` (share of the cluster's voxels inside the affect
        network), sorted by size; ``direction`` (``+`` / ``-``) for two-sided maps.
    keep : ndarray of bool
        Voxels of the kept clusters.
    """
    stat_arr = np.asarray(stat.dataobj, dtype=float)
    z_arr = np.asarray(z.dataobj, dtype=float)
    logp = None if logp_cluster is None else np.asarray(logp_cluster.dataobj, dtype=float)
    shape = stat_arr.shape[:3]
    conn = ndimage.generate_binary_structure(3, 1)
    signs = [1.0, -1.0] if two_sided else [1.0]
    rows: list[dict[str, Any]] = []
    keep = np.zeros(shape, dtype=bool)
    ho, names, affect = _atlas_arrays((shape[0], shape[1], shape[2]), stat.affine)
    voxel_mm3 = float(abs(np.linalg.det(stat.affine[:3, :3])))
    for sign in signs:
        if significant_only_from_map:
            if logp is None:
                raise ValueError("significant_only_from_map needs logp_cluster")
            supra = (logp > -np.log10(alpha)) & (sign * z_arr > 0)
        elif stat_threshold is not None and not two_sided:
            supra = stat_arr > stat_threshold
        elif z_threshold is not None:
            supra = sign * z_arr > z_threshold
        else:
            raise ValueError("give stat_threshold (one-sided) or z_threshold")
        labelled, n = ndimage.label(supra, conn)
        sizes = np.bincount(labelled.ravel(), minlength=n + 1)
        for cid, box in enumerate(ndimage.find_objects(labelled), start=1):
            if box is None or sizes[cid] < min_voxels:
                continue
            sub = labelled[box] == cid
            size = int(sizes[cid])
            p_fwe = math.nan
            if logp is not None:
                values = logp[box][sub]
                p_fwe = float(
                    10 ** -(values.max() if significant_only_from_map else np.median(values))
                )
                if not p_fwe < alpha:
                    continue
            offset = np.array([sl.start for sl in box])
            idx = np.argwhere(sub) + offset
            score = sign * stat_arr[box][sub] if two_sided else stat_arr[box][sub]
            peak = idx[int(np.argmax(score))]
            xyz = nib.affines.apply_affine(stat.affine, peak)
            peak_label = int(ho[tuple(peak)])
            labels_in = ho[box][sub]
            if peak_label:
                label = names.get(peak_label, str(peak_label))
            else:
                nonzero = labels_in[labels_in > 0]
                label = (
                    "unlabelled (white matter or outside the atlas)"
                    if nonzero.size == 0
                    else "near " + names.get(int(np.bincount(nonzero).argmax()), "?")
                )
            row: dict[str, Any] = {
                "x": float(xyz[0]),
                "y": float(xyz[1]),
                "z": float(xyz[2]),
                "volume_mm3": size * voxel_mm3,
                "n_voxels": size,
                "peak_stat": float(stat_arr[tuple(peak)]),
                "peak_z": float(z_arr[tuple(peak)]),
                "p_fwe": p_fwe,
                "label": label,
                "regions": _regions(labels_in, names),
                "affect_overlap": (
                    float(affect[box][sub].mean()) if affect is not None else math.nan
                ),
            }
            if two_sided:
                row["direction"] = "+" if sign > 0 else "-"
            rows.append(row)
            keep[box] |= sub
    columns = [
        "cluster_id",
        "x",
        "y",
        "z",
        "volume_mm3",
        "n_voxels",
        "peak_stat",
        "peak_z",
        "p_fwe",
        "label",
        "regions",
        "affect_overlap",
    ] + (["direction"] if two_sided else [])
    table = pd.DataFrame(rows, columns=[c for c in columns if c != "cluster_id"])
    table = table.sort_values("n_voxels", ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "cluster_id", np.arange(1, len(table) + 1))
    return table, keep


# --------------------------------------------------------------------------- two sets


def subtract(
    a: CoordinateTable,
    b: CoordinateTable,
    *,
    name_a: str = "A",
    name_b: str = "B",
    iterations: int = 5000,
    voxel_thresh: float = 0.001,
    alpha: float = 0.05,
    n_jobs: int = 1,
    random_state: int = 0,
    max_outside_mm: float = 15.0,
    min_experiments: int = 2,
    engine: str = "brainmatch",
    progress: Callable[[int, int], None] | None = None,
) -> CBMAResult:
    """ALE subtraction (contrast) of two sets of experiments, with cluster-level FWE.

    As NiMARE's ``ALESubtraction``: the group labels of the experiments are permuted
    ``iterations`` times; the ALE difference map gets a two-sided permutation p.  Voxels
    whose absolute difference exceeds the ``1 - voxel_thresh`` quantile of all permuted
    absolute differences form clusters, each tested against the null of the largest
    permutation cluster (cluster-level FWE, ``p_fwe``).  Unlike GingerALE, NiMARE tests
    every voxel of the mask, not only those significant in a main effect.

    ``engine="brainmatch"`` (default) runs the permutations on
    :mod:`brainmatch.evidence.ale_subtraction` (NiMARE's permutations for the seed, its
    maps to the bit, a fraction of its time and memory); ``engine="nimare"`` runs
    NiMARE's ``ALESubtraction`` and ``FWECorrector``.

    Returns
    -------
    CBMAResult
        ``kind="subtraction"``; ``clusters`` has ``direction`` ``+`` (``A > B``) or
        ``-`` (``B > A``); ``maps["z"]`` is positive where ``A > B``.
    """
    from nimare.correct import FWECorrector
    from nimare.meta.cbma import ALESubtraction

    if engine not in ENGINES:
        raise BrainmatchInputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    for coords, label in ((a, name_a), (b, name_b)):
        _check_k(coords, min_experiments, f"the contrast set {label!r}")
    if not (isinstance(iterations, int) and iterations >= 1):
        raise BrainmatchInputError(
            f"--iterations must be a positive whole number, got {iterations}"
        )
    start = time.perf_counter()
    mask = brain_mask()
    notes = [f"{name_a}: {n}" for n in a.notes] + [f"{name_b}: {n}" for n in b.notes]
    notes += check_in_brain(a, mask, max_outside_mm) + check_in_brain(b, mask, max_outside_mm)
    shared = sorted(set(a.foci["experiment"]) & set(b.foci["experiment"]))
    same = [e for e in shared if _foci_set(a, e) == _foci_set(b, e)]
    if same:
        raise BrainmatchInputError(
            f"the two sets share {len(same)} experiment(s) with identical foci (e.g. "
            f"{same[0]!r}); a subtraction needs disjoint sets - select them apart",
            a.source,
        )
    studies_a = {_study_name(e) for e in a.foci["experiment"]}
    studies_b = {_study_name(e) for e in b.foci["experiment"]}
    overlap = (studies_a & studies_b) - set(shared)
    if overlap:
        notes.append(
            f"{len(overlap)} stud(ies) contribute experiments to both sets (e.g. "
            f"{sorted(overlap)[0]!r}); the permutation test treats them as independent, as "
            "pyALE and NiMARE do, although they share subjects"
        )
    if shared:
        notes.append(
            f"{len(shared)} experiment name(s) appear in both sets with different foci "
            "(e.g. two contrasts of one study); they were analysed as separate experiments, "
            "as pyALE does, although they share subjects"
        )
        a = CoordinateTable(
            a.foci.assign(experiment=name_a + ": " + a.foci["experiment"]), a.source, list(a.notes)
        )
        b = CoordinateTable(
            b.foci.assign(experiment=name_b + ": " + b.foci["experiment"]), b.source, list(b.notes)
        )
    threshold: float | None = None
    if engine == "nimare":
        with _quiet(progress):
            estimator = ALESubtraction(
                n_iters=iterations,
                voxel_thresh=voxel_thresh,
                vfwe_only=False,
                n_cores=n_jobs,
                random_state=random_state,
            )
            result = estimator.fit(_dataset(a), _dataset(b))
            corrected = FWECorrector(
                method="montecarlo", n_iters=iterations, voxel_thresh=voxel_thresh, n_cores=n_jobs
            ).transform(result)
            # reading the maps unmasks images: nilearn collects garbage per image
            stat = corrected.get_map("stat_desc-group1MinusGroup2")
            z = corrected.get_map("z_desc-group1MinusGroup2")
            names = list(corrected.maps)
            cluster_key = next(
                (k for k in names if k.startswith("logp_desc-group1MinusGroup2Size")), None
            )
            voxel_key = next(
                (k for k in names if k.startswith("logp_desc-group1MinusGroup2_level-voxel")), None
            )
            logp_c = corrected.get_map(cluster_key) if cluster_key else None
            logp_v = corrected.get_map(voxel_key) if voxel_key else None
            nd = estimator.null_distributions_
            key = "summary_stat_thresh_level-voxel_corr-fwe_method-montecarlo"
            threshold = float(nd[key]) if key in nd else None
    else:
        from brainmatch.evidence.ale_subtraction import (
            run_subtraction,
            subtraction_maps,
            subtraction_plan,
        )

        ma1, mask3d = _observed_ma(a)
        ma2, _ = _observed_ma(b)
        plan = subtraction_plan(ma1, ma2, mask3d)
        null = run_subtraction(
            plan,
            iterations,
            random_state,
            voxel_thresh=voxel_thresh,
            n_jobs=n_jobs,
            progress=progress,
        )
        arrays = subtraction_maps(plan, null)
        threshold = null.threshold

        def image(values: np.ndarray) -> nib.Nifti1Image:
            grid = np.zeros(mask3d.size, dtype=np.float32)
            grid[plan.mask_flat] = values
            return nib.Nifti1Image(grid.reshape(mask3d.shape), mask.affine)

        stat, z = image(arrays["stat"]), image(arrays["z"])
        logp_c, logp_v = image(arrays["logp_cluster_fwe"]), image(arrays["logp_voxel_fwe"])
    from scipy import stats as sstats

    z_thr = float(sstats.norm.isf(voxel_thresh / 2))
    if logp_c is not None:
        clusters, keep = cluster_table(
            stat, z, logp_c, alpha=alpha, two_sided=True, significant_only_from_map=True
        )
    else:
        clusters, keep = cluster_table(stat, z, None, z_threshold=z_thr, two_sided=True)
    maps = {"stat": stat, "z": z, "z_fwe_cluster": _masked(z, keep)}
    if logp_c is not None:
        maps["logp_cluster_fwe"] = logp_c
    if logp_v is not None:
        maps["logp_voxel_fwe"] = logp_v
    params = {
        "sets": {
            name_a: {
                "n_experiments": a.n_experiments,
                "n_foci": len(a.foci),
                "n_subjects": a.n_subjects,
                "source": str(a.source),
            },
            name_b: {
                "n_experiments": b.n_experiments,
                "n_foci": len(b.foci),
                "n_subjects": b.n_subjects,
                "source": str(b.source),
            },
        },
        "iterations": iterations,
        "voxel_thresh": voxel_thresh,
        "alpha": alpha,
        "random_state": random_state,
        "engine": engine,
        "z_threshold": z_thr,
        "cluster_forming_threshold": threshold,
        "software": _versions(),
    }
    description = (
        f"The two sets of experiments ({name_a}: {a.n_experiments} experiments, "
        f"{len(a.foci)} foci; {name_b}: {b.n_experiments} experiments, {len(b.foci)} foci) were "
        "contrasted by ALE subtraction (Laird et al. 2005; Eickhoff et al. 2012) as NiMARE "
        f"{_versions()['nimare']}'s ALESubtraction defines it (Salo et al. 2023): the "
        f"experiments' group labels were permuted {iterations} times (seed {random_state}) to "
        "obtain a two-sided p-value for the ALE difference at every voxel of the MNI152 2 mm "
        "brain mask. Clusters were formed from voxels whose absolute ALE difference exceeded "
        f"the {1 - voxel_thresh:g} quantile of all permuted absolute differences (face "
        "connectivity, positive and negative differences apart), each tested against the "
        "distribution of the largest permutation cluster (cluster-level family-wise error, "
        f"alpha = {alpha}). "
        + (
            "The permutations were computed by brainmatch's compiled engine, which draws "
            "NiMARE's permutations for this seed and reproduces its null distributions."
            if engine == "brainmatch"
            else "The permutations were computed by NiMARE."
        )
    )
    exps = pd.concat(
        [a.experiments.assign(set=name_a), b.experiments.assign(set=name_b)], ignore_index=True
    )
    foci = pd.concat(
        [
            a.foci[["experiment", "x", "y", "z"]].assign(set=name_a),
            b.foci[["experiment", "x", "y", "z"]].assign(set=name_b),
        ],
        ignore_index=True,
    )
    return CBMAResult(
        kind="subtraction",
        method="ale",
        name=f"{name_a} - {name_b}",
        maps=maps,
        clusters=clusters,
        params=params,
        notes=notes,
        description=description,
        references=["laird2005", "eickhoff2012", "salo2023", "desikan2006"],
        experiments=exps,
        foci=foci,
        seconds=time.perf_counter() - start,
        warnings=[
            f"{label}: {w}"
            for t, label in ((a, name_a), (b, name_b))
            for w in _few_experiments_warning(t.n_experiments)
        ],
    )


def _observed_ma(table: CoordinateTable) -> tuple[Any, np.ndarray]:
    """One set's modelled-activation rows (NiMARE's experiment order) and the mask."""
    from nimare.meta.cbma import ALE

    from brainmatch.evidence.ale_engine import observed_ma, plan_from_estimator

    with _quiet():
        estimator = ALE(null_method="approximate")
        estimator.fit(_dataset(table))
    plan = plan_from_estimator(estimator, 0.5)
    ma, _ = observed_ma(estimator, plan)
    return ma, np.asarray(estimator.masker.mask_img.dataobj) > 0


def _study_name(experiment: str) -> str:
    """The study part of an experiment id (without `` [tag]`` or `` #n`` suffixes)."""
    return re.sub(r"( \[[^\]]*\]| #\d+)+$", "", str(experiment))


def _foci_set(table: CoordinateTable, experiment: str) -> set[tuple[float, float, float]]:
    rows = table.foci.loc[table.foci["experiment"] == experiment, ["x", "y", "z"]]
    return {(round(x, 3), round(y, 3), round(z, 3)) for x, y, z in rows.to_numpy()}


def conjunction(a: CBMAResult, b: CBMAResult) -> CBMAResult:
    """Voxels significant in both main effects: the minimum statistic (Nichols et al. 2005).

    Both results must be main effects on the same grid; a voxel counts when it lies in
    a cluster significant at cluster-level FWE in each.  The map holds the smaller of the
    two statistics (ALE or MKDA density); the cluster table has no FWE p of its own.
    """
    if a.kind != "main" or b.kind != "main":
        raise BrainmatchInputError("a conjunction combines two main-effect analyses")
    sa, sb = a.maps["stat"], b.maps["stat"]
    if sa.shape != sb.shape or not np.allclose(sa.affine, sb.affine):
        raise BrainmatchInputError("the two analyses are on different grids")
    in_a = np.asarray(a.maps["z_fwe_cluster"].dataobj) > 0
    in_b = np.asarray(b.maps["z_fwe_cluster"].dataobj) > 0
    both = in_a & in_b
    stat = (
        np.minimum(
            np.asarray(sa.dataobj, dtype=np.float32), np.asarray(sb.dataobj, dtype=np.float32)
        )
        * both
    )
    za = np.asarray(a.maps["z"].dataobj, dtype=np.float32)
    zb = np.asarray(b.maps["z"].dataobj, dtype=np.float32)
    zmin = np.minimum(za, zb) * both
    stat_img = nib.Nifti1Image(stat.astype(np.float32), sa.affine)
    z_img = nib.Nifti1Image(zmin.astype(np.float32), sa.affine)
    clusters, _ = cluster_table(stat_img, z_img, None, stat_threshold=0.0)
    params = {"analyses": [a.name, b.name], "software": _versions()}
    description = (
        f"The conjunction of {a.name} and {b.name} is the set of voxels inside clusters "
        "significant at cluster-level FWE in both analyses, with the voxel-wise minimum of "
        "the two statistics (minimum-statistic conjunction against the conjunction null, "
        "Nichols et al. 2005)."
    )
    return CBMAResult(
        kind="conjunction",
        method=a.method,
        name=f"{a.name} & {b.name}",
        maps={"stat": stat_img, "z": z_img, "z_fwe_cluster": z_img},
        clusters=clusters,
        params=params,
        notes=[],
        description=description,
        references=["nichols2005", "desikan2006"],
        experiments=pd.concat(
            [a.experiments.assign(set=a.name), b.experiments.assign(set=b.name)], ignore_index=True
        ),
        foci=pd.concat([a.foci.assign(set=a.name), b.foci.assign(set=b.name)], ignore_index=True),
    )


@dataclass
class CBMAComparison:
    """Two sets of experiments compared: both main effects, the contrast and the conjunction.

    Attributes
    ----------
    a, b : CBMAResult
        Main effects of the two sets.
    contrast : CBMAResult
        ALE subtraction ``a - b`` (two-sided, cluster-level FWE).
    conjunction : CBMAResult
        Voxels significant in both main effects (minimum statistic).
    """

    a: CBMAResult
    b: CBMAResult
    contrast: CBMAResult
    conjunction: CBMAResult

    @property
    def results(self) -> dict[str, CBMAResult]:
        """The four analyses by file prefix (``A``, ``B``, ``contrast``, ``conjunction``)."""
        return {
            "A": self.a,
            "B": self.b,
            "contrast": self.contrast,
            "conjunction": self.conjunction,
        }

    @property
    def warnings(self) -> list[str]:
        """Warnings of the four analyses, each prefixed by its name."""
        out: list[str] = []
        for r in self.results.values():
            out += [f"{r.name}: {w}" for w in r.warnings]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summaries of the four analyses."""
        return {k: r.summary() for k, r in self.results.items()}

    def save(self, out_dir: str | Path) -> Path:
        """Write every analysis (files prefixed ``A_``, ``B_``, ``contrast_``,
        ``conjunction_``) and one ``results.json`` (figures and ``report.html``:
        :func:`brainmatch.reports.cbma.write_comparison_report`)."""
        from brainmatch.evidence.cbma_outputs import save_comparison

        return save_comparison(self.results, Path(out_dir))

    def _repr_html_(self) -> str:
        from brainmatch.evidence.cbma_outputs import result_html

        return "".join(result_html(r) for r in self.results.values())


def compare(
    a: CoordinateTable,
    b: CoordinateTable,
    *,
    name_a: str = "A",
    name_b: str = "B",
    method: str = "ale",
    iterations: int = 5000,
    voxel_thresh: float = 0.001,
    alpha: float = 0.05,
    n_jobs: int = 1,
    random_state: int = 0,
    max_outside_mm: float = 15.0,
    engine: str = "brainmatch",
    scheduler: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> CBMAComparison:
    """Compare two sets of experiments: both main effects, their subtraction, conjunction.

    Parameters
    ----------
    a, b : CoordinateTable
        The two sets (e.g. ``read_coordinates(path, select=["group=therapy"])``).
    name_a, name_b : str
        Labels (the second gets `` (2)`` appended when both are equal).
    method : {"ale"}
        Subtraction is defined for ALE only.
    iterations, voxel_thresh, alpha, n_jobs, random_state, max_outside_mm, engine, scheduler
        As :class:`CoordinateMetaAnalysis` (``iterations`` is also the number of label
        permutations of the subtraction).
    progress : callable, optional
        ``progress(step, done, total)``, ``step`` naming the analysis running.

    Returns
    -------
    CBMAComparison
    """
    if method != "ale":
        raise BrainmatchInputError(
            "--versus (subtraction) is implemented for ALE (NiMARE's ALESubtraction); "
            "use --method ale"
        )
    if name_a == name_b:
        name_b = f"{name_b} (2)"

    def step(label: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(label, done, total)

    def main(table: CoordinateTable, label: str) -> CBMAResult:
        est = CoordinateMetaAnalysis(
            method=method,
            iterations=iterations,
            voxel_thresh=voxel_thresh,
            alpha=alpha,
            n_jobs=n_jobs,
            random_state=random_state,
            max_outside_mm=max_outside_mm,
            engine=engine,
            scheduler=scheduler,
        )
        return est.fit(table, name=label, progress=step(f"{label}: Monte Carlo")).result_

    res_a = main(a, name_a)
    res_b = main(b, name_b)
    contrast = subtract(
        a,
        b,
        name_a=name_a,
        name_b=name_b,
        iterations=iterations,
        voxel_thresh=voxel_thresh,
        alpha=alpha,
        n_jobs=n_jobs,
        random_state=random_state,
        max_outside_mm=max_outside_mm,
        engine=engine,
        progress=step(f"{name_a} - {name_b}: permutations"),
    )
    return CBMAComparison(res_a, res_b, contrast, conjunction(res_a, res_b))


def _describe_main(
    est: CoordinateMetaAnalysis, coords: CoordinateTable, params: dict[str, Any]
) -> str:
    if est.method == "ale":
        model = (
            "activation likelihood estimation (ALE; Turkeltaub et al. 2002) with the "
            "random-effects, sample-size-dependent Gaussian kernels of Eickhoff et al. "
            "(2009, 2012)"
        )
    else:
        model = (
            "multilevel kernel density analysis (MKDA; Wager et al. 2007) with 10 mm "
            "spherical kernels"
        )
    engine_text = (
        "computed by brainmatch's compiled engine, which draws NiMARE's relocations for this "
        "seed and reproduces NiMARE's null distributions"
        if params.get("engine", "brainmatch") == "brainmatch"
        else "computed by NiMARE's FWECorrector"
    )
    tal = [n for n in coords.notes if "Talairach" in n]
    tal_text = (" " + tal[0][0].upper() + tal[0][1:] + " (Lancaster et al. 2007).") if tal else ""
    return (
        f"We performed a coordinate-based meta-analysis of {params['n_experiments']} experiments "
        f"({params['n_foci']} foci, {params['n_subjects']:g} subjects) using {model}, as "
        f"implemented in NiMARE {params['software']['nimare']} (Salo et al. 2023) and run by "
        f"brainmatch {params['software']['brainmatch']}.{tal_text} Modeled activation maps were "
        "computed in the MNI152 2 mm brain mask; uncorrected p-values came from the approximate "
        "(histogram) null. Family-wise error was controlled by a Monte Carlo procedure with "
        f"{params['iterations']} iterations, each relocating every focus at random within the "
        f"mask (seed {params['random_state']}; {engine_text}): clusters were formed from "
        f"voxels with uncorrected p < {params['voxel_thresh']} (face connectivity) and kept "
        "when larger "
        f"than expected by chance (cluster-level FWE p < {params['alpha']}; critical size "
        f"{params['cluster_size_threshold_mm3']:.0f} mm3). Clusters were labelled with the "
        "Harvard-Oxford atlas (maximum probability, 25 % threshold; Desikan et al. 2006) at "
        "the peak, and their overlap with brainmatch's affect-network mask was computed."
    )
