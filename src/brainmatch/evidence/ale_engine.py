"""Fast Monte Carlo family-wise error null for ALE and MKDA (``brainmatch cbma``'s engine).

NiMARE's Monte Carlo FWE correction relocates every focus at random inside the mask,
``n_iters`` times, and for each relocation builds the whole-brain statistic map, its
maximum and (after thresholding at the cluster-forming threshold) its largest cluster.
This module computes exactly those three numbers per iteration, with the same random
relocations and the same floating-point arithmetic, but with less work:

- **kernel tables**: the per-focus kernel is tabulated once per sample size as the value
  each focus adds to a voxel's running sum (``log1p(-MA)`` for ALE, ``-weight`` for MKDA),
  so an iteration adds contiguous kernel rows into one dense volume instead of taking a
  logarithm per voxel per study.  Within an experiment the largest MA value wins (ALE's
  per-experiment maximum); because ``log1p(-x)`` decreases with ``x``, the maximum MA is
  the minimum table entry, so overlapping foci are merged with ``min`` on the tabulated
  values - the same numbers NiMARE obtains by taking the maximum first.  A voxel that
  several foci of one experiment reach is added once, by the focus of lowest index, with
  the minimum over all of them; every other voxel gets its one table value directly.
  The experiments are added in NiMARE's order, so every sum is bit-for-bit NiMARE's.
- **compact rows**: only the stretch of each grid row ``(i, j)`` that holds mask voxels
  is stored, written and read (about 260,000 entries instead of 902,629).
- **no full-brain maps**: one pass over the volume takes the minimum (the map's maximum
  statistic) and collects the few voxels beyond the cluster-forming threshold; clusters
  are labelled among those voxels only (union-find, face connectivity, as NiMARE's
  ``ndimage.label``), never over the 902,629-voxel grid.
- **compiled and parallel**: the loop is compiled with numba and releases the GIL, so
  iterations run in threads (``n_jobs``) or, with a Dask scheduler address, in chunks on
  a cluster.

The random relocations are NiMARE's own draws (the same seed stream and the same call),
so with the same ``random_state`` the null distributions equal NiMARE's value for value;
with other seeds they agree in distribution (tests: Kolmogorov-Smirnov against NiMARE).
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

__all__ = ["NullDistributions", "NullPlan", "fwe_draws", "plan_from_estimator", "run_null"]

#: NiMARE's stream name for the draws of its Monte Carlo FWE correction.
FWE_STREAM = "correct_fwe_montecarlo"
#: How long to wait for a Dask scheduler before giving up (a Dask duration).
CONNECT_TIMEOUT = "20s"


@dataclass(frozen=True)
class NullPlan:
    """Everything an iteration needs, fixed for the run.

    Attributes
    ----------
    shape : tuple of int
        Grid shape (the mask image's).
    mask : ndarray of uint8, shape (n_compact,)
        Analysis mask in the compact row layout (see ``row_start``).
    null_flat : ndarray of int64, shape (n_null,)
        Flat indices of the voxels foci are drawn from (the mask voxels, C order, as
        NiMARE's ``mask_coverage="brain"``).
    offsets : ndarray of int64, shape (n_groups + 1,)
        Focus index boundaries of each experiment (rows of NiMARE's coordinates table).
    kernel_index : ndarray of int64, shape (n_groups,)
        Which kernel table each experiment uses.
    weights : ndarray of float64, shape (n_groups,)
        Experiment weights (1 for ALE; MKDA's weight vector).
    tables : ndarray of float64
        Kernel tables, each a cube of side ``widths[k]``, concatenated.
    starts, widths : ndarray of int64
        Start of each table in ``tables`` and its side length (odd; centre ``w // 2``).
    threshold : float
        Cluster-forming threshold on the statistic (NiMARE's ``_p_to_summarystat``).
    kind : {"ale", "mkda"}
        How a voxel's accumulated sum becomes the statistic: ``1 - exp(sum)`` or ``-sum``.
    row_lo, row_hi : ndarray of int64, shape (nx * ny,)
        Per grid row (fixed ``i, j``), the range of ``k`` holding mask voxels (empty rows:
        ``0, 0``); nothing outside these stretches is written or read.
    row_start : ndarray of int64, shape (nx * ny + 1,)
        Where each row's stretch starts in the compact work arrays (``mask`` is stored
        in that layout too).
    kernels32 : ndarray of float32, optional
        The kernel cubes themselves (modelled activation per voxel, float32 as NiMARE
        stores them), laid out as ``tables``; used for the observed maps
        (:func:`ma_maps`).
    """

    shape: tuple[int, int, int]
    mask: np.ndarray
    null_flat: np.ndarray
    offsets: np.ndarray
    kernel_index: np.ndarray
    weights: np.ndarray
    tables: np.ndarray
    starts: np.ndarray
    widths: np.ndarray
    threshold: float
    kind: str
    row_lo: np.ndarray
    row_hi: np.ndarray
    row_start: np.ndarray
    kernels32: np.ndarray | None = None

    @property
    def n_foci(self) -> int:
        """Number of foci relocated per iteration."""
        return int(self.offsets[-1])

    @property
    def n_null(self) -> int:
        """Number of voxels foci are drawn from."""
        return int(self.null_flat.shape[0])


@dataclass
class NullDistributions:
    """Per-iteration maxima of the Monte Carlo null (NiMARE's ``null_distributions_``).

    Attributes
    ----------
    max_stat : ndarray of float32
        Largest statistic of each iteration (voxel-level FWE).
    max_size : ndarray of float32
        Largest cluster (voxels) of each iteration (cluster-size FWE).
    max_mass : ndarray of float32
        Largest cluster mass (sum of statistic minus threshold) of each iteration.
    """

    max_stat: np.ndarray
    max_size: np.ndarray
    max_mass: np.ndarray


# --------------------------------------------------------------------------- compiled core


@njit(cache=True, nogil=True)
def _log1m_table(values32: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``log1p(-v)`` in float64 of float32 kernel values (as NiMARE's compiled pass)."""
    out = np.empty(values32.shape[0], dtype=np.float64)
    for i in range(values32.shape[0]):
        out[i] = np.log1p(-np.float64(values32[i]))
    return out


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, a: int) -> int:  # pragma: no cover - compiled
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True, nogil=True)
def _union(parent: np.ndarray, t: int, u: int) -> None:  # pragma: no cover - compiled
    r1 = _find(parent, t)
    r2 = _find(parent, u)
    if r1 != r2:
        parent[max(r1, r2)] = min(r1, r2)


@njit(cache=True, nogil=True)
def _compact(
    row_start: np.ndarray, row_lo: np.ndarray, row_hi: np.ndarray, r: int, k: int
) -> int:  # pragma: no cover - compiled
    """Index of grid row ``r``, slice ``k`` in the compact layout, or -1 outside it."""
    if k < row_lo[r] or k >= row_hi[r]:
        return -1
    return row_start[r] + k - row_lo[r]


@njit(cache=True, nogil=True)
def _iterations(
    draws: np.ndarray,
    null_flat: np.ndarray,
    offsets: np.ndarray,
    kernel_index: np.ndarray,
    weights: np.ndarray,
    tables: np.ndarray,
    starts: np.ndarray,
    widths: np.ndarray,
    nx: int,
    ny: int,
    nz: int,
    mask: np.ndarray,
    row_lo: np.ndarray,
    row_hi: np.ndarray,
    row_start: np.ndarray,
    threshold: float,
    pre_cut: float,
    is_ale: bool,
    acc: np.ndarray,
    labels: np.ndarray,
    cand: np.ndarray,
    cand_row: np.ndarray,
    cand_val: np.ndarray,
    parent: np.ndarray,
    size: np.ndarray,
    mass: np.ndarray,
    out_max: np.ndarray,
    out_size: np.ndarray,
    out_mass: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Run ``draws.shape[1]`` iterations.

    Volumes (``acc``, ``labels``, ``mask``) use a compact layout: for every
    grid row ``r = i * ny + j`` only the stretch ``row_lo[r] <= k < row_hi[r]`` that holds
    mask voxels is stored, at ``row_start[r]``.  Voxels outside it are outside the mask,
    where NiMARE writes nothing either.
    """
    n_iter = draws.shape[1]
    sy = nz
    sx = ny * nz
    n_groups = offsets.shape[0] - 1
    n_rows = nx * ny
    most = 1
    for g in range(n_groups):
        most = max(most, offsets[g + 1] - offsets[g])
    nb_i = np.empty(most, dtype=np.int64)
    nb_j = np.empty(most, dtype=np.int64)
    nb_k = np.empty(most, dtype=np.int64)
    nb_q = np.empty(most, dtype=np.int64)
    wmax = 1
    for k in range(widths.shape[0]):
        wmax = max(wmax, widths[k])
    row_val = np.zeros(wmax, dtype=np.float64)
    row_own = np.zeros(wmax, dtype=np.bool_)
    n_foci = draws.shape[0]
    fi = np.empty(n_foci, dtype=np.int64)
    fj = np.empty(n_foci, dtype=np.int64)
    fk = np.empty(n_foci, dtype=np.int64)
    for it in range(n_iter):
        for p in range(n_foci):
            f = null_flat[draws[p, it]]
            fi[p] = f // sx
            fj[p] = (f // sy) % ny
            fk[p] = f % nz
        # ---- accumulate every experiment's kernel sums, experiment by experiment
        for g in range(n_groups):
            a = offsets[g]
            b = offsets[g + 1]
            k = kernel_index[g]
            w = widths[k]
            c = w // 2
            base = starts[k]
            wg = weights[g]
            for p in range(a, b):
                pi = fi[p]
                pj = fj[p]
                pk = fk[p]
                # foci of the same experiment whose kernel boxes meet this one's
                n_nb = 0
                for q in range(a, b):
                    if q == p:
                        continue
                    qi = fi[q]
                    qj = fj[q]
                    qk = fk[q]
                    if abs(qi - pi) < w and abs(qj - pj) < w and abs(qk - pk) < w:
                        nb_i[n_nb] = qi
                        nb_j[n_nb] = qj
                        nb_k[n_nb] = qk
                        nb_q[n_nb] = q
                        n_nb += 1
                a0 = max(0, c - pi)
                a1 = min(w, nx - pi + c)
                b0 = max(0, c - pj)
                b1 = min(w, ny - pj + c)
                c0 = max(0, c - pk)
                c1 = min(w, nz - pk + c)
                for aa in range(a0, a1):
                    i = pi + aa - c
                    for bb in range(b0, b1):
                        j = pj + bb - c
                        r = i * ny + j
                        # only the stretch of the row that holds mask voxels
                        lo = max(c0, row_lo[r] - pk + c)
                        hi = min(c1, row_hi[r] - pk + c)
                        if lo >= hi:
                            continue
                        vrow = row_start[r] + (pk - c) - row_lo[r]
                        krow = base + (aa * w + bb) * w
                        shared = False
                        for t in range(n_nb):
                            if abs(i - nb_i[t]) <= c and abs(j - nb_j[t]) <= c:
                                shared = True
                                break
                        if not shared:
                            for cc in range(lo, hi):
                                acc[vrow + cc] += wg * tables[krow + cc]
                            continue
                        # Voxels other foci of this experiment also reach: the experiment
                        # adds its largest MA (smallest table value) once, through the
                        # focus of lowest index that reaches the voxel.
                        for cc in range(lo, hi):
                            row_val[cc] = tables[krow + cc]
                            row_own[cc] = True
                        for t in range(n_nb):
                            if abs(i - nb_i[t]) > c or abs(j - nb_j[t]) > c:
                                continue
                            # q's kernel covers k in [qk - c, qk + c]: cc = k - pk + c
                            q_lo = max(lo, nb_k[t] - pk)
                            q_hi = min(hi, nb_k[t] - pk + w)
                            if q_lo >= q_hi:
                                continue
                            if nb_q[t] < p:
                                for cc in range(q_lo, q_hi):
                                    row_own[cc] = False
                            else:
                                qrow = (
                                    base
                                    + ((i - nb_i[t] + c) * w + (j - nb_j[t] + c)) * w
                                    + (pk - nb_k[t])
                                )
                                for cc in range(q_lo, q_hi):
                                    kv = tables[qrow + cc]
                                    x = row_val[cc]
                                    row_val[cc] = kv if kv < x else x
                        for cc in range(lo, hi):
                            # adding 0.0 where another focus owns the voxel is exact
                            x = row_val[cc] if row_own[cc] else 0.0
                            acc[vrow + cc] += wg * x
        # ---- one pass: the smallest sum (largest statistic) and supra-threshold voxels
        lowest = 0.0
        n_cand = 0
        for r in range(n_rows):
            for v in range(row_start[r], row_start[r + 1]):
                x = acc[v]
                if x == 0.0:
                    continue
                acc[v] = 0.0
                if mask[v]:
                    if x < lowest:
                        lowest = x
                    if x < pre_cut:
                        if is_ale:
                            s = np.float32(1.0 - np.exp(x))
                        else:
                            s = np.float32(-x)
                        if np.float64(s) > threshold:
                            cand[n_cand] = v
                            cand_row[n_cand] = r
                            cand_val[n_cand] = s
                            n_cand += 1
        if is_ale:
            out_max[it] = np.float32(1.0 - np.exp(lowest))
        else:
            out_max[it] = np.float32(-lowest)
        # ---- clusters among the candidates (face connectivity), union-find
        for t in range(n_cand):
            labels[cand[t]] = t + 1
            parent[t] = t
        for t in range(n_cand):
            v = cand[t]
            r = cand_row[t]
            kk = v - row_start[r] + row_lo[r]
            if kk > row_lo[r] and labels[v - 1] > 0:
                _union(parent, t, labels[v - 1] - 1)
            if r % ny > 0:
                u = _compact(row_start, row_lo, row_hi, r - 1, kk)
                if u >= 0 and labels[u] > 0:
                    _union(parent, t, labels[u] - 1)
            if r >= ny:
                u = _compact(row_start, row_lo, row_hi, r - ny, kk)
                if u >= 0 and labels[u] > 0:
                    _union(parent, t, labels[u] - 1)
        for t in range(n_cand):
            size[t] = 0
            mass[t] = 0.0
        for t in range(n_cand):
            r = _find(parent, t)
            size[r] += 1
            mass[r] += np.float64(cand_val[t]) - threshold
            labels[cand[t]] = 0
        best_size = 0
        best_mass = 0.0
        for t in range(n_cand):
            if size[t] > best_size:
                best_size = size[t]
            if mass[t] > best_mass:
                best_mass = mass[t]
        out_size[it] = np.float32(best_size)
        out_mass[it] = np.float32(best_mass)


# --------------------------------------------------------------------------- plans


def _stream_key(stream: str) -> int:
    return int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:8], "big")


def fwe_draws(random_state: int, n_null: int, n_foci: int, n_iters: int) -> np.ndarray:
    """The random relocations of NiMARE's Monte Carlo FWE correction.

    NiMARE (0.22) seeds ``numpy.random.default_rng`` with
    ``SeedSequence([seed mod 2**64, stream])`` for the stream ``correct_fwe_montecarlo``
    and draws ``rng.choice(n_null, size=(n_foci, n_iters))``; iteration ``i`` relocates
    focus ``p`` to null voxel ``draws[p, i]``.  The same call here gives the same draws.

    Returns
    -------
    ndarray of int64, shape (n_foci, n_iters)
    """
    seq = np.random.SeedSequence([int(random_state) % 2**64, _stream_key(FWE_STREAM)])
    rng = np.random.default_rng(seq)
    return np.asarray(rng.choice(n_null, size=(n_foci, n_iters)), dtype=np.int64)


def _cube_from_offsets(offsets: np.ndarray, values: np.ndarray | float) -> np.ndarray:
    """A dense odd-sided cube holding ``values`` at integer ``offsets`` from its centre."""
    half = int(np.abs(offsets).max()) if len(offsets) else 0
    w = 2 * half + 1
    cube = np.zeros((w, w, w), dtype=np.float64)
    cube[tuple((offsets + half).T)] = values
    return cube


def _row_extents(mask3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nx, ny, nz = mask3d.shape
    rows = mask3d.reshape(nx * ny, nz)
    has = rows.any(axis=1)
    lo = np.where(has, rows.argmax(axis=1), 0).astype(np.int64)
    hi = np.where(has, nz - rows[:, ::-1].argmax(axis=1), 0).astype(np.int64)
    return np.ascontiguousarray(lo), np.ascontiguousarray(hi)


def _group_offsets(ids: np.ndarray) -> np.ndarray:
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    if len(np.unique(ids)) != len(starts):
        raise ValueError("experiments' foci are not contiguous in the coordinates table")
    return np.r_[starts, len(ids)].astype(np.int64)


def plan_from_estimator(estimator: Any, threshold: float) -> NullPlan:
    """Build the plan from a fitted NiMARE ``ALE`` or ``MKDADensity`` estimator.

    The experiments, their foci (in NiMARE's row order, which the draws index), sample
    sizes, kernels and MKDA weights are read from the fitted estimator, so the engine
    relocates exactly what NiMARE would.

    Parameters
    ----------
    estimator : nimare.meta.cbma.ALE or nimare.meta.cbma.MKDADensity
        Fitted.
    threshold : float
        Cluster-forming threshold on the statistic.
    """
    from nimare.meta.kernel import ALEKernel, MKDAKernel
    from nimare.meta.utils import get_ale_kernel, sphere_kernel_offsets

    mask_img = estimator.masker.mask_img
    mask3d = np.asanyarray(mask_img.dataobj) > 0
    shape = tuple(int(s) for s in mask3d.shape)
    coords = estimator.inputs_["coordinates"]
    offsets = _group_offsets(np.asarray(coords["id"].to_numpy(), dtype=str))
    n_groups = len(offsets) - 1
    kernel = estimator.kernel_transformer
    tables: list[np.ndarray] = []
    cubes32: list[np.ndarray] = []
    if isinstance(kernel, ALEKernel):
        kind = "ale"
        if kernel.sample_size is not None:
            widths_n = np.full(n_groups, float(kernel.sample_size))
        elif kernel.fwhm is None:
            widths_n = np.asarray(coords["sample_size"].to_numpy(), dtype=float)[offsets[:-1]]
        else:
            widths_n = None
        if widths_n is None:
            _, dense = get_ale_kernel(mask_img, fwhm=kernel.fwhm)
            cubes = [dense]
            kernel_index = np.zeros(n_groups, dtype=np.int64)
        else:
            rounded = np.round(widths_n).astype(np.int64)
            unique = np.unique(rounded)
            cubes = [get_ale_kernel(mask_img, sample_size=int(n))[1] for n in unique]
            position = {int(n): i for i, n in enumerate(unique)}
            kernel_index = np.array([position[int(n)] for n in rounded], dtype=np.int64)
        for dense in cubes:
            if dense.shape[0] % 2 == 0 or len(set(dense.shape)) != 1:
                raise ValueError("ALE kernel must be an odd-sided cube")
            v32 = np.asarray(dense, dtype=np.float32).ravel()
            cubes32.append(v32)
            table = _log1m_table(v32)
            table[v32 <= 0] = 0.0
            tables.append(table)
        weights = np.ones(n_groups, dtype=np.float64)
    elif isinstance(kernel, MKDAKernel):
        kind = "mkda"
        sphere = sphere_kernel_offsets(kernel.r, mask_img.header.get_zooms())
        cube = _cube_from_offsets(np.asarray(sphere, dtype=np.int64), -float(kernel.value))
        tables.append(cube.ravel())
        cubes32.append((-cube.ravel()).astype(np.float32))
        kernel_index = np.zeros(n_groups, dtype=np.int64)
        wv = getattr(estimator, "weight_vec_", None)
        weights = (
            np.ones(n_groups)
            if wv is None or np.asarray(wv).size != n_groups
            else np.asarray(wv, dtype=np.float64).ravel()
        )
    else:
        raise ValueError(f"no fast null for kernel {type(kernel).__name__}")
    widths = np.array([round(len(t) ** (1 / 3)) for t in tables], dtype=np.int64)
    starts = np.r_[0, np.cumsum([len(t) for t in tables])[:-1]].astype(np.int64)
    row_lo, row_hi = _row_extents(mask3d)
    row_start = np.r_[0, np.cumsum(row_hi - row_lo)].astype(np.int64)
    rows = mask3d.reshape(-1, shape[2])
    compact = np.concatenate([rows[r, row_lo[r] : row_hi[r]] for r in range(rows.shape[0])]).astype(
        np.uint8
    )
    return NullPlan(
        row_lo=row_lo,
        row_hi=row_hi,
        row_start=row_start,
        shape=(shape[0], shape[1], shape[2]),
        mask=np.ascontiguousarray(compact),
        null_flat=np.flatnonzero(mask3d.ravel()).astype(np.int64),
        offsets=offsets,
        kernel_index=kernel_index,
        weights=np.ascontiguousarray(weights, dtype=np.float64),
        tables=np.ascontiguousarray(np.concatenate(tables), dtype=np.float64),
        starts=starts,
        widths=widths,
        threshold=float(threshold),
        kind=kind,
        kernels32=np.ascontiguousarray(np.concatenate(cubes32), dtype=np.float32),
    )


# --------------------------------------------------------------------------- running


class _Buffers:
    """Work arrays of one thread (about 4 MB on the 2 mm MNI grid)."""

    def __init__(self, plan: NullPlan) -> None:
        n_compact = int(plan.row_start[-1])
        n_mask = int(plan.mask.sum())
        self.acc = np.zeros(n_compact, dtype=np.float64)
        self.labels = np.zeros(n_compact, dtype=np.int64)
        self.cand = np.zeros(n_mask, dtype=np.int64)
        self.cand_row = np.zeros(n_mask, dtype=np.int64)
        self.cand_val = np.zeros(n_mask, dtype=np.float32)
        self.parent = np.zeros(n_mask, dtype=np.int64)
        self.size = np.zeros(n_mask, dtype=np.int64)
        self.mass = np.zeros(n_mask, dtype=np.float64)


def _pre_cut(plan: NullPlan) -> float:
    """A bound on the accumulated sum that every supra-threshold voxel passes (lenient)."""
    if plan.kind == "ale":
        return math.log1p(-plan.threshold) + 1e-7
    return -plan.threshold + 1e-7 * max(1.0, abs(plan.threshold))


def run_chunk(
    plan: NullPlan, draws: np.ndarray, buffers: _Buffers | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the iterations whose relocations are the columns of ``draws``.

    Returns
    -------
    max_stat, max_size, max_mass : ndarray of float32
    """
    buffers = buffers or _Buffers(plan)
    n = draws.shape[1]
    out_max = np.zeros(n, dtype=np.float32)
    out_size = np.zeros(n, dtype=np.float32)
    out_mass = np.zeros(n, dtype=np.float32)
    nx, ny, nz = plan.shape
    _iterations(
        np.ascontiguousarray(draws, dtype=np.int64),
        plan.null_flat,
        plan.offsets,
        plan.kernel_index,
        plan.weights,
        plan.tables,
        plan.starts,
        plan.widths,
        nx,
        ny,
        nz,
        plan.mask,
        plan.row_lo,
        plan.row_hi,
        plan.row_start,
        plan.threshold,
        _pre_cut(plan),
        plan.kind == "ale",
        buffers.acc,
        buffers.labels,
        buffers.cand,
        buffers.cand_row,
        buffers.cand_val,
        buffers.parent,
        buffers.size,
        buffers.mass,
        out_max,
        out_size,
        out_mass,
    )
    return out_max, out_size, out_mass


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def run_null(
    plan: NullPlan,
    n_iters: int,
    random_state: int,
    *,
    n_jobs: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 50,
) -> NullDistributions:
    """The Monte Carlo null: maximum statistic, cluster size and cluster mass per iteration.

    Parameters
    ----------
    plan : NullPlan
        From :func:`plan_from_estimator`.
    n_iters : int
        Iterations.
    random_state : int
        Seed (NiMARE's draws for this seed; see :func:`fwe_draws`).
    n_jobs : int
        Threads on this machine (the compiled loop releases the GIL).
    scheduler : str, optional
        Address of a Dask distributed scheduler; chunks of iterations then run on its
        workers.
    progress : callable, optional
        ``progress(done, total)`` after each chunk.
    chunk_size : int
        Iterations per unit of work (and per progress update).

    Returns
    -------
    NullDistributions
    """
    draws = fwe_draws(random_state, plan.n_null, plan.n_foci, n_iters)
    out = NullDistributions(
        np.zeros(n_iters, dtype=np.float32),
        np.zeros(n_iters, dtype=np.float32),
        np.zeros(n_iters, dtype=np.float32),
    )
    parts = _chunks(n_iters, max(1, chunk_size))
    done = 0
    lock = threading.Lock()

    def store(lo: int, hi: int, res: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        nonlocal done
        out.max_stat[lo:hi], out.max_size[lo:hi], out.max_mass[lo:hi] = res
        with lock:
            done += hi - lo
            if progress is not None:
                progress(done, n_iters)

    if progress is not None:
        progress(0, n_iters)
    if scheduler:
        _run_dask(plan, draws, parts, scheduler, store)
        return out
    if n_jobs <= 1:
        buffers = _Buffers(plan)
        for lo, hi in parts:
            store(lo, hi, run_chunk(plan, draws[:, lo:hi], buffers))
        return out
    pool: queue.SimpleQueue[_Buffers] = queue.SimpleQueue()
    for _ in range(n_jobs):
        pool.put(_Buffers(plan))

    def work(lo: int, hi: int) -> None:
        buffers = pool.get()
        try:
            store(lo, hi, run_chunk(plan, draws[:, lo:hi], buffers))
        finally:
            pool.put(buffers)

    with ThreadPoolExecutor(max_workers=n_jobs) as ex:
        for fut in [ex.submit(work, lo, hi) for lo, hi in parts]:
            fut.result()
    return out


def _run_dask(
    plan: NullPlan,
    draws: np.ndarray,
    parts: list[tuple[int, int]],
    scheduler: str,
    store: Callable[[int, int, tuple[np.ndarray, np.ndarray, np.ndarray]], None],
) -> None:
    from brainmatch.errors import BrainmatchInputError

    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise BrainmatchInputError(f"--scheduler needs dask.distributed: {exc}") from None
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise BrainmatchInputError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        remote_plan = client.scatter(plan, broadcast=True)
        futures = {
            client.submit(run_chunk, remote_plan, draws[:, lo:hi], pure=False): (lo, hi)
            for lo, hi in parts
        }
        for fut in as_completed(futures):
            lo, hi = futures[fut]
            store(lo, hi, fut.result())
    finally:
        client.close()


# --------------------------------------------------------------------------- observed maps


@njit(cache=True, nogil=True)
def _ma_rows(
    ijk: np.ndarray,
    offsets: np.ndarray,
    kernel_index: np.ndarray,
    kernels32: np.ndarray,
    starts: np.ndarray,
    widths: np.ndarray,
    nx: int,
    ny: int,
    nz: int,
    lookup: np.ndarray,
    scratch: np.ndarray,
    touched: np.ndarray,
    out_indptr: np.ndarray,
    out_idx: np.ndarray,
    out_val: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Each experiment's modelled-activation row: the voxel-wise maximum of its foci's
    kernels (float32), in the mask, columns ascending (NiMARE's ``compute_ale_ma``)."""
    n_out = 0
    out_indptr[0] = 0
    for g in range(offsets.shape[0] - 1):
        n_t = 0
        k = kernel_index[g]
        w = widths[k]
        c = w // 2
        base = starts[k]
        for p in range(offsets[g], offsets[g + 1]):
            pi = ijk[p, 0]
            pj = ijk[p, 1]
            pk = ijk[p, 2]
            for aa in range(w):
                i = pi + aa - c
                if i < 0 or i >= nx:
                    continue
                for bb in range(w):
                    j = pj + bb - c
                    if j < 0 or j >= ny:
                        continue
                    krow = base + (aa * w + bb) * w
                    vrow = (i * ny + j) * nz
                    for cc in range(w):
                        kk = pk + cc - c
                        if kk < 0 or kk >= nz:
                            continue
                        v = kernels32[krow + cc]
                        if v <= 0:
                            continue
                        m = lookup[vrow + kk]
                        if m < 0:
                            continue
                        if scratch[m] == 0:
                            touched[n_t] = m
                            n_t += 1
                        if v > scratch[m]:
                            scratch[m] = v
        cols = np.sort(touched[:n_t])
        for t in range(n_t):
            m = cols[t]
            out_idx[n_out] = m
            out_val[n_out] = scratch[m]
            scratch[m] = 0
            n_out += 1
        out_indptr[g + 1] = n_out


def mask_lookup(plan: NullPlan) -> np.ndarray:
    """Flat grid index -> masked voxel index (C order, as NiftiMasker), -1 outside."""
    lookup = np.full(int(np.prod(plan.shape)), -1, dtype=np.int64)
    lookup[plan.null_flat] = np.arange(plan.n_null, dtype=np.int64)
    return lookup


def ma_maps(plan: NullPlan, ijk: np.ndarray) -> Any:
    """Modelled-activation maps of the observed foci, one row per experiment.

    Parameters
    ----------
    plan : NullPlan
        From :func:`plan_from_estimator` (kernels, experiments, mask).
    ijk : ndarray of int, shape (n_foci, 3)
        Voxel indices of the foci, in the plan's focus order.

    Returns
    -------
    scipy.sparse.csr_matrix of float32, shape (n_experiments, n_mask_voxels)
        Rows in the plan's experiment order; the same values as NiMARE's
        ``ALEKernel.transform(..., return_type="sparse")``.
    """
    from scipy import sparse

    if plan.kernels32 is None:
        raise ValueError("the plan holds no kernel values")
    ijk = np.ascontiguousarray(np.asarray(ijk, dtype=np.int64))
    if ijk.shape != (plan.n_foci, 3):
        raise ValueError(f"ijk must have shape ({plan.n_foci}, 3), got {ijk.shape}")
    n_groups = len(plan.offsets) - 1
    per_focus = plan.widths[plan.kernel_index] ** 3
    sizes = np.diff(plan.offsets) * per_focus
    capacity = int(np.minimum(sizes, plan.n_null).sum())
    indptr = np.zeros(n_groups + 1, dtype=np.int64)
    idx = np.zeros(capacity, dtype=np.int64)
    val = np.zeros(capacity, dtype=np.float32)
    nx, ny, nz = plan.shape
    _ma_rows(
        ijk,
        plan.offsets,
        plan.kernel_index,
        plan.kernels32,
        plan.starts,
        plan.widths,
        nx,
        ny,
        nz,
        mask_lookup(plan),
        np.zeros(plan.n_null, dtype=np.float32),
        np.zeros(plan.n_null, dtype=np.int64),
        indptr,
        idx,
        val,
    )
    n = int(indptr[-1])
    return sparse.csr_matrix(
        (val[:n], idx[:n].astype(np.int32), indptr), shape=(n_groups, plan.n_null)
    )


def ale_values(ma: Any) -> np.ndarray:
    """ALE of modelled-activation rows, ``1 - prod(1 - MA)`` over experiments (float32).

    The logarithms are taken of the float32 MA values and summed experiment by experiment
    in float64, as NiMARE's ``ALE`` does for its observed map.
    """
    ma = ma.tocsr()
    log_sums = np.bincount(ma.indices, weights=np.log1p(-ma.data), minlength=ma.shape[1])
    return np.asarray(1.0 - np.exp(log_sums), dtype=np.float32)


def observed_ma(estimator: Any, plan: NullPlan) -> tuple[Any, list[str]]:
    """The fitted estimator's observed foci as MA rows, in NiMARE's experiment order.

    NiMARE orders the experiments by identifier (``np.unique``) when it builds MA maps and
    sums them in that order; the rows are returned in that order with their identifiers.
    """
    coords = estimator.inputs_["coordinates"]
    ijk = coords[["i", "j", "k"]].to_numpy(dtype=np.int64)
    ids = np.asarray(coords["id"].to_numpy(), dtype=str)[plan.offsets[:-1]]
    order = np.argsort(ids, kind="stable")
    ma = ma_maps(plan, ijk)
    return ma[order], [str(i) for i in ids[order]]
