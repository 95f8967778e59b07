"""ALE subtraction (contrast of two sets of experiments) on brainmatch's compiled engine.

NiMARE's ``ALESubtraction`` (Laird et al. 2005; Eickhoff et al. 2012) permutes which set
each experiment belongs to, ``n_iters`` times; for every permutation it computes both
sets' ALE maps and their difference over the whole mask, counts at every voxel how often
the permuted difference reaches the observed one (two-sided uncorrected p), keeps the
largest absolute difference (voxel-level FWE) and, for cluster-level FWE, writes every
permutation's map to a disk-backed array (``n_iters`` x 228,483 float32: 4.6 GB at 5,000
permutations), takes the ``1 - voxel_thresh`` quantile of all its absolute values as the
cluster-forming threshold and labels each permutation's map over the full grid.

This module computes the same numbers from the same permutations with less work:

- the modelled-activation rows of every experiment are built once
  (:func:`brainmatch.evidence.ale_engine.ma_maps`) and their logarithms tabulated; a
  permutation adds rows into two accumulators restricted to the voxels any experiment
  reaches (elsewhere both ALE values are 0 in every permutation), in NiMARE's order, so
  the sums are NiMARE's;
- tail counts, the largest absolute difference and the candidates for the cluster-forming
  threshold are taken in one compiled pass over each batch of permutations; the
  threshold (an exact quantile of ``n_iters`` x ``n_voxels`` values) is found without
  storing them: only values that can still be among the top ``(1 - q)`` share are kept
  (a running lower bound that rises as permutations arrive), tens of MB instead of
  gigabytes;
- clusters of each permutation are labelled among its supra-threshold voxels only
  (union-find, face connectivity, positive and negative differences apart, as NiMARE's
  ``_calculate_cluster_measures`` with ``tail="two"``).

The permutations are NiMARE's own (its seed stream ``alesubtraction_permutations`` and
``Generator.shuffle``) and the exponentials NumPy's, as in NiMARE, so with the same
``random_state`` the nulls, the threshold and the maps equal NiMARE's value for value;
with other seeds they agree in distribution (tests: Kolmogorov-Smirnov against NiMARE).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit
from scipy import ndimage

from brainmatch.evidence.ale_engine import _stream_key

__all__ = [
    "SubtractionNull",
    "SubtractionPlan",
    "permutations",
    "run_subtraction",
    "subtraction_maps",
    "subtraction_plan",
]

#: NiMARE's stream name for the label permutations of ``ALESubtraction``.
PERMUTATION_STREAM = "alesubtraction_permutations"


@dataclass(frozen=True)
class SubtractionPlan:
    """The two sets' modelled activation, fixed for the run.

    Attributes
    ----------
    shape : tuple of int
        Grid shape.
    mask_flat : ndarray of int64, shape (n_mask,)
        Flat grid index of each mask voxel (C order, the masker's order).
    n1 : int
        Experiments in the first set (rows ``0 .. n1 - 1``; the second set follows).
    indptr : ndarray of int64, shape (n_total + 1,)
        Row boundaries of the experiments' MA entries.
    cols : ndarray of int64
        Each entry's position among the ``support`` voxels.
    logs : ndarray of float64
        ``log1p(-MA)`` of each entry (taken in float32, as NiMARE).
    support : ndarray of int64
        Mask voxels reached by at least one experiment (elsewhere every difference is 0).
    stat1, stat2 : ndarray of float32, shape (n_mask,)
        Observed ALE of each set.
    """

    shape: tuple[int, int, int]
    mask_flat: np.ndarray
    n1: int
    indptr: np.ndarray
    cols: np.ndarray
    logs: np.ndarray
    support: np.ndarray
    stat1: np.ndarray
    stat2: np.ndarray

    @property
    def n_total(self) -> int:
        """Experiments in both sets."""
        return int(self.indptr.shape[0] - 1)

    @property
    def n_mask(self) -> int:
        """Mask voxels."""
        return int(self.mask_flat.shape[0])

    @property
    def diff(self) -> np.ndarray:
        """Observed ALE difference (first set minus second), float32 over the mask."""
        return np.asarray(self.stat1 - self.stat2, dtype=np.float32)


@dataclass
class SubtractionNull:
    """Outcome of the permutations (NiMARE's ``null_distributions_`` and tail counts).

    Attributes
    ----------
    max_abs : ndarray of float32
        Largest absolute difference of each permutation (voxel-level FWE).
    max_size, max_mass : ndarray of float32
        Largest cluster (voxels) and cluster mass of each permutation, positive and
        negative differences apart (cluster-level FWE).
    threshold : float
        Cluster-forming threshold on the absolute difference: the ``1 - voxel_thresh``
        quantile of all permutations' absolute differences over the mask.
    upper, lower : ndarray of int64, shape (n_mask,)
        Permutations whose difference is >= / <= the observed one.
    n_iters : int
    """

    max_abs: np.ndarray
    max_size: np.ndarray
    max_mass: np.ndarray
    threshold: float
    upper: np.ndarray
    lower: np.ndarray
    n_iters: int


# --------------------------------------------------------------------------- plan


def subtraction_plan(ma1: Any, ma2: Any, mask3d: np.ndarray) -> SubtractionPlan:
    """Build the plan from the two sets' MA rows (``scipy.sparse`` CSR, float32).

    Parameters
    ----------
    ma1, ma2 : scipy.sparse.csr_matrix, shape (n_experiments, n_mask)
        Rows in NiMARE's order (experiment identifiers sorted), columns the mask voxels
        (e.g. :func:`brainmatch.evidence.ale_engine.observed_ma`).
    mask3d : ndarray of bool
        The analysis mask.
    """
    from scipy import sparse

    from brainmatch.evidence.ale_engine import ale_values

    both = sparse.vstack([ma1.tocsr(), ma2.tocsr()]).tocsr()
    both.sort_indices()
    support = np.unique(both.indices).astype(np.int64)
    position = np.full(both.shape[1], -1, dtype=np.int64)
    position[support] = np.arange(support.shape[0], dtype=np.int64)
    data32 = np.asarray(both.data, dtype=np.float32)
    return SubtractionPlan(
        shape=(int(mask3d.shape[0]), int(mask3d.shape[1]), int(mask3d.shape[2])),
        mask_flat=np.flatnonzero(np.asarray(mask3d).ravel()).astype(np.int64),
        n1=int(ma1.shape[0]),
        indptr=np.asarray(both.indptr, dtype=np.int64),
        cols=np.ascontiguousarray(position[both.indices]),
        logs=np.ascontiguousarray(np.log1p(-data32).astype(np.float64)),
        support=support,
        stat1=ale_values(ma1),
        stat2=ale_values(ma2),
    )


def permutations(random_state: int, n_total: int, n_iters: int) -> np.ndarray:
    """NiMARE's group permutations: one ``SeedSequence`` child per permutation (stream
    ``alesubtraction_permutations``), each shuffling ``arange(n_total)``; the first
    ``n1`` entries form the first set.

    Returns
    -------
    ndarray of int64, shape (n_iters, n_total)
    """
    seq = np.random.SeedSequence([int(random_state) % 2**64, _stream_key(PERMUTATION_STREAM)])
    out = np.empty((n_iters, n_total), dtype=np.int64)
    for i, child in enumerate(seq.spawn(n_iters)):
        idx = np.arange(n_total)
        np.random.default_rng(child).shuffle(idx)
        out[i] = idx
    return out


# --------------------------------------------------------------------------- compiled core


@njit(cache=True, nogil=True)
def _add_rows(
    perm: np.ndarray,
    lo: int,
    hi: int,
    n1: int,
    indptr: np.ndarray,
    cols: np.ndarray,
    logs: np.ndarray,
    acc: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Add the rows ``perm[lo:hi]``: those of the first set first, then the second's,
    each in permutation order (NiMARE's summation order)."""
    for first in (True, False):
        for t in range(lo, hi):
            r = perm[t]
            if (r < n1) != first:
                continue
            for e in range(indptr[r], indptr[r + 1]):
                acc[cols[e]] += logs[e]


@njit(cache=True, nogil=True)
def _accumulate(
    perms: np.ndarray,
    it0: int,
    n1: int,
    indptr: np.ndarray,
    cols: np.ndarray,
    logs: np.ndarray,
    acc1: np.ndarray,
    acc2: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Log-sums of both permuted sets for permutations ``it0 .. it0 + len(acc1) - 1``."""
    n_total = perms.shape[1]
    for b in range(acc1.shape[0]):
        perm = perms[it0 + b]
        acc1[b, :] = 0.0
        acc2[b, :] = 0.0
        _add_rows(perm, 0, n1, n1, indptr, cols, logs, acc1[b])
        _add_rows(perm, n1, n_total, n1, indptr, cols, logs, acc2[b])


@njit(cache=True, nogil=True)
def _tally(
    exp1: np.ndarray,
    exp2: np.ndarray,
    it0: int,
    observed: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
    out_max: np.ndarray,
    bound: float,
    cand_it: np.ndarray,
    cand_vox: np.ndarray,
    cand_val: np.ndarray,
    n_cand: int,
) -> int:  # pragma: no cover - compiled
    """Differences ``(1 - exp1) - (1 - exp2)`` of a batch of permutations: tail counts
    against the observed difference, the largest absolute difference, and the candidates
    for the cluster-forming threshold (``|d| >= bound``).  Returns the candidates stored."""
    n_sup = exp1.shape[1]
    for b in range(exp1.shape[0]):
        it = it0 + b
        best = 0.0
        for s in range(n_sup):
            d = (1.0 - exp1[b, s]) - (1.0 - exp2[b, s])
            ad = abs(d)
            if ad > best:
                best = ad
            o = np.float64(observed[s])
            if d >= o:
                upper[s] += 1
            if d <= o:
                lower[s] += 1
            d32 = np.float32(d)
            a32 = abs(d32)
            if a32 > 0 and a32 >= bound:
                cand_it[n_cand] = it
                cand_vox[n_cand] = s
                cand_val[n_cand] = d32
                n_cand += 1
        out_max[it] = best
    return n_cand


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, a: int) -> int:  # pragma: no cover - compiled
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True, nogil=True)
def _cluster_null(
    starts: np.ndarray,
    iters: np.ndarray,
    flat: np.ndarray,
    vals: np.ndarray,
    threshold32: np.float32,
    nx: int,
    ny: int,
    nz: int,
    labels: np.ndarray,
    parent: np.ndarray,
    size: np.ndarray,
    mass: np.ndarray,
    out_size: np.ndarray,
    out_mass: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Largest cluster size and mass of each permutation from its supra-threshold voxels
    (sorted by permutation, then flat index); clusters hold voxels of one sign, joined
    through faces."""
    sy = nz
    sx = ny * nz
    for g in range(starts.shape[0] - 1):
        a = starts[g]
        b = starts[g + 1]
        for t in range(a, b):
            labels[flat[t]] = t - a + 1
            parent[t - a] = t - a
        for t in range(a, b):
            f = flat[t]
            positive = vals[t] > 0
            k = f % nz
            j = (f // sy) % ny
            i = f // sx
            for nb, ok in ((f - 1, k > 0), (f - sy, j > 0), (f - sx, i > 0)):
                if not ok:
                    continue
                u = labels[nb]
                if u > 0 and (vals[a + u - 1] > 0) == positive:
                    r1 = _find(parent, t - a)
                    r2 = _find(parent, u - 1)
                    if r1 != r2:
                        parent[max(r1, r2)] = min(r1, r2)
        for t in range(b - a):
            size[t] = 0
            mass[t] = 0.0
        for t in range(a, b):
            r = _find(parent, t - a)
            size[r] += 1
            mass[r] += np.float64(np.float32(abs(vals[t])) - threshold32)
            labels[flat[t]] = 0
        best_size = 0
        best_mass = 0.0
        for t in range(b - a):
            if size[t] > best_size:
                best_size = size[t]
            if mass[t] > best_mass:
                best_mass = mass[t]
        out_size[iters[g]] = np.float32(best_size)
        out_mass[iters[g]] = np.float32(best_mass)


# --------------------------------------------------------------------------- running


class _Store:
    """One thread's accumulators, tail counts and candidate store."""

    def __init__(self, plan: SubtractionPlan, keep: int, batch: int) -> None:
        n_sup = int(plan.support.shape[0])
        self.keep = keep
        self.batch = batch
        self.acc1 = np.zeros((batch, n_sup), dtype=np.float64)
        self.acc2 = np.zeros((batch, n_sup), dtype=np.float64)
        self.upper = np.zeros(n_sup, dtype=np.int64)
        self.lower = np.zeros(n_sup, dtype=np.int64)
        cap = max(2 * keep, 4 * n_sup) + batch * n_sup
        self.cand_it = np.zeros(cap, dtype=np.int32)
        self.cand_vox = np.zeros(cap, dtype=np.int32)
        self.cand_val = np.zeros(cap, dtype=np.float32)
        self.n = 0
        self.bound = 0.0

    def prune(self, room: int) -> None:
        """Keep the candidates that can still be among the ``keep`` largest |values|,
        and make room for ``room`` more."""
        n = self.n
        if n > self.keep:
            absval = np.abs(self.cand_val[:n])
            kth = float(np.partition(absval, n - self.keep)[n - self.keep])
            sel = np.flatnonzero(absval >= kth)
            m = sel.shape[0]
            self.cand_it[:m] = self.cand_it[sel]
            self.cand_vox[:m] = self.cand_vox[sel]
            self.cand_val[:m] = self.cand_val[sel]
            self.n = m
            self.bound = max(self.bound, kth)
        if self.n + room > self.cand_val.shape[0]:
            grow = max(2 * self.cand_val.shape[0], self.n + 2 * room)
            for name in ("cand_it", "cand_vox", "cand_val"):
                old = getattr(self, name)
                new = np.zeros(grow, dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)

    def run(
        self,
        plan: SubtractionPlan,
        perms: np.ndarray,
        observed: np.ndarray,
        out_max: np.ndarray,
        lo: int,
        hi: int,
    ) -> None:
        n_sup = int(plan.support.shape[0])
        for it in range(lo, hi, self.batch):
            nb = min(self.batch, hi - it)
            acc1, acc2 = self.acc1[:nb], self.acc2[:nb]
            _accumulate(perms, it, plan.n1, plan.indptr, plan.cols, plan.logs, acc1, acc2)
            # NumPy's exp, as NiMARE's: the permuted and observed differences then tie
            # exactly where NiMARE's do (far from every focus they are equal to the bit)
            np.exp(acc1, out=acc1)
            np.exp(acc2, out=acc2)
            if self.n + nb * n_sup > self.cand_val.shape[0]:
                self.prune(nb * n_sup)
            self.n = _tally(
                acc1,
                acc2,
                it,
                observed,
                self.upper,
                self.lower,
                out_max,
                self.bound,
                self.cand_it,
                self.cand_vox,
                self.cand_val,
                self.n,
            )


def _quantile_threshold(stores: list[_Store], n_values: int, q: float) -> float:
    """``np.quantile(all |differences|, q)`` (linear) from the stored largest values.

    Every value at or above the quantile's lower neighbour is among the stored
    candidates (or is zero, never stored); the interpolation is NumPy's (``_lerp`` in the
    values' float32, the virtual index in float64).
    """
    vals = np.sort(np.abs(np.concatenate([s.cand_val[: s.n] for s in stores])))
    virtual = np.float64(n_values) * np.float64(q) + (1 + np.float64(q) * (1 - 1 - 1)) - 1
    prev = int(np.floor(virtual))
    gamma = float(virtual - prev)
    n_zero = n_values - vals.shape[0]

    def at(pos: int) -> np.float32:
        pos = min(max(pos, 0), n_values - 1)
        return np.float32(0.0) if pos < n_zero else vals[pos - n_zero]

    a, b = at(prev), at(prev + 1)
    diff_b_a = b - a
    out = a + diff_b_a * gamma
    if gamma >= 0.5:
        out = b - diff_b_a * (1 - gamma)
    return float(np.float32(out))


def run_subtraction(
    plan: SubtractionPlan,
    n_iters: int,
    random_state: int,
    *,
    voxel_thresh: float = 0.001,
    n_jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = 24,
    batch: int = 8,
) -> SubtractionNull:
    """Permutation null of the ALE difference: tail counts, voxel- and cluster-level FWE.

    Parameters
    ----------
    plan : SubtractionPlan
        From :func:`subtraction_plan`.
    n_iters : int
        Permutations.
    random_state : int
        Seed (NiMARE's permutations for this seed; see :func:`permutations`).
    voxel_thresh : float
        Cluster-forming threshold as a share of all permutation values (NiMARE's
        ``voxel_thresh``).
    n_jobs : int
        Threads (the compiled loop releases the GIL).
    progress : callable, optional
        ``progress(done, total)`` after each chunk of permutations.
    chunk_size : int
        Permutations per unit of work (and per progress update).
    batch : int
        Permutations accumulated together before NumPy takes their exponentials.

    Returns
    -------
    SubtractionNull
    """
    perms = permutations(random_state, plan.n_total, n_iters)
    n_values = n_iters * plan.n_mask
    q = 1 - voxel_thresh
    virtual = np.float64(n_values) * np.float64(q) + (1 + np.float64(q) * (1 - 1 - 1)) - 1
    keep = max(2, n_values - int(np.floor(virtual)))
    observed = np.ascontiguousarray(plan.diff[plan.support])
    out_max = np.zeros(n_iters, dtype=np.float64)
    parts = [(i, min(n_iters, i + max(1, chunk_size))) for i in range(0, n_iters, chunk_size)]
    n_jobs = max(1, min(n_jobs, len(parts)))
    stores = [_Store(plan, keep, batch) for _ in range(n_jobs)]
    lock = threading.Lock()
    done = 0
    if progress is not None:
        progress(0, n_iters)

    def work(store: _Store, mine: list[tuple[int, int]]) -> None:
        nonlocal done
        for lo, hi in mine:
            store.run(plan, perms, observed, out_max, lo, hi)
            with lock:
                done += hi - lo
                if progress is not None:
                    progress(done, n_iters)

    if n_jobs == 1:
        work(stores[0], parts)
    else:
        with ThreadPoolExecutor(max_workers=n_jobs) as ex:
            futures = [ex.submit(work, s, parts[i::n_jobs]) for i, s in enumerate(stores)]
            for fut in futures:
                fut.result()
    threshold = _quantile_threshold(stores, n_values, q)
    # clusters of each permutation among its voxels beyond the threshold
    it_all = np.concatenate([s.cand_it[: s.n] for s in stores])
    vox_all = np.concatenate([s.cand_vox[: s.n] for s in stores])
    val_all = np.concatenate([s.cand_val[: s.n] for s in stores])
    thr32 = np.float32(threshold)
    sel = np.abs(val_all) > thr32
    flat = plan.mask_flat[plan.support[vox_all[sel]]]
    order = np.lexsort((flat, it_all[sel]))
    iters_sorted = it_all[sel][order]
    flat = np.ascontiguousarray(flat[order])
    vals = np.ascontiguousarray(val_all[sel][order])
    bounds = np.flatnonzero(np.r_[True, iters_sorted[1:] != iters_sorted[:-1]])
    groups = iters_sorted[bounds] if iters_sorted.size else np.zeros(0, dtype=np.int64)
    starts = np.r_[bounds, iters_sorted.shape[0]].astype(np.int64)
    max_size = np.zeros(n_iters, dtype=np.float32)
    max_mass = np.zeros(n_iters, dtype=np.float32)
    if iters_sorted.size:
        most = int(np.diff(starts).max())
        nx, ny, nz = plan.shape
        _cluster_null(
            starts,
            np.ascontiguousarray(groups, dtype=np.int64),
            flat,
            vals,
            thr32,
            nx,
            ny,
            nz,
            np.zeros(nx * ny * nz, dtype=np.int64),
            np.zeros(most, dtype=np.int64),
            np.zeros(most, dtype=np.int64),
            np.zeros(most, dtype=np.float64),
            max_size,
            max_mass,
        )
    upper = np.full(plan.n_mask, n_iters, dtype=np.int64)
    lower = np.full(plan.n_mask, n_iters, dtype=np.int64)
    upper[plan.support] = sum(s.upper for s in stores)
    lower[plan.support] = sum(s.lower for s in stores)
    return SubtractionNull(
        max_abs=out_max.astype(np.float32),
        max_size=max_size,
        max_mass=max_mass,
        threshold=threshold,
        upper=upper,
        lower=lower,
        n_iters=n_iters,
    )


# --------------------------------------------------------------------------- maps


def subtraction_maps(plan: SubtractionPlan, null: SubtractionNull) -> dict[str, np.ndarray]:
    """The maps NiMARE's ``ALESubtraction`` and its Monte Carlo correction give (masked).

    Returns
    -------
    dict of str to ndarray of float32, shape (n_mask,)
        ``stat`` (ALE difference), ``p`` (two-sided uncorrected), ``z`` (signed),
        ``logp_voxel_fwe`` and ``logp_cluster_fwe`` (-log10 FWE p, cluster size).
    """
    from nimare.stats import null_to_p
    from nimare.transforms import p_to_z
    from nimare.utils import _p_to_logp_values

    n = null.n_iters
    smallest = 1.0 / n
    p = 2.0 * np.minimum(null.upper / n, null.lower / n)
    p = np.maximum(smallest, np.minimum(p, 1.0 - smallest)).astype(np.float32)
    sign = np.sign(null.lower - null.upper).astype(np.float32)
    z = p_to_z(p, tail="two") * sign
    stat = plan.diff
    p_vox = null_to_p(np.abs(stat), null.max_abs, tail="upper")
    grid = np.zeros(int(np.prod(plan.shape)), dtype=np.float32)
    grid[plan.mask_flat] = stat
    vol = grid.reshape(plan.shape)
    vol[np.abs(vol) <= np.float32(null.threshold)] = 0
    conn = ndimage.generate_binary_structure(3, 1)
    pos, _ = ndimage.label(vol > 0, conn)
    neg, _ = ndimage.label(vol < 0, conn)
    if pos.size:
        neg[neg > 0] += pos.max()
    labelled = (pos + neg).ravel()[plan.mask_flat]
    _, idx, sizes = np.unique(labelled, return_inverse=True, return_counts=True)
    if labelled.min() == 0:
        sizes[0] = 0
    p_size = np.asarray(null_to_p(sizes, null.max_size, tail="upper"))[idx]
    return {
        "stat": stat,
        "p": p,
        "z": np.asarray(z, dtype=np.float32),
        "logp_voxel_fwe": _p_to_logp_values(np.asarray(p_vox), dtype=np.float32),
        "logp_cluster_fwe": _p_to_logp_values(np.asarray(p_size), dtype=np.float32),
    }
