"""Region mean time series of a 4D image, streamed a piece of a volume at a time.

Equivalent to nilearn's ``img_to_signals_labels`` (``ndimage.mean`` per label: a float64
mean over the label's voxels) on a label image already on the BOLD grid, but the BOLD is
never held in memory.  Two paths give the same sums:

- the C kernel (``_regionsum.c``, built by ``setup.py``): each volume is inflated in
  pieces of 65536 voxels (256 kB of float32) and each piece's atlas voxels are summed
  while it is still in the CPU's L2 cache, as runs of consecutive voxels of one region;
  the extraction then costs ~8% on top of merely inflating the .nii.gz
  (``benchmarks/bench_extract.py``);
- numpy, when the kernel is not built: each block of volumes is read into a reused
  buffer, the atlas voxels (sorted by region) are gathered with ``take`` and summed in
  float64 with one ``np.add.reduceat`` (~25-30% on top of inflating).

While streaming it also checks the data: non-finite values in any atlas or brain-mask
voxel, and voxels inside the brain mask that never change (candidates are the voxels
equal in the first two volumes; only those are followed through the run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainmatch.errors import BrainmatchInputError
from brainmatch.features.niftistream import _READ_ERRORS, NiftiStream

try:  # the C kernel (setup.py builds it); the numpy path gives the same sums, slower
    from brainmatch.features import _regionsum
except ImportError:  # pragma: no cover - installed without a C compiler
    _regionsum = None  # type: ignore[assignment]

#: item types the kernel reads (struct codes of native-endian numpy dtypes)
_KERNEL_CODES = frozenset("fdhHiIbB")


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
    piece_voxels : int
        Voxels the C kernel path reads at a time: 65536 float32 voxels (256 kB) stay in
        the CPU's L2 cache between being inflated and being summed.  Smaller pieces cost
        more in the inflater itself: ISA-L copies the last 32 kB of every output buffer
        into its history window (``perf``: memcpy 2.6% of the run at 128 kB, 1.6% at
        256 kB).
    """

    def __init__(
        self,
        labels3d: np.ndarray,
        label_values: list[int],
        mask3d: np.ndarray | None = None,
        piece_voxels: int = 1 << 16,
    ) -> None:
        self.piece_voxels = max(1, int(piece_voxels))
        self.shape = tuple(int(s) for s in labels3d.shape)
        labels, col_all = _atlas_columns(labels3d, label_values)
        self.labels = labels
        self.n_regions = len(labels)
        in_atlas = col_all >= 0
        self.mask_flat: np.ndarray | None = None
        mflat = in_atlas
        if mask3d is not None:
            inmask = np.asarray(mask3d).ravel(order="F") > 0
            self.mask_flat = np.flatnonzero(inmask)
            mflat = inmask | in_atlas
        # for the C kernel: the same voxels in file order with their column (the extra
        # column, whose sum is NaN if one of its voxels is, holds the mask voxels outside
        # the atlas); piece_bounds[c] is the first of them in piece c of the volume
        n_vox = int(np.prod(self.shape))
        self.kernel_ok = n_vox < 2**31 and self.n_regions + 1 < 2**16
        addr = np.flatnonzero(mflat).astype(np.int64)
        column = col_all[addr]
        column[column < 0] = self.n_regions
        self.voxels = addr.astype(np.int32 if self.kernel_ok else np.int64)
        self.columns = column.astype(np.uint16 if self.kernel_ok else np.int64)
        per_column = np.bincount(column, minlength=self.n_regions + 1)
        self.n_voxels = per_column[: self.n_regions]
        self.n_columns = self.n_regions + int(per_column[self.n_regions] > 0)
        edges = np.arange(-(-n_vox // self.piece_voxels) + 1, dtype=np.int64) * self.piece_voxels
        self.piece_bounds = np.searchsorted(addr, edges)
        # float32 images: the same voxels as runs of consecutive voxels of one column, at
        # most 16 long and never across a piece boundary; run_bounds as piece_bounds
        new_run = np.ones(addr.size, dtype=bool)
        if addr.size:
            new_run[1:] = (np.diff(addr) != 1) | (np.diff(column) != 0)
            new_run[1:] |= addr[1:] % self.piece_voxels == 0
        natural = np.flatnonzero(new_run)
        length = np.diff(np.append(natural, addr.size))
        pieces = (length + 15) // 16  # cut runs longer than 16 into 16-voxel runs
        offset = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
        first = np.repeat(natural, pieces) + 16 * offset
        self.run_starts = addr[first].astype(np.int32 if self.kernel_ok else np.int64)
        self.run_lengths = np.diff(np.append(first, addr.size)).astype(np.uint8)
        self.run_columns = self.columns[first]
        self.run_bounds = np.searchsorted(addr[first], edges)
        self._index: np.ndarray | None = None
        self._starts: np.ndarray | None = None

    @property
    def index(self) -> np.ndarray:
        """The numpy path's voxel order: the atlas voxels sorted by region (file order
        within one), then the mask voxels outside the atlas (built when first used)."""
        if self._index is None:
            self._index = self.voxels[np.argsort(self.columns, kind="stable")].astype(np.intp)
        return self._index

    @property
    def starts(self) -> np.ndarray:
        """Where each column's voxels start in :attr:`index`."""
        if self._starts is None:
            counts = np.bincount(self.columns, minlength=self.n_columns)[: self.n_columns]
            self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.intp)
        return self._starts

    def extract(
        self, path: str | Path, volumes_per_block: int = 1, hasher: Any = None
    ) -> RegionSignals:
        """Stream ``path`` and return its region means.

        ``volumes_per_block`` is the block size of the numpy path (used when the C
        kernel is not built or cannot read the image's data type).  ``hasher`` (a
        ``hashlib`` object) is fed every byte of the file as it is read.

        Raises
        ------
        BrainmatchInputError
            Unreadable or truncated file, a grid that differs from the plan's, or
            non-finite values inside the atlas or brain mask.
        """
        with NiftiStream(path, hasher=hasher) as stream:
            if stream.shape != self.shape:
                raise BrainmatchInputError(
                    f"BOLD grid {stream.shape} differs from the grid the atlas was resampled "
                    f"to {self.shape}",
                    path,
                )
            t_n = stream.n_volumes
            out = np.zeros((t_n, self.n_columns))
            code = stream.dtype.newbyteorder("=").char
            check = _ConstantCheck(self.mask_flat)
            if _regionsum is not None and code in _KERNEL_CODES and self.kernel_ok:
                self._kernel_sums(stream, code, out, check)
            else:
                k = max(1, min(volumes_per_block, t_n))
                gathered = np.empty((k, self.index.size), dtype=stream.dtype.newbyteorder("="))
                for t0, block in stream.blocks(k):
                    if self.index.size:
                        g = np.take(block, self.index, axis=1, out=gathered[: len(block)])
                        out[t0 : t0 + len(block)] = np.add.reduceat(
                            g, self.starts, axis=1, dtype=np.float64
                        )
                    check.update(block)
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
        const = np.zeros(0, dtype=np.int64)
        if t_n > 1:
            const = check.constant()
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
            extra={"constant_index": np.asarray(const, dtype=np.int64)},
        )

    def _kernel_sums(
        self, stream: NiftiStream, code: str, out: np.ndarray, check: _ConstantCheck
    ) -> None:
        """Fill ``out`` (volumes x columns) with the C kernel, piece by piece."""
        assert _regionsum is not None
        p = self.piece_voxels
        runs = (self.run_starts, self.run_lengths, self.run_columns)
        rb, pb = self.run_bounds, self.piece_bounds
        if code != "f" or not stream.dtype.isnative:
            for t, first, stop, vol in stream.pieces(p):
                c = first // p
                if code == "f":
                    _regionsum.run_sums(vol, *runs, rb[c], rb[c + 1], out[t])
                else:
                    vox, cols = self.voxels, self.columns
                    _regionsum.region_sums(vol, code, vox, cols, pb[c], pb[c + 1], out[t])
                if stop == stream.n_voxels:
                    check.update_volume(vol)
            return
        # native float32 (what fMRIPrep writes): the kernel also drives the reads
        reader = stream.piece_reader(p)
        read_volume = _regionsum.volume_run_sums
        n_pieces = len(reader.views)
        for t in range(stream.volumes_read, stream.n_volumes):
            try:
                c, got = read_volume(reader.readinto, reader.views, reader.data, *runs, rb, out[t])
            except _READ_ERRORS as exc:
                raise reader.error(exc) from None
            for piece in range(c, n_pieces):  # after a short read: finish the volume here
                reader.read(t, piece, got)
                got = 0
                _regionsum.run_sums(reader.data, *runs, rb[piece], rb[piece + 1], out[t])
            stream.volumes_read = t + 1
            check.update_volume(reader.data)


class _ConstantCheck:
    """Find brain-mask voxels whose value never changes, one block of volumes at a time.

    Candidates are the voxels equal in the first two volumes; each later volume drops
    the candidates that changed, so after a few volumes only truly constant voxels (if
    any) are still followed.
    """

    def __init__(self, mask_flat: np.ndarray | None) -> None:
        self.mask_flat = mask_flat
        self.first: np.ndarray | None = None
        self.cand: np.ndarray | None = None
        self.ref: np.ndarray | None = None

    def update(self, block: np.ndarray) -> None:
        if self.mask_flat is None:
            return
        if self.cand is None:
            if self.first is None:
                self.first = block[0].take(self.mask_flat)
                block = block[1:]
                if not len(block):
                    return
            same = self.first == block[0].take(self.mask_flat)
            self.cand, self.ref = self.mask_flat[same], self.first[same]
            self.first = None  # no longer needed
            block = block[1:]
        assert self.ref is not None
        if self.cand.size and len(block):
            same = (block.take(self.cand, axis=1) == self.ref).all(axis=0)
            self.cand, self.ref = self.cand[same], self.ref[same]

    def update_volume(self, vol: np.ndarray) -> None:
        """:meth:`update` with one volume (1D), with less overhead."""
        if self.cand is not None and self.ref is not None:
            if self.cand.size:
                same = vol.take(self.cand) == self.ref
                if not same.all():
                    self.cand, self.ref = self.cand[same], self.ref[same]
        else:
            self.update(vol[None, :])

    def constant(self) -> np.ndarray:
        """Flat indices of the voxels that never changed (empty before two volumes)."""
        if self.cand is None:
            return np.zeros(0, dtype=np.intp)
        return self.cand


#: atlas layouts of recent label images (key: the array's id, checked by a weak reference)
_LAYOUTS: dict[int, tuple[Any, tuple[int, ...], list[int], np.ndarray]] = {}


def _atlas_columns(labels3d: np.ndarray, label_values: Any) -> tuple[list[int], np.ndarray]:
    """The labels present on the grid (ascending) and each voxel's column (file order,
    -1 outside the atlas).  Cached for the label image last used (``resample_atlas``
    returns the same array for every run on one grid); label images are not modified."""
    import weakref

    values = tuple(sorted(set(int(v) for v in label_values)))
    hit = _LAYOUTS.get(id(labels3d))
    if hit is not None and hit[0]() is labels3d and hit[1] == values:
        return hit[2], hit[3]
    flat = np.asarray(labels3d).ravel(order="F")
    vals = np.asarray(values, dtype=np.int64)
    col_all = _columns_of(flat, vals)  # index into values, -1 outside the atlas
    present = np.bincount(col_all[col_all >= 0], minlength=vals.size) > 0
    labels = [int(v) for v in vals[present]]
    if not present.all():  # renumber the columns of the labels present
        renumber = np.where(present, np.cumsum(present) - 1, -1).astype(np.int32)
        col_all = np.where(col_all >= 0, renumber[np.maximum(col_all, 0)], -1)
    try:
        ref = weakref.ref(labels3d)
    except TypeError:  # pragma: no cover - not a numpy array
        return labels, col_all
    _LAYOUTS.clear()
    _LAYOUTS[id(labels3d)] = (ref, values, labels, col_all)
    return labels, col_all


def _columns_of(flat: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each voxel's label in ``values`` (sorted), or -1 where it is not there."""
    if flat.size == 0 or values.size == 0:
        return np.full(flat.shape, -1, dtype=np.int32)
    if flat.dtype.kind in "iu" and int(flat.min()) >= 0 and int(flat.max()) < 1 << 24:
        top = int(flat.max())
        lut = np.full(top + 1, -1, dtype=np.int32)
        keep = (values >= 0) & (values <= top)
        lut[values[keep]] = np.flatnonzero(keep)
        return lut[flat]
    pos = np.minimum(np.searchsorted(values, flat), values.size - 1)
    return np.where(values[pos] == flat, pos, -1).astype(np.int32)
