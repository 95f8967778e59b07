"""Region mean time series of a 4D image, streamed one block of volumes at a time.

Equivalent to nilearn's ``img_to_signals_labels`` (``ndimage.mean`` per label: a float64
mean over the label's voxels) on a label image already on the BOLD grid, but the BOLD is
never held in memory: each block of ``k`` volumes is decompressed into a reused buffer,
the voxels of the atlas (sorted by region, so each region is one contiguous run) are
gathered, and the runs are summed in float64 with one ``np.add.reduceat``.

While streaming it also checks the data: non-finite values in any atlas or brain-mask
voxel, and voxels inside the brain mask that never change (candidates are the voxels
equal in the first two volumes; only those are followed through the run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainmatch.errors import BrainmatchInputError
from brainmatch.features.niftistream import NiftiStream


@dataclass
class RegionSignals:
    """Region means of one run.

    Attributes
    ----------
    signals : ndarray (n_volumes, n_regions), float64
    labels : list of int
        Label value of each column (the atlas labels with at least one voxel on this grid).
    n_voxels : ndarray of int
        Voxels per region.
    constant_voxels : int
        Voxels inside the brain mask whose value never changes.
    first_constant : tuple of int or None
        (i, j, k) of one such voxel.
    tr : float or None
        Repetition time from the image header.
    """

    signals: np.ndarray
    labels: list[int]
    n_voxels: np.ndarray
    constant_voxels: int = 0
    first_constant: tuple[int, int, int] | None = None
    tr: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


class RegionPlan:
    """Which voxels to read and how they group into regions, for one grid.

    Parameters
    ----------
    labels3d : ndarray of int, 3D
        Atlas labels on the BOLD grid (0 = background).
    label_values : sequence of int
        Atlas labels; columns come in ascending label order and values absent from the
        image are dropped (both as nilearn does).
    mask3d : ndarray of bool, 3D, optional
        Brain mask; its voxels are checked for NaN and constant values.
    """

    def __init__(
        self, labels3d: np.ndarray, label_values: list[int], mask3d: np.ndarray | None = None
    ) -> None:
        self.shape = tuple(int(s) for s in labels3d.shape)
        flat = np.asarray(labels3d).ravel(order="F")
        # ascending label values: the column order of nilearn's maskers
        values = np.asarray(sorted(set(int(v) for v in label_values)), dtype=np.int64)
        present = np.isin(values, flat)
        self.labels = [int(v) for v in values[present]]
        # column of each label value; voxels of other labels are ignored
        lookup = {v: i for i, v in enumerate(self.labels)}
        in_atlas = np.isin(flat, values[present])
        vox = np.flatnonzero(in_atlas)
        cols = (
            np.fromiter((lookup[int(x)] for x in flat[vox]), dtype=np.int64, count=vox.size)
            if vox.size < 1000
            else _map_columns(flat[vox], np.asarray(self.labels))
        )
        order = np.argsort(cols, kind="stable")
        vox, cols = vox[order], cols[order]
        self.n_voxels = np.bincount(cols, minlength=len(self.labels))
        starts = np.concatenate([[0], np.cumsum(self.n_voxels)[:-1]]).astype(np.intp)
        extra = np.zeros(0, dtype=np.intp)
        self.mask_flat: np.ndarray | None = None
        if mask3d is not None:
            mflat = np.asarray(mask3d).ravel(order="F") > 0
            self.mask_flat = np.flatnonzero(mflat)
            extra = np.flatnonzero(mflat & ~in_atlas)
        self.index = np.concatenate([vox, extra]).astype(np.intp)
        self.starts = starts if extra.size == 0 else np.concatenate([starts, [vox.size]])
        self.n_regions = len(self.labels)

    def extract(self, path: str | Path, volumes_per_block: int = 4) -> RegionSignals:
        """Stream ``path`` and return its region means.

        Raises
        ------
        BrainmatchInputError
            Unreadable or truncated file, a grid that differs from the plan's, or
            non-finite values inside the atlas or brain mask.
        """
        with NiftiStream(path) as stream:
            if stream.shape != self.shape:
                raise BrainmatchInputError(
                    f"BOLD grid {stream.shape} differs from the grid the atlas was resampled "
                    f"to {self.shape}",
                    path,
                )
            t_n = stream.n_volumes
            out = np.empty((t_n, self.n_regions + (len(self.starts) > self.n_regions)))
            cand: np.ndarray | None = None
            cand_ref: np.ndarray | None = None
            changed: np.ndarray | None = None
            first: np.ndarray | None = None
            for t0, block in stream.blocks(volumes_per_block):
                g = block.take(self.index, axis=1)
                if g.size:
                    out[t0 : t0 + len(block)] = np.add.reduceat(
                        g, self.starts, axis=1, dtype=np.float64
                    )
                if self.mask_flat is not None:
                    if first is None:
                        first = block[0].take(self.mask_flat)
                        if len(block) > 1:
                            cand, cand_ref, changed = self._candidates(first, block[1])
                    elif cand is None:
                        cand, cand_ref, changed = self._candidates(first, block[0])
                    if cand is not None and cand.size:
                        vals = block.take(cand, axis=1)
                        changed |= (vals != cand_ref).any(axis=0)
            stream.check_end()
            tr = stream.tr
            slope, inter = stream.slope, stream.inter
        sums = out
        if not np.isfinite(sums).all():
            bad_t = int(np.flatnonzero(~np.isfinite(sums).all(axis=1))[0])
            raise BrainmatchInputError(
                f"NaN or infinite values inside the atlas / brain mask (first in volume "
                f"{bad_t + 1})",
                path,
            )
        signals = sums[:, : self.n_regions] / np.maximum(self.n_voxels, 1)
        if slope != 1.0 or inter != 0.0:
            signals = signals * slope + inter
        n_const, where = 0, None
        if cand is not None and changed is not None and t_n > 1:
            const = cand[~changed]
            n_const = int(const.size)
            if n_const:
                where = tuple(
                    int(i) for i in np.unravel_index(int(const[0]), self.shape, order="F")
                )
        return RegionSignals(
            signals=signals,
            labels=self.labels,
            n_voxels=self.n_voxels,
            constant_voxels=n_const,
            first_constant=where,  # type: ignore[arg-type]
            tr=tr,
        )

    def _candidates(
        self, first: np.ndarray, second_vol: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.mask_flat is not None
        second = second_vol.take(self.mask_flat)
        same = first == second
        cand = self.mask_flat[same]
        return cand, first[same], np.zeros(cand.size, dtype=bool)


def _map_columns(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    order = np.argsort(labels)
    pos = np.searchsorted(labels[order], values)
    return order[pos].astype(np.int64)
