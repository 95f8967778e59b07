"""``extract_dataset``: BIDS + fMRIPrep derivatives -> region time series, connectivity and
a features table, one participant(-session) at a time, resumably and in parallel.

Each unit of work (one participant, or participant-session) is a pure function of its
input files and the options.  A worker writes the unit's per-run outputs atomically, then
a small record (``<sub>[_<ses>]_seg-<atlas>_features.json``) with the options' hash, the
hashes of every input file and the unit's feature values.  A rerun skips a unit whose
record matches; a unit killed half-way has no record and is redone.  The group files
(``features.parquet`` / ``.tsv`` / ``.json``, ``failures.tsv``) are rebuilt from the
records at the end of every run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import traceback
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainmatch import __version__
from brainmatch._io import write_json, write_text, write_tsv
from brainmatch.atlases import (
    SHIPPED_ATLASES,
    Atlas,
    atlas_digest,
    load_atlas,
    resample_atlas,
)
from brainmatch.errors import BrainmatchError, BrainmatchInputError
from brainmatch.features.aseg import read_aseg_stats
from brainmatch.features.bids import Run, Unit, discover
from brainmatch.features.cleaning import zscore_sample
from brainmatch.features.denoise import (
    CONNECTIVITY_KINDS,
    CONNECTIVITY_PREFIX,
    CleanOptions,
    amplitude_features,
    clean_signals,
    confounds_path,
    connectivity,
    fisher_z,
    load_confounds,
    read_tr,
)
from brainmatch.features.lean import (
    HASH_NAME,
    LeanPool,
    StreamJob,
    do_job,
    file_fingerprint,
    run_job,
)
from brainmatch.features.regions import RegionPlan

#: A unit's or run's work as a generator: it yields the lean steps (streaming, and
#: hashing, a BOLD: :class:`~brainmatch.features.lean.StreamJob`) to whoever runs them
#: (a worker process, Dask, or this process), is sent back their value (or has
#: the worker's error thrown in) and returns its result.
Job = StreamJob
Steps = Generator[Job, Any, dict[str, Any]]

RECORD_VERSION = 2
#: Share of the atlas regions that must fall inside the BOLD field of view.
MIN_REGION_COVERAGE = 0.5


def feature_name(region: str) -> str:
    """A region name as it appears in feature column names (``[A-Za-z0-9_]``)."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]+", "_", region)).strip("_")


def bids_label(name: str) -> str:
    """An atlas name as a BIDS ``seg-`` label (alphanumeric)."""
    return re.sub(r"[^A-Za-z0-9]", "", name) or "atlas"


@dataclass(frozen=True)
class ExtractConfig:
    """Everything a worker needs besides the unit (picklable)."""

    atlas: Atlas
    atlas_digest: str
    clean: CleanOptions
    connectivity: tuple[str, ...]
    output_dir: Path
    freesurfer: bool
    volumes_per_block: int = 1
    atlas_source: str | None = None
    atlas_labels: str | None = None

    @property
    def seg(self) -> str:
        """BIDS ``seg-`` label of the atlas."""
        return bids_label(self.atlas.name)

    def options_dict(self) -> dict[str, Any]:
        """Options that determine every value in a record."""
        return {
            "record_version": RECORD_VERSION,
            "brainmatch": __version__,
            "atlas": self.atlas_source or self.atlas.name,
            "atlas_labels": self.atlas_labels,
            "atlas_sha256": self.atlas_digest,
            "clean": self.clean.as_dict(),
            "connectivity": [k for k in self.connectivity if k != "tangent"],
            "freesurfer": self.freesurfer,
        }

    def options_hash(self) -> str:
        """SHA-256 of :meth:`options_dict`."""
        text = json.dumps(self.options_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ExtractResult:
    """What :func:`extract_dataset` did.

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
    failures: pd.DataFrame
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    n_units: int = 0
    worker_peak_rss_mb: float | None = None

    @property
    def all_failed(self) -> bool:
        """True when every unit of this run failed."""
        return self.n_units > 0 and len(self.failures) >= self.n_units


# --- hashing of inputs ------------------------------------------------------------------------


def _fingerprint(path: Path, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    st = path.stat()
    entry = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if (
        previous
        and previous.get("size") == st.st_size
        and previous.get("mtime_ns") == st.st_mtime_ns
        and previous.get(HASH_NAME)
    ):
        entry[HASH_NAME] = previous[HASH_NAME]
        return entry
    return file_fingerprint(path)


def unit_inputs(unit: Unit) -> list[Path]:
    """Every input file of a unit that exists (BOLD, sidecars, masks, confounds, aseg)."""
    files: list[Path] = []
    for run in unit.runs:
        conf = confounds_path(run.bold)
        for f in (run.bold, run.sidecar, run.mask, conf, conf.with_suffix(".json")):
            if f is not None and f.exists():
                files.append(f)
    if unit.aseg is not None and unit.aseg.exists():
        files.append(unit.aseg)
    return files


def record_path(config: ExtractConfig, unit: Unit) -> Path:
    """Where a unit's record lives."""
    return config.output_dir / unit.folder / f"{unit.key}_seg-{config.seg}_features.json"


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def is_up_to_date(config: ExtractConfig, unit: Unit) -> bool:
    """True when the unit's record matches the options and every input's content."""
    rec = _read_record(record_path(config, unit))
    if rec is None or rec.get("options_sha256") != config.options_hash():
        return False
    old = {e["path"]: e for e in rec.get("inputs", [])}
    files = unit_inputs(unit)
    if sorted(str(f) for f in files) != sorted(old):
        return False
    for f in files:
        if _fingerprint(f, old[str(f)])[HASH_NAME] != old[str(f)].get(HASH_NAME):
            return False
    return all((config.output_dir / o).exists() for o in rec.get("outputs", []))


# --- one run ----------------------------------------------------------------------------------


def _check_grid(run: Run, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray | None:
    """Return the brain mask (bool) after checking it matches the BOLD grid."""
    if run.mask is None:
        return None
    try:
        img = nib.load(run.mask)
        mask = np.asarray(img.dataobj)  # type: ignore[attr-defined]
    except Exception as exc:
        raise BrainmatchInputError(f"cannot read the brain mask: {exc}", run.mask) from None
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if mask.shape != shape:
        raise BrainmatchInputError(
            f"brain mask shape {mask.shape} does not match the BOLD's {shape} ({run.bold.name})",
            run.mask,
        )
    if not np.allclose(img.affine, affine, atol=1e-3):  # type: ignore[attr-defined]
        raise BrainmatchInputError(
            f"brain mask affine does not match the BOLD's ({run.bold.name}): "
            f"voxel sizes {np.round(nib.affines.voxel_sizes(img.affine), 3).tolist()} vs "  # type: ignore[attr-defined]
            f"{np.round(nib.affines.voxel_sizes(affine), 3).tolist()}",
            run.mask,
        )
    return mask > 0


def _bold_header(run: Run) -> tuple[tuple[int, int, int], np.ndarray, int]:
    from brainmatch.features.niftistream import NiftiStream

    with NiftiStream(run.bold) as s:
        if s.n_volumes < 2:
            raise BrainmatchInputError(f"expected a 4D BOLD series, got shape {s.shape}", run.bold)
        return s.shape, s.affine, s.n_volumes


def extract_run(run: Run, config: ExtractConfig) -> dict[str, Any]:
    """Region signals, cleaning and connectivity of one run; writes its TSVs.

    Everything runs in this process (``extract_dataset`` streams the BOLD in a lean
    worker process instead; the results are identical).

    Returns a dict with ``series`` (cleaned, standardised as requested), ``names`` (the
    regions kept), ``features`` (name -> value) and ``outputs`` (relative paths).
    """
    return _drive_here(run_steps(run, config))


def _drive_here(steps: Steps) -> dict[str, Any]:
    """Run ``steps`` to the end, doing the lean steps in this process."""
    reply: Any = None
    while True:
        out = _advance(steps, reply)
        if not isinstance(out, StreamJob):
            return out
        try:
            reply = do_job(out)
        except Exception as exc:
            reply = exc


class _LeanFailure(Exception):
    """A worker process died or failed outside brainmatch's checks (message: the reason)."""


def _from_worker(reply: tuple[Any, ...]) -> Any:
    """A lean worker's reply tuple as what to send (or throw) into the steps."""
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "input":
        return BrainmatchInputError(reply[1], reply[2])
    if kind == "internal":
        return _LeanFailure(f"internal error in the worker ({reply[1]})")
    return _LeanFailure(str(reply[1]))


def _advance(steps: Steps, reply: Any) -> Job | dict[str, Any]:
    """Resume ``steps`` with a reply (None to start); its next job, or its result."""
    try:
        if isinstance(reply, BaseException):
            return steps.throw(reply)
        return steps.send(reply)
    except StopIteration as stop:
        return stop.value


def run_steps(run: Run, config: ExtractConfig, fingerprint: bool = False) -> Steps:
    """:func:`extract_run` as steps: grid checks, the streaming job, then the rest.

    The streaming job is handed out as early as possible (before the confounds are
    read) so that workers start while this process does the rest.  With
    ``fingerprint`` the result's ``"fingerprint"`` is the BOLD's, hashed as it streamed.
    """
    atlas = config.atlas
    shape, affine, n_volumes = _bold_header(run)
    mask = _check_grid(run, shape, affine)
    vox = np.round(nib.affines.voxel_sizes(affine), 2).tolist()
    grid = (
        f"BOLD grid (shape {shape}, voxel size {vox} mm, origin "
        f"{np.round(affine[:3, 3], 1).tolist()})"
    )
    try:
        labels3d = resample_atlas(atlas, shape, affine, config.atlas_digest)
    except Exception as exc:  # nilearn's BoundingBoxError and friends
        raise BrainmatchInputError(
            f"{grid} does not match the atlas space: the {atlas.name} atlas falls outside it "
            f"({type(exc).__name__}); is the BOLD in MNI space?",
            run.bold,
        ) from None
    names_by_label = dict(zip(atlas.labels["index"].astype(int), atlas.labels["name"], strict=True))
    label_values = [int(v) for v in atlas.labels["index"]]
    plan = RegionPlan(labels3d, label_values, mask)
    if plan.n_regions < max(2, math.ceil(MIN_REGION_COVERAGE * len(label_values))):
        raise BrainmatchInputError(
            f"{grid} does not match the atlas space: only "
            f"{plan.n_regions} of {len(label_values)} {atlas.name} regions fall inside it "
            "(is the BOLD in MNI space?)",
            run.bold,
        )
    sig = yield StreamJob(run.bold, plan, config.volumes_per_block, fingerprint)
    tr = read_tr(run.sidecar)
    confounds, sample_mask, _ = load_confounds(run.bold, config.clean, n_volumes)
    if sig.constant_voxels:
        raise BrainmatchInputError(
            f"{sig.constant_voxels} voxel(s) inside the brain mask never change over the run "
            f"(e.g. voxel {sig.first_constant}): dropped-out or zero-filled data",
            run.bold,
        )
    raw = sig.signals
    flat = np.flatnonzero(raw.std(axis=0) == 0)
    if flat.size:
        raise BrainmatchInputError(
            f"region {names_by_label[plan.labels[int(flat[0])]]!r} has a constant signal", run.bold
        )
    # standardising is nilearn's last cleaning step, so z-scoring the unstandardised
    # result equals signal.clean(standardize="zscore_sample") (tests check against nilearn)
    unstd = clean_signals(
        raw,
        confounds=confounds,
        sample_mask=sample_mask,
        tr=tr,
        options=config.clean,
        standardize=False,
        path=run.bold,
    )
    cleaned = zscore_sample(unstd) if config.clean.standardize == "zscore" else unstd
    kept = raw if sample_mask is None else raw[sample_mask]
    amp, falff = amplitude_features(unstd, kept.mean(axis=0), tr)
    names = [str(names_by_label[v]) for v in plan.labels]
    folder = config.output_dir / _unit_folder(run)
    stem = f"{run.stem}_seg-{config.seg}"
    outputs = []
    ts_path = folder / f"{stem}_stat-mean_timeseries.tsv"
    write_series(ts_path, cleaned, names)
    outputs.append(ts_path)
    feats: dict[str, float] = {}
    fnames = [feature_name(n) for n in names]
    iu = np.triu_indices(len(names), k=1)
    for kind in config.connectivity:
        if kind == "tangent":
            continue
        mat = connectivity([cleaned], kind)[0]
        rel = folder / f"{stem}_stat-{CONNECTIVITY_KINDS[kind]}_relmat.tsv"
        write_matrix(rel, mat, names)
        outputs.append(rel)
        z = fisher_z(mat)
        prefix = CONNECTIVITY_PREFIX[kind]
        for i, j in zip(*iu, strict=True):
            feats[f"{prefix}__{fnames[i]}__{fnames[j]}"] = float(z[i, j])
    for k, f in enumerate(fnames):
        feats[f"amp__{f}"] = float(amp[k])
        feats[f"falff__{f}"] = float(falff[k])
    return {
        "series": cleaned,
        "names": names,
        "features": feats,
        "outputs": [str(p.relative_to(config.output_dir)) for p in outputs],
        "n_volumes": n_volumes,
        "n_kept": len(cleaned),
        "tr": tr,
        "fingerprint": sig.extra.get("fingerprint"),
    }


def write_series(path: Path, series: np.ndarray, names: list[str]) -> None:
    """Write a (time x region) table as TSV with a header of region names."""
    fmt = "\t".join(["%.8g"] * series.shape[1])
    lines = ["\t".join(names)] + [fmt % tuple(row) for row in series.tolist()]
    write_text(path, "\n".join(lines) + "\n")


def write_matrix(path: Path, matrix: np.ndarray, names: list[str]) -> None:
    """Write a region x region matrix as XCP-D's relmat TSV (first column ``Node``)."""
    fmt = "%s" + "\t%.8g" * matrix.shape[1]
    lines = ["\t".join(["Node", *names])]
    lines += [fmt % (n, *row) for n, row in zip(names, matrix.tolist(), strict=True)]
    write_text(path, "\n".join(lines) + "\n")


def _unit_folder(run: Run) -> Path:
    sub = run.entities["sub"]
    p = Path(f"sub-{sub}")
    if run.entities.get("ses"):
        p = p / f"ses-{run.entities['ses']}"
    return p / "func"


def aseg_features(path: Path) -> dict[str, float]:
    """ICV-normalised FreeSurfer volumes: ``vol__<structure>`` = volume / eTIV x 1000."""
    vols, etiv = read_aseg_stats(path)
    out = {f"vol__{feature_name(k)}": 1000.0 * v / etiv for k, v in vols.items()}
    out["vol__eTIV_ml"] = etiv / 1000.0
    return out


# --- one unit (runs in a worker) ----------------------------------------------------------------


def process_unit(unit: Unit, config: ExtractConfig) -> dict[str, Any]:
    """Extract one unit, write its outputs and record; never raises for bad input.

    Everything runs in this process (see :func:`unit_steps` for the split that
    ``extract_dataset`` runs across processes).

    Returns
    -------
    dict
        ``{"key", "status": "ok" | "failed", "record" | "file" + "reason"}``.
    """
    with _one_thread():
        return _drive_here(unit_steps(unit, config))


def unit_steps(unit: Unit, config: ExtractConfig) -> Steps:
    """:func:`process_unit` as steps: one streaming job per run, the rest around them.

    Everything but the streaming (BOLD header, mask and atlas checks, confounds,
    cleaning, connectivity, amplitude, writes, the record) runs where the steps are
    driven, i.e. the parent process; run it under ``threadpool_limits(1)`` for results
    identical to :func:`process_unit`.
    """
    rec_path = record_path(config, unit)
    base = {"key": unit.key, "participant_id": f"sub-{unit.participant}", "session": unit.session}
    try:
        if unit.problem:
            raise BrainmatchInputError(unit.problem, unit.problem_file)
        # every input's content hash goes into the record; the BOLDs are hashed by the
        # workers as they stream them, the small files here
        files = unit_inputs(unit)
        bolds = {str(r.bold) for r in unit.runs}
        hashes = {str(f): file_fingerprint(f) for f in files if str(f) not in bolds}
        results = []
        for run in unit.runs:
            results.append((yield from run_steps(run, config, fingerprint=True)))
            hashes[str(run.bold)] = results[-1]["fingerprint"]
        inputs = [hashes[str(f)] for f in files if str(f) in hashes]
        features: dict[str, list[float]] = {}
        for res in results:
            for k, v in res["features"].items():
                features.setdefault(k, []).append(v)
        # average over runs (Fisher z for connectivity)
        values = {k: (v[0] if len(v) == 1 else float(np.mean(v))) for k, v in features.items()}
        if config.freesurfer:
            if unit.aseg is None:
                raise BrainmatchInputError("no FreeSurfer folder for this participant", unit.key)
            values.update(aseg_features(unit.aseg))
        record = {
            "record_version": RECORD_VERSION,
            "participant_id": f"sub-{unit.participant}",
            "session": unit.session,
            "options_sha256": config.options_hash(),
            "options": config.options_dict(),
            "inputs": inputs,
            "runs": [
                {
                    "bold": str(r.bold),
                    "timeseries": res["outputs"][0],
                    "n_volumes": res["n_volumes"],
                    "n_kept": res["n_kept"],
                    "tr": res["tr"],
                    "regions": res["names"],
                }
                for r, res in zip(unit.runs, results, strict=True)
            ],
            "outputs": sorted({o for res in results for o in res["outputs"]}),
            "features": values,
        }
        # one line: written by the C encoder (the record is for reruns and the group table)
        write_json(rec_path, _finite(record), indent=None)
        return {**base, "status": "ok", "record": record}
    except _LeanFailure as exc:
        _remove(rec_path)
        return {**base, "status": "failed", "file": "", "reason": str(exc)}
    except BrainmatchError as exc:
        _remove(rec_path)
        path = getattr(exc, "path", None)
        reason = getattr(exc, "reason", str(exc))
        return {**base, "status": "failed", "file": str(path) if path else "", "reason": reason}
    except Exception as exc:
        _remove(rec_path)
        tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return {
            **base,
            "status": "failed",
            "file": "",
            "reason": f"internal error ({type(exc).__name__}: {exc}); {tb}",
        }


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    isfinite = math.isfinite
    if isinstance(obj, float):
        return obj if isfinite(obj) else None
    if isinstance(obj, dict):  # a record's features: thousands of floats, inlined
        return {
            k: (v if isfinite(v) else None) if type(v) is float else _finite(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [(v if isfinite(v) else None) if type(v) is float else _finite(v) for v in obj]
    return obj


# --- the batch ------------------------------------------------------------------------------------


#: units prepared and queued per worker (each holds its RegionPlan, ~5 MB at 2 mm)
LOOKAHEAD = 4


def _one_thread() -> Any:
    """``threadpool_limits(1)`` over every BLAS the finishing steps use.

    threadpoolctl limits only the libraries already loaded: scipy.linalg (which brings
    scipy's own OpenBLAS, apart from numpy's) is imported first, or its threads would
    spin beside the workers' on every confound regression.
    """
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _run_local(
    units: Sequence[Unit],
    config: ExtractConfig,
    pool: LeanPool,
    done: Callable[[dict[str, Any]], None],
) -> int:
    """Stream in the lean worker processes of ``pool`` (one even with ``--n-jobs 1``).

    The parent prepares each unit, hands its runs' streaming to the workers and finishes
    the unit when the region signals come back; a few units are prepared ahead so the
    workers never wait for the parent.  Returns the workers' peak RSS in bytes.
    """
    from contextlib import ExitStack

    from threadpoolctl import threadpool_limits

    n_workers = pool.n_workers
    todo = list(reversed(units))
    active: dict[int, Steps] = {}
    with ExitStack() as limits:
        limits.enter_context(threadpool_limits(1))
        scipy_limited = False

        def feed(token: int, steps: Steps, reply: Any) -> None:
            out = _advance(steps, reply)
            if isinstance(out, StreamJob):
                active[token] = steps
                pool.submit(token, out)
            else:
                active.pop(token, None)
                done(out)

        token = 0
        while todo or active:
            # keep LOOKAHEAD units per worker queued, so the workers keep streaming while
            # this process finishes a unit
            while todo and len(active) < LOOKAHEAD * n_workers:
                token += 1
                feed(token, unit_steps(todo.pop(), config), None)
            if not scipy_limited:  # once the workers have work: import scipy, limit it
                limits.enter_context(_one_thread())
                scipy_limited = True
            if active:
                tok, reply = pool.get()
                feed(tok, active[tok], _from_worker(reply))
        return pool.peak_rss


def _run_dask(
    units: Sequence[Unit],
    config: ExtractConfig,
    scheduler: str,
    done: Callable[[dict[str, Any]], None],
) -> int:
    """Stream on a Dask cluster; the rest runs here (as :func:`_run_local`)."""
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise BrainmatchInputError(f"--scheduler needs dask.distributed: {exc}") from None

    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise BrainmatchInputError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    peak = 0
    try:
        width = 2 * max(1, sum(client.nthreads().values()))
        todo = list(reversed(units))
        active: dict[str, tuple[Unit, Steps]] = {}
        pending = as_completed()

        def feed(unit: Unit, steps: Steps, reply: Any) -> None:
            out = _advance(steps, reply)
            if isinstance(out, StreamJob):
                key = f"extract-{unit.key}-{time.monotonic_ns()}"
                fut = client.submit(run_job, out, pure=False, key=key)
                active[key] = (unit, steps)
                pending.add(fut)
            else:
                done(out)

        with _one_thread():
            while todo or active:
                while todo and len(active) < width:
                    unit = todo.pop()
                    feed(unit, unit_steps(unit, config), None)
                if not active:
                    continue
                fut = next(pending)
                unit, steps = active.pop(str(fut.key))
                try:
                    reply = fut.result()
                except Exception as exc:
                    reply = ("died", f"Dask task failed ({type(exc).__name__}: {exc})", None, 0)
                peak = max(peak, int(reply[-1] or 0))
                feed(unit, steps, _from_worker(reply))
    finally:
        client.close()
    return peak


def extract_dataset(
    bids_dir: str | Path,
    output_dir: str | Path,
    *,
    derivatives: str | Path,
    atlas: str | Path | Atlas,
    atlas_labels: str | Path | None = None,
    freesurfer: str | Path | None = None,
    denoise: str = "simple",
    standardize: str = "zscore",
    detrend: bool = True,
    low_pass: float | None = None,
    high_pass: float | None = None,
    fd_threshold: float | None = None,
    connectivity: Sequence[str] = ("correlation",),
    participant_label: Sequence[str] | None = None,
    session_label: Sequence[str] | None = None,
    task: str | None = None,
    space: str = "MNI152NLin2009cAsym",
    n_jobs: int = 1,
    scheduler: str | None = None,
    work_dir: str | Path | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExtractResult:
    """Extract region time series, connectivity and a features table from a BIDS dataset.

    Parameters
    ----------
    bids_dir : str or Path
        The raw BIDS dataset (``participants.tsv`` is read when present).
    output_dir : str or Path
        Derivative folder to write (created; earlier outputs are reused when up to date).
    derivatives : str or Path
        fMRIPrep output folder (``sub-*/[ses-*/]func/*_desc-preproc_bold.nii.gz``).
    atlas : str, Path or Atlas
        Shipped atlas name, ``affect``, a labels NIfTI (with ``atlas_labels``), or an Atlas.
    atlas_labels : str or Path, optional
        Labels TSV (index, name) of a user atlas.
    freesurfer : str or Path, optional
        FreeSurfer SUBJECTS_DIR: adds ICV-normalised ``aseg.stats`` volumes.
    denoise, standardize, detrend, low_pass, high_pass, fd_threshold
        See :class:`~brainmatch.features.denoise.CleanOptions`.
    connectivity : sequence of {"correlation", "partial", "tangent"}
        Connectivity measures (nilearn ``ConnectivityMeasure``); features are Fisher-z
        for correlation and partial correlation.  ``tangent`` is fitted on every unit in
        the table (a group reference): refit it inside cross-validation folds.
    participant_label, session_label : sequence of str, optional
        Restrict to these participants / sessions (with or without ``sub-`` / ``ses-``).
    task : str, optional
    space : str
        fMRIPrep output space of the BOLD files to use (the atlases are MNI).
    n_jobs : int
        Local worker processes.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``) to run units on;
        workers must see the same file system paths.
    work_dir : str or Path, optional
        Atlas cache folder (default ``$BRAINMATCH_CACHE`` or ``~/.cache/brainmatch``).
    force : bool
        Recompute every unit even when its outputs are up to date.
    progress : callable, optional
        ``progress(done, total)``.

    Returns
    -------
    ExtractResult
    """
    from contextlib import ExitStack

    bids_dir, output_dir, derivatives = Path(bids_dir), Path(output_dir), Path(derivatives)
    if work_dir is not None:
        os.environ["BRAINMATCH_CACHE"] = str(Path(work_dir).absolute())
    kinds = tuple(dict.fromkeys(connectivity))
    bad = [k for k in kinds if k not in CONNECTIVITY_KINDS]
    if bad:
        raise BrainmatchInputError(
            f"unknown connectivity measure {bad[0]!r}; choose from {', '.join(CONNECTIVITY_KINDS)}"
        )
    options = CleanOptions(
        denoise=denoise,
        standardize=standardize,
        detrend=detrend,
        low_pass=low_pass,
        high_pass=high_pass,
        fd_threshold=fd_threshold,
    )
    with ExitStack() as stack:
        pool = None
        if not scheduler:  # start the workers now: their imports overlap the set-up below
            pool = stack.enter_context(LeanPool(max(1, n_jobs)))
        atlas_obj = atlas if isinstance(atlas, Atlas) else load_atlas(atlas, atlas_labels)
        fs = Path(freesurfer) if freesurfer is not None else None
        if fs is not None and not fs.is_dir():
            raise BrainmatchInputError("FreeSurfer folder not found", fs)
        if output_dir.exists() and not output_dir.is_dir():
            raise BrainmatchInputError("output path exists and is not a folder", output_dir)
        units = discover(
            bids_dir,
            derivatives,
            participant_label=list(participant_label or []),
            session_label=list(session_label or []),
            task=task,
            space=space,
            freesurfer=fs,
        )
        if not units:
            raise BrainmatchInputError(
                "no preprocessed BOLD found "
                "(expected sub-*/[ses-*/]func/*_desc-preproc_bold.nii.gz)",
                derivatives,
            )
        source = None if isinstance(atlas, Atlas) else str(atlas)
        if (
            source is not None
            and source not in (*SHIPPED_ATLASES, "affect")
            and Path(source).exists()
        ):
            source = str(Path(source).absolute())  # a user atlas: record where it came from
        config = ExtractConfig(
            atlas=atlas_obj,
            atlas_digest=atlas_digest(atlas_obj),
            clean=options,
            atlas_source=source,
            atlas_labels=str(Path(atlas_labels).absolute()) if atlas_labels else None,
            connectivity=kinds,
            output_dir=output_dir.absolute(),
            freesurfer=fs is not None,
        )
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_description(output_dir, bids_dir, derivatives)

        todo, skipped = [], []
        for unit in units:
            if not force and not unit.problem and is_up_to_date(config, unit):
                skipped.append(unit.key)
            else:
                todo.append(unit)
        total = len(units)
        results: list[dict[str, Any]] = []
        state = {"done": len(skipped)}
        if progress:
            progress(state["done"], total)

        def done(res: dict[str, Any]) -> None:
            results.append(res)
            state["done"] += 1
            if progress:
                progress(state["done"], total)

        peak = 0
        if todo:
            if pool is None:
                assert scheduler is not None
                peak = _run_dask(todo, config, scheduler, done)
            else:
                peak = _run_local(todo, config, pool, done)
        failures = pd.DataFrame(
            [
                {
                    "participant_id": r["participant_id"],
                    "session": r["session"] or "n/a",
                    "file": r["file"],
                    "reason": r["reason"],
                }
                for r in results
                if r["status"] == "failed"
            ],
            columns=["participant_id", "session", "file", "reason"],
        )
        failures = failures.sort_values(["participant_id", "session"]).reset_index(drop=True)
        failures_path = output_dir / "failures.tsv"
        write_tsv(failures_path, failures)
        failed_keys = {r["key"] for r in results if r["status"] == "failed"}
        paths = _write_group(config, units, failed_keys, bids_dir)
        return ExtractResult(
            output_dir=output_dir,
            features_path=paths[0],
            features_tsv=paths[1],
            metadata_path=paths[2],
            failures_path=failures_path,
            failures=failures,
            computed=[r["key"] for r in results if r["status"] == "ok"],
            skipped=skipped,
            n_units=total,
            worker_peak_rss_mb=peak / 2**20 if peak else None,
        )


def _write_description(output_dir: Path, bids_dir: Path, derivatives: Path) -> None:
    path = output_dir / "dataset_description.json"
    write_json(
        path,
        {
            "Name": "brainmatch extract: region time series, connectivity and features",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {"Name": "brainmatch", "Version": __version__, "Description": "brainmatch extract"}
            ],
            "SourceDatasets": [
                {"URL": bids_dir.absolute().as_uri()},
                {"URL": derivatives.absolute().as_uri()},
            ],
        },
    )


def _write_group(
    config: ExtractConfig, units: Sequence[Unit], failed: set[str], bids_dir: Path
) -> tuple[Path | None, Path | None, Path | None]:
    """Rebuild features.parquet/.tsv/.json from every matching record in the output folder."""
    want = config.options_hash()
    records = []
    current = {u.key for u in units}
    for path in sorted(config.output_dir.glob(f"sub-*/**/sub-*_seg-{config.seg}_features.json")):
        rec = _read_record(path)
        if rec is None or rec.get("options_sha256") != want:
            continue
        key = rec["participant_id"] + (f"_ses-{rec['session']}" if rec.get("session") else "")
        if key in failed or (key not in current and not path.exists()):
            continue
        records.append(rec)
    if not records:
        return None, None, None
    if "tangent" in config.connectivity:
        _add_tangent(config, records)
    has_session = any(rec.get("session") for rec in records)
    records.sort(key=lambda r: (r["participant_id"], r.get("session") or ""))
    names = sorted({k for rec in records for k in rec["features"]})
    matrix = np.array(
        [[_num(rec["features"].get(k)) for k in names] for rec in records], dtype=np.float64
    ).reshape(len(records), len(names))
    ids = {"participant_id": [rec["participant_id"] for rec in records]}
    if has_session:
        ids["session"] = [rec.get("session") or "n/a" for rec in records]
    out = config.output_dir
    parquet, tsv, meta = out / "features.parquet", out / "features.tsv", out / "features.json"
    _write_parquet(ids, names, matrix, parquet)
    _write_wide_tsv(ids, names, matrix, tsv)
    from importlib.metadata import version

    write_json(
        meta,
        _finite(
            {
                "Description": "One row per participant (and session); one column per feature.",
                "brainmatch_version": __version__,
                "nilearn_version": version("nilearn"),
                "atlas": {
                    "name": config.atlas.name,
                    "sha256": config.atlas_digest,
                    "n_regions": len(config.atlas.labels),
                },
                "strategy": config.clean.as_dict(),
                "connectivity": list(config.connectivity),
                "options": config.options_dict(),
                "options_sha256": want,
                "columns": _column_docs(names),
                "notes": (
                    [
                        "tconn__* (tangent) is fitted on every row of this table as a group "
                        "reference: for honest validation refit it inside each cross-validation "
                        "training fold."
                    ]
                    if "tangent" in config.connectivity
                    else []
                ),
                "inputs": {
                    rec["participant_id"]
                    + (f"_ses-{rec['session']}" if rec.get("session") else ""): rec["inputs"]
                    for rec in records
                },
            }
        ),
    )
    return parquet, tsv, meta


def _num(value: Any) -> float:
    return np.nan if value is None else float(value)


def _write_parquet(
    ids: dict[str, list[str]], names: list[str], matrix: np.ndarray, path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from brainmatch._io import atomic_open

    arrays = [pa.array(v, type=pa.string()) for v in ids.values()]
    arrays += [pa.array(matrix[:, j]) for j in range(matrix.shape[1])]
    table = pa.Table.from_arrays(arrays, names=[*ids, *names])
    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh)


def _write_wide_tsv(
    ids: dict[str, list[str]], names: list[str], matrix: np.ndarray, path: Path
) -> None:
    lines = ["\t".join([*ids, *names])]
    for i in range(matrix.shape[0]):
        cells = [v[i] for v in ids.values()]
        cells += ["n/a" if not math.isfinite(x) else f"{x:.10g}" for x in matrix[i].tolist()]
        lines.append("\t".join(cells))
    write_text(path, "\n".join(lines) + "\n")


def _column_docs(columns: Sequence[str]) -> dict[str, str]:
    docs = {
        "conn": "Fisher-z Pearson correlation (nilearn ConnectivityMeasure, Ledoit-Wolf) "
        "between two regions' cleaned series, averaged over runs",
        "pconn": "Fisher-z partial correlation between two regions",
        "tconn": "tangent-space connectivity (group reference: all rows)",
        "amp": "SD of the cleaned region signal, % of its mean intensity",
        "falff": "fractional amplitude of low-frequency fluctuations (0.01-0.08 Hz)",
        "vol": "FreeSurfer aseg volume / eTIV x 1000 (vol__eTIV_ml: eTIV in ml)",
    }
    out = {}
    for c in columns:
        prefix = c.split("__", 1)[0]
        if prefix in docs:
            out[prefix + "__*"] = docs[prefix]
    return out


def _add_tangent(config: ExtractConfig, records: list[dict[str, Any]]) -> None:
    series, owners = [], []
    common: list[str] | None = None
    for rec in records:
        for run in rec["runs"]:
            common = (
                list(run["regions"])
                if common is None
                else [r for r in common if r in set(run["regions"])]
            )
    if not common or len(common) < 2:
        return
    for i, rec in enumerate(records):
        for run in rec["runs"]:
            ts = pd.read_csv(config.output_dir / run["timeseries"], sep="\t")
            series.append(ts[common].to_numpy(dtype=np.float64))
            owners.append((i, run["timeseries"]))
    if len(series) < 2:
        return
    mats = connectivity(series, "tangent")
    fnames = [feature_name(n) for n in common]
    iu = np.triu_indices(len(common), k=1)
    per: dict[int, list[np.ndarray]] = {}
    for (i, ts_name), mat in zip(owners, mats, strict=True):
        rel = config.output_dir / ts_name.replace(
            "_stat-mean_timeseries.tsv", "_stat-tangent_relmat.tsv"
        )
        write_matrix(rel, mat, common)
        per.setdefault(i, []).append(mat)
    for i, mats_i in per.items():
        mean = np.mean(mats_i, axis=0)
        for a, b in zip(*iu, strict=True):
            records[i]["features"][f"tconn__{fnames[a]}__{fnames[b]}"] = float(mean[a, b])


def read_features(output_dir: str | Path) -> pd.DataFrame:
    """Read ``features.parquet`` of an extract output folder."""
    path = Path(output_dir) / "features.parquet"
    if not path.exists():
        raise BrainmatchInputError("no features.parquet (run brainmatch extract first)", path)
    return pd.read_parquet(path)


__all__ = [
    "ExtractConfig",
    "ExtractResult",
    "extract_dataset",
    "extract_run",
    "process_unit",
    "read_features",
    "run_steps",
    "unit_steps",
]
