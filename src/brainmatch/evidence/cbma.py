"""Coordinate-based meta-analysis of brain change (``brainmatch cbma``), with NiMARE.

The statistics are NiMARE's: activation likelihood estimation (ALE; Turkeltaub et al.
2002, Eickhoff et al. 2009, 2012) or multilevel kernel density analysis (MKDA; Wager et
al. 2007), the approximate null for uncorrected p, and Monte Carlo family-wise error
correction (random relocation of every focus inside the mask, ``iterations`` times) at
the voxel level and at the cluster level with a cluster-forming threshold of p < 0.001,
as GingerALE and pyALE use.  Contrasts of two sets of experiments use NiMARE's
``ALESubtraction`` (label permutation; Laird et al. 2005, Eickhoff et al. 2012) with
cluster-level FWE; conjunctions are the minimum statistic over voxels significant in
both sets (Nichols et al. 2005).

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
import gc
import logging
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.cbma_io import CoordinateTable

METHODS = ("ale", "mkda")

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

_LOG_NAMES = ("nimare", "nilearn")
_FREEZE_DEPTH = [0]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence NiMARE's deprecation warnings and INFO logging during a call."""
    loggers = [logging.getLogger(n) for n in _LOG_NAMES]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    # nilearn calls gc.collect() on every image it unmasks (once per permutation in
    # NiMARE's subtraction); with a large heap each call costs ~1 s.  Freezing the
    # objects alive now makes those collections scan only new objects.
    _FREEZE_DEPTH[0] += 1
    if _FREEZE_DEPTH[0] == 1:
        gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        _FREEZE_DEPTH[0] -= 1
        if _FREEZE_DEPTH[0] == 0:
            gc.unfreeze()
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def brain_mask() -> nib.Nifti1Image:
    """NiMARE's packaged MNI152 2 mm brain mask, the analysis mask (no download)."""
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
            "description": self.description,
            "references": [REFERENCES[k] for k in self.references],
            "seconds": round(self.seconds, 2),
        }

    def save(self, out_dir: str | Path, *, report: bool = True) -> Path:
        """Write maps (NIfTI), ``clusters.tsv``, ``experiments.tsv``, ``results.json`` and
        ``report.html`` into ``out_dir`` (each file atomically)."""
        from brainmatch.evidence.cbma_report import save_result

        return save_result(self, Path(out_dir), report=report)


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
        Processes for the Monte Carlo iterations.
    random_state : int
        Seed of the random relocations.
    max_outside_mm : float
        Foci farther than this from the brain mask are an input error.
    min_experiments : int
        Fewer experiments is an input error (2 at the very least).

    Attributes
    ----------
    result_ : CBMAResult
        Set by :meth:`fit`.
    estimator_ : nimare estimator
        The fitted NiMARE estimator.
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
    ) -> None:
        self.method = method
        self.iterations = iterations
        self.voxel_thresh = voxel_thresh
        self.alpha = alpha
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.max_outside_mm = max_outside_mm
        self.min_experiments = min_experiments

    def _validate(self) -> None:
        if self.method not in METHODS:
            raise BrainmatchInputError(
                f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}"
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

    def fit(self, coordinates: CoordinateTable, name: str | None = None) -> CoordinateMetaAnalysis:
        """Run the meta-analysis and its FWE correction.

        Parameters
        ----------
        coordinates : CoordinateTable
            From :func:`brainmatch.evidence.cbma_io.read_coordinates`.
        name : str, optional
            Label of the analysis in reports (default: the file's stem).

        Returns
        -------
        self
        """
        from nimare.correct import FWECorrector
        from nimare.meta.cbma import ALE, MKDADensity

        self._validate()
        _check_k(coordinates, self.min_experiments, "a meta-analysis")
        start = time.perf_counter()
        mask = brain_mask()
        notes = [*coordinates.notes, *check_in_brain(coordinates, mask, self.max_outside_mm)]
        dataset = _dataset(coordinates)
        cls = ALE if self.method == "ale" else MKDADensity
        with _quiet():
            estimator = cls(null_method="approximate", random_state=self.random_state)
            result = estimator.fit(dataset)
            corrector = FWECorrector(
                method="montecarlo",
                voxel_thresh=self.voxel_thresh,
                n_iters=self.iterations,
                n_cores=self.n_jobs,
            )
            corrected = corrector.transform(result)
            ss_thresh = float(estimator._p_to_summarystat(self.voxel_thresh))
        self.estimator_ = corrected.estimator
        stat = corrected.get_map("stat")
        z = corrected.get_map("z")
        logp_c = corrected.get_map("logp_desc-size_level-cluster_corr-FWE_method-montecarlo")
        logp_v = corrected.get_map("logp_level-voxel_corr-FWE_method-montecarlo")
        clusters, sig_mask = cluster_table(
            stat, z, logp_c, stat_threshold=ss_thresh, alpha=self.alpha
        )
        z_fwe = _masked(z, sig_mask)
        maps = {
            "stat": stat,
            "z": z,
            "logp_voxel_fwe": logp_v,
            "logp_cluster_fwe": logp_c,
            "z_fwe_cluster": z_fwe,
        }
        null_sizes = corrected.estimator.null_distributions_[
            "values_desc-size_level-cluster_corr-fwe_method-montecarlo"
        ]
        voxel_mm3 = float(abs(np.linalg.det(stat.affine[:3, :3])))
        params = {
            "n_experiments": coordinates.n_experiments,
            "n_foci": len(coordinates.foci),
            "n_subjects": coordinates.n_subjects,
            "iterations": self.iterations,
            "voxel_thresh": self.voxel_thresh,
            "alpha": self.alpha,
            "random_state": self.random_state,
            "stat_threshold": ss_thresh,
            "cluster_size_threshold_mm3": float(np.quantile(null_sizes, 1 - self.alpha))
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
        )
        return self


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
) -> CBMAResult:
    """Read a coordinate file, run the meta-analysis and (optionally) write every output.

    The one call ``brainmatch demo`` needs, e.g. on NiMARE's packaged
    ``nidm_pain_dset.json`` with ``iterations=100``.

    Parameters
    ----------
    coordinates : str or Path
        Any format :func:`~brainmatch.evidence.cbma_io.read_coordinates` reads.
    out_dir : str or Path, optional
        Where to write maps, ``clusters.tsv``, ``results.json`` and ``report.html``.
    select : list of str, optional
        ``COLUMN=VALUE`` row selections.
    method, iterations, voxel_thresh, alpha, n_jobs, random_state
        As :class:`CoordinateMetaAnalysis`.
    name : str, optional
        Label of the analysis.

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
    )
    result = est.fit(table, name=name).result_
    if out_dir is not None:
        result.save(out_dir)
    return result


def _versions() -> dict[str, str]:
    import nilearn
    import nimare

    from brainmatch import __version__

    return {"brainmatch": __version__, "nimare": nimare.__version__, "nilearn": nilearn.__version__}


def _masked(img: nib.Nifti1Image, keep: np.ndarray) -> nib.Nifti1Image:
    data = np.asarray(img.dataobj, dtype=np.float32) * keep
    return nib.Nifti1Image(data.astype(np.float32), img.affine)


# --------------------------------------------------------------------------- clusters


def _atlas_arrays(
    shape: tuple[int, int, int], affine: np.ndarray
) -> tuple[np.ndarray, dict[int, str], np.ndarray | None]:
    """Harvard-Oxford labels and the binarised affect-network mask on the analysis grid."""
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
) -> CBMAResult:
    """ALE subtraction (contrast) of two sets of experiments, with cluster-level FWE.

    NiMARE's ``ALESubtraction`` permutes the group labels of the experiments
    ``iterations`` times; the ALE difference map gets a two-sided permutation p.  Voxels
    with uncorrected ``p < voxel_thresh`` form clusters, each tested against the null of
    the largest permutation cluster (cluster-level FWE, ``p_fwe``).  Unlike GingerALE,
    NiMARE tests every voxel of the mask, not only those significant in a main effect.

    Returns
    -------
    CBMAResult
        ``kind="subtraction"``; ``clusters`` has ``direction`` ``+`` (``A > B``) or
        ``-`` (``B > A``); ``maps["z"]`` is positive where ``A > B``.
    """
    from nimare.correct import FWECorrector
    from nimare.meta.cbma import ALESubtraction

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
    with _quiet():
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
    stat = corrected.get_map("stat_desc-group1MinusGroup2")
    z = corrected.get_map("z_desc-group1MinusGroup2")
    names = list(corrected.maps)
    cluster_key = next((k for k in names if k.startswith("logp_desc-group1MinusGroup2Size")), None)
    voxel_key = next(
        (k for k in names if k.startswith("logp_desc-group1MinusGroup2_level-voxel")), None
    )
    logp_c = corrected.get_map(cluster_key) if cluster_key else None
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
    if voxel_key:
        maps["logp_voxel_fwe"] = corrected.get_map(voxel_key)
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
        "z_threshold": z_thr,
        "software": _versions(),
    }
    description = (
        f"The two sets of experiments ({name_a}: {a.n_experiments} experiments, "
        f"{len(a.foci)} foci; {name_b}: {b.n_experiments} experiments, {len(b.foci)} foci) were "
        "contrasted by ALE subtraction (Laird et al. 2005; Eickhoff et al. 2012) in NiMARE "
        f"{_versions()['nimare']} (Salo et al. 2023): the experiments' group labels were "
        f"permuted {iterations} times to obtain a two-sided p-value for the ALE difference at "
        f"every voxel of the MNI152 2 mm brain mask. Voxels with uncorrected p < {voxel_thresh} "
        "formed clusters (face connectivity), each tested against the distribution of the "
        f"largest permutation cluster (cluster-level family-wise error, alpha = {alpha})."
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
    )


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
        f"mask (seed {params['random_state']}): clusters were formed from voxels with "
        f"uncorrected p < {params['voxel_thresh']} (face connectivity) and kept when larger "
        f"than expected by chance (cluster-level FWE p < {params['alpha']}; critical size "
        f"{params['cluster_size_threshold_mm3']:.0f} mm3). Clusters were labelled with the "
        "Harvard-Oxford atlas (maximum probability, 25 % threshold; Desikan et al. 2006) at "
        "the peak, and their overlap with brainmatch's affect-network mask was computed."
    )
