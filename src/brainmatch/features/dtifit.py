"""Diffusion tensor fitting, as DIPY's ``TensorModel`` fits it, for region summaries.

Numerically this is DIPY's model (``dipy.reconst.dti``): the design matrix of
``design_matrix(gtab)`` (columns Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, log S0), signals clipped
below at DIPY's ``MIN_POSITIVE_SIGNAL`` (1e-4), ordinary least squares on the log
signal, and for ``WLS`` (DIPY's default) a second, weighted fit with weights equal to the
squared signal predicted by the OLS fit (Chung et al. 2006); eigenvalues clipped below at
``1e-6 / -design_matrix.min()`` as DIPY clips them; FA, MD, AD, RD as
``dipy.reconst.dti`` defines them.  The tests check it against DIPY on DIPY's own
samples and on an analytic tensor.

What differs is how, for speed (``benchmarks/bench_dti.py``):

- voxels are fitted only where a summary needs them (brain mask and atlas or tract
  regions), in chunks, so memory is the masked signals (float32 for integer data) plus
  one chunk's work arrays;
- the weighted normal equations of all voxels of a chunk are formed with two matrix
  products (the 28 distinct entries of ``X' W X`` as ``W @ (x_i x_j)``), equilibrated,
  and solved by a batched Cholesky factorisation, instead of one pseudo-inverse (SVD)
  per voxel;
- FA / MD / AD / RD need only the eigenvalues, which come in closed form (the
  trigonometric solution of the characteristic cubic of a symmetric 3 x 3 matrix)
  instead of a batched ``eigh`` with eigenvectors.

This module imports numpy, nibabel (through :mod:`~brainmatch.features.niftistream`) and
brainmatch's ``errors`` only: it runs inside the lean worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainmatch.errors import BrainmatchInputError

#: DIPY's ``dipy.reconst.dti.MIN_POSITIVE_SIGNAL``.
MIN_POSITIVE_SIGNAL = 1e-4
#: Voxels fitted at a time (work arrays ~ 30 x chunk x n_volumes x 8 bytes at most).
CHUNK = 8192
SCALARS = ("fa", "md", "ad", "rd")


def design_matrix(bvals: np.ndarray, bvecs: np.ndarray) -> np.ndarray:
    """DIPY's tensor design matrix (n_volumes x 7), ``-B`` with a column of ones."""
    b = np.asarray(bvals, dtype=np.float64)
    g = np.asarray(bvecs, dtype=np.float64)
    out = np.zeros((len(b), 7))
    out[:, 0] = g[:, 0] * g[:, 0] * 1.0 * b
    out[:, 1] = g[:, 0] * g[:, 1] * 2.0 * b
    out[:, 2] = g[:, 1] * g[:, 1] * 1.0 * b
    out[:, 3] = g[:, 0] * g[:, 2] * 2.0 * b
    out[:, 4] = g[:, 1] * g[:, 2] * 2.0 * b
    out[:, 5] = g[:, 2] * g[:, 2] * 1.0 * b
    out[:, 6] = np.ones(len(b))
    return -out


def check_gradients(
    bvals: np.ndarray,
    bvecs: np.ndarray,
    n_volumes: int,
    b0_threshold: float = 50.0,
    path: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a gradient table against a DWI; returns ``(bvals, bvecs (n, 3))``.

    Raises
    ------
    BrainmatchInputError
        Counts that do not match the volumes, negative or non-finite b-values, no b0
        volume, non-unit gradient directions, or too few directions for a tensor.
    """
    bvals = np.asarray(bvals, dtype=np.float64).ravel()
    bvecs = np.asarray(bvecs, dtype=np.float64)
    if bvecs.ndim != 2 or 3 not in bvecs.shape:
        raise BrainmatchInputError(
            f"b-vectors must be a 3 x N table, got shape {bvecs.shape}", path
        )
    if bvecs.shape[0] == 3 and bvecs.shape[1] != 3:
        bvecs = bvecs.T
    elif bvecs.shape[0] == 3 and bvecs.shape[1] == 3 and len(bvals) == 3:
        bvecs = bvecs.T  # FSL orientation (3 rows) when ambiguous
    if len(bvals) != n_volumes or len(bvecs) != n_volumes:
        raise BrainmatchInputError(
            f"gradient table does not match the DWI: {len(bvals)} b-values and "
            f"{len(bvecs)} b-vectors for {n_volumes} volumes",
            path,
        )
    if not np.all(np.isfinite(bvals)):
        raise BrainmatchInputError("gradient table holds non-finite b-values", path)
    if np.any(bvals < 0):
        raise BrainmatchInputError(f"negative b-value {bvals.min():g} in the gradient table", path)
    b0 = bvals <= b0_threshold
    if not b0.any():
        raise BrainmatchInputError(
            f"no b0 volume: every b-value is above {b0_threshold:g} s/mm^2 (smallest "
            f"{bvals.min():g}); a tensor fit needs the unweighted signal",
            path,
        )
    # as DIPY's gradient_table: NaN vector entries (b0 rows) read as 0; weighted
    # directions must be unit vectors; a row whose vector is not unit (a b0) gets b = 0
    bvecs = np.where(np.isnan(bvecs), 0.0, bvecs)
    norms = np.linalg.norm(bvecs, axis=1)
    unit = np.abs(norms - 1) <= 1e-2
    bad = np.flatnonzero(~unit & ~b0)
    if bad.size:
        raise BrainmatchInputError(
            f"b-vector {int(bad[0])} (b = {bvals[bad[0]]:g}) has length {norms[bad[0]]:.3g}; "
            "diffusion-weighted directions must be unit vectors",
            path,
        )
    bvecs = np.where(unit[:, None], bvecs, 0.0)
    bvals = bvals * unit
    if np.linalg.matrix_rank(design_matrix(bvals, bvecs)) < 7:
        raise BrainmatchInputError(
            f"the gradient table ({int((~b0).sum())} weighted directions) cannot determine a "
            "diffusion tensor: at least 6 non-collinear directions are needed",
            path,
        )
    return bvals, bvecs


def _pairs() -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(7)
    return i, j


def fit_lower_triangular(
    design: np.ndarray, data: np.ndarray, method: str = "WLS", min_signal: float | None = None
) -> np.ndarray:
    """Tensor coefficients (n x 7: Dxx, Dxy, Dyy, Dxz, Dyz, Dzz, log S0) of ``data`` (n x g).

    Equal to DIPY's ``ols_fit_tensor`` / ``wls_fit_tensor(..., return_lower_triangular=True)``
    on ``np.maximum(data, min_signal)``.
    """
    y = np.maximum(np.asarray(data, dtype=np.float64), min_signal or MIN_POSITIVE_SIGNAL)
    log_s = np.log(y)
    pinv = np.linalg.pinv(design)
    beta = log_s @ pinv.T
    if method == "OLS":
        return beta
    # weights: the squared OLS prediction of the signal; each voxel's weights are divided
    # by their largest value (a per-voxel constant: the solution is unchanged), columns
    # of the design by their norms (equilibration: the solution is rescaled back)
    log_w = beta @ design.T
    log_w -= log_w.max(axis=1, keepdims=True)
    w2 = np.exp(2.0 * log_w)
    scale = np.sqrt((design**2).sum(axis=0))
    xs = design / scale
    i, j = _pairs()
    gram = w2 @ (xs[:, i] * xs[:, j])  # n x 28
    a = np.empty((len(y), 7, 7))
    a[:, i, j] = gram
    a[:, j, i] = gram
    rhs = (w2 * log_s) @ xs
    try:
        chol = np.linalg.cholesky(a)
        z = _tri_solve(chol, rhs, lower=True)
        sol = _tri_solve(chol, z, lower=False)
    except np.linalg.LinAlgError:  # a degenerate voxel: solve them all the slow way
        sol = np.stack([np.linalg.lstsq(a[k], rhs[k], rcond=None)[0] for k in range(len(a))])
    return sol / scale


def _tri_solve(chol: np.ndarray, rhs: np.ndarray, lower: bool) -> np.ndarray:
    """Solve ``L x = b`` (lower) or ``L' x = b`` (upper) for a batch of 7 x 7 factors."""
    n = chol.shape[1]
    x = np.empty_like(rhs)
    if lower:
        for k in range(n):
            x[:, k] = (rhs[:, k] - np.einsum("ij,ij->i", chol[:, k, :k], x[:, :k])) / chol[:, k, k]
    else:
        for k in range(n - 1, -1, -1):
            x[:, k] = (
                rhs[:, k] - np.einsum("ij,ij->i", chol[:, k + 1 :, k], x[:, k + 1 :])
            ) / chol[:, k, k]
    return x


def eigenvalues(lt: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending, n x 3) of tensors given as (Dxx, Dxy, Dyy, Dxz, Dyz, Dzz).

    Closed form for symmetric 3 x 3 matrices (trigonometric solution of the cubic);
    LAPACK (``eigvalsh``) for the few tensors with two nearly equal eigenvalues.
    """
    dxx, dxy, dyy, dxz, dyz, dzz = (lt[:, k] for k in range(6))
    q = (dxx + dyy + dzz) / 3.0
    p1 = dxy * dxy + dxz * dxz + dyz * dyz
    axx, ayy, azz = dxx - q, dyy - q, dzz - q
    p2 = axx * axx + ayy * ayy + azz * azz + 2.0 * p1
    p = np.sqrt(p2 / 6.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(p > 0, 1.0 / p, 0.0)
    bxx, byy, bzz, bxy, bxz, byz = axx * inv, ayy * inv, azz * inv, dxy * inv, dxz * inv, dyz * inv
    det = (
        bxx * (byy * bzz - byz * byz)
        - bxy * (bxy * bzz - byz * bxz)
        + bxz * (bxy * byz - byy * bxz)
    )
    r = np.clip(det / 2.0, -1.0, 1.0)
    phi = np.arccos(r) / 3.0
    e1 = q + 2.0 * p * np.cos(phi)
    e3 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    e2 = 3.0 * q - e1 - e3
    out = np.stack([e1, e2, e3], axis=1)
    # near a double root the cubic's solution loses about half the digits; there (few
    # voxels) take LAPACK's eigenvalues instead
    size = np.abs(out).max(axis=1)
    gap = np.minimum(e1 - e2, e2 - e3)
    close = np.flatnonzero((gap < 1e-3 * size) & (p > 0))
    if close.size:
        t = np.empty((close.size, 3, 3))
        t[:, 0, 0], t[:, 1, 1], t[:, 2, 2] = dxx[close], dyy[close], dzz[close]
        t[:, 0, 1] = t[:, 1, 0] = dxy[close]
        t[:, 0, 2] = t[:, 2, 0] = dxz[close]
        t[:, 1, 2] = t[:, 2, 1] = dyz[close]
        out[close] = np.linalg.eigvalsh(t)[:, ::-1]
    return out


def scalar_maps(evals: np.ndarray) -> dict[str, np.ndarray]:
    """FA, MD, AD, RD of (clipped, descending) eigenvalues, as ``dipy.reconst.dti``."""
    ev1, ev2, ev3 = evals[:, 0], evals[:, 1], evals[:, 2]
    all_zero = (evals == 0).all(axis=1)
    fa = np.sqrt(
        0.5
        * ((ev1 - ev2) ** 2 + (ev2 - ev3) ** 2 + (ev3 - ev1) ** 2)
        / ((evals * evals).sum(axis=1) + all_zero)
    )
    return {"fa": fa, "md": evals.mean(axis=1), "ad": ev1, "rd": (ev2 + ev3) / 2.0}


def fit_scalars(
    design: np.ndarray, data: np.ndarray, method: str = "WLS"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """FA/MD/AD/RD of ``data`` (n x g) and a mask of non-positive-definite fits."""
    lt = fit_lower_triangular(design, data, method)
    ev = eigenvalues(lt)
    non_pd = ev[:, 2] <= 0
    ev = np.maximum(ev, 1e-6 / -design.min())  # DIPY's min_diffusivity
    return scalar_maps(ev), non_pd


@dataclass
class TensorSummary:
    """What a :class:`TensorJob` returns: per-atlas region sums of each scalar.

    ``sums[a][s]`` is an array (n_regions of atlas ``a``) of the sum of scalar ``s``
    over the region's fitted voxels; ``counts[a]`` the voxel counts.
    """

    sums: list[dict[str, np.ndarray]]
    counts: list[np.ndarray]
    n_fitted: int
    n_non_pd: int
    extra: dict[str, Any]


@dataclass(frozen=True)
class TensorJob:
    """Fit the tensors of one DWI in the voxels of ``voxels`` and sum scalars per region.

    Parameters
    ----------
    dwi : Path
    design : ndarray (g, 7)
        :func:`design_matrix` of the (checked) gradient table.
    voxels : ndarray of int64
        Flat (Fortran-order) indices of the voxels to fit, ascending.
    columns : list of ndarray of int32
        Per atlas, each voxel's region column (-1: in no region of that atlas).
    n_regions : list of int
    method : {"WLS", "OLS"}
    fingerprint : bool
        Hash the file while reading it (the reply's ``extra["fingerprint"]``).
    """

    dwi: Path
    design: np.ndarray
    voxels: np.ndarray
    columns: tuple[np.ndarray, ...]
    n_regions: tuple[int, ...]
    method: str = "WLS"
    fingerprint: bool = False

    def run(self) -> TensorSummary:
        """Stream the DWI, gather the voxels, fit in chunks, sum per region."""
        from brainmatch.features.lean import _fingerprint_entry, new_hash
        from brainmatch.features.niftistream import NiftiStream

        hasher = new_hash() if self.fingerprint else None
        try:
            st = self.dwi.stat()
        except OSError as exc:
            raise BrainmatchInputError(f"cannot open: {exc.strerror or exc}", self.dwi) from None
        with NiftiStream(self.dwi, hasher=hasher) as stream:
            g = self.design.shape[0]
            if stream.n_volumes != g:
                raise BrainmatchInputError(
                    f"gradient table has {g} entries for {stream.n_volumes} volumes", self.dwi
                )
            exact32 = not stream.scaled and stream.dtype.kind in "iu" and stream.dtype.itemsize <= 2
            exact32 |= not stream.scaled and stream.dtype == np.float32
            gathered = np.empty((len(self.voxels), g), dtype=np.float32 if exact32 else np.float64)
            for k, block in stream.blocks(1):
                vol = block[0].take(self.voxels)
                if stream.scaled:
                    vol = vol * stream.slope + stream.inter
                gathered[:, k] = vol
            stream.check_end()
        if not np.all(np.isfinite(gathered)):
            bad = int(np.flatnonzero(~np.isfinite(gathered).all(axis=1))[0])
            raise BrainmatchInputError(
                f"non-finite values in the DWI (voxel {int(self.voxels[bad])} of the fitted "
                "region voxels)",
                self.dwi,
            )
        sums = [{s: np.zeros(n) for s in SCALARS} for n in self.n_regions]
        counts = [np.zeros(n, dtype=np.int64) for n in self.n_regions]
        n_non_pd = 0
        for start in range(0, len(self.voxels), CHUNK):
            stop = min(start + CHUNK, len(self.voxels))
            maps, non_pd = fit_scalars(self.design, gathered[start:stop], self.method)
            n_non_pd += int(non_pd.sum())
            for a, cols in enumerate(self.columns):
                c = cols[start:stop]
                keep = c >= 0
                cc = c[keep]
                counts[a] += np.bincount(cc, minlength=self.n_regions[a])
                for s in SCALARS:
                    sums[a][s] += np.bincount(
                        cc, weights=maps[s][keep], minlength=self.n_regions[a]
                    )
        extra: dict[str, Any] = {}
        if hasher is not None:
            extra["fingerprint"] = _fingerprint_entry(self.dwi, st, hasher.hexdigest())
        return TensorSummary(sums, counts, len(self.voxels), n_non_pd, extra)


__all__ = [
    "MIN_POSITIVE_SIGNAL",
    "SCALARS",
    "TensorJob",
    "TensorSummary",
    "check_gradients",
    "design_matrix",
    "eigenvalues",
    "fit_lower_triangular",
    "fit_scalars",
    "scalar_maps",
]
