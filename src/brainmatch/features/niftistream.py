"""Read a 4D NIfTI a block of volumes (or a piece of one) at a time, never all of it.

A NIfTI file (``.nii`` or ``.nii.gz``) is a header, optional extensions and the voxel
data in Fortran order, so the volumes of a 4D image follow each other on disk.  This
reader inflates ``.nii.gz`` with python-isal's C gzip reader (the fastest gzip reader
available here, ~2x nibabel's default) straight into a reused buffer, and hands out
either ``k`` volumes at a time as a ``(k, n_voxels)`` array whose columns are voxels in
Fortran (x fastest) order, i.e. ``image.get_fdata().reshape(-1, t, order="F").T``
(:meth:`NiftiStream.blocks`), or pieces of one volume (:meth:`NiftiStream.pieces`,
:class:`PieceReader`) small enough to stay in the CPU cache while they are used.

Every problem with the file (not a NIfTI, truncated or corrupt gzip, fewer bytes than
the header promises) is raised as :class:`~brainmatch.errors.BrainmatchInputError`
naming the file.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import nibabel as nib
import numpy as np
from isal import igzip

from brainmatch.errors import BrainmatchInputError

_GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError)

#: python-isal's C gzip reader (the raw layer under ``igzip.IGzipFile``): its
#: ``readinto`` inflates straight into the caller's buffer, where ``IGzipFile.readinto``
#: inflates into a new ``bytes`` and copies it (about 15% of the read time for a BOLD).
#: Private in python-isal, so fall back to the public class if a release drops it.
_RAW_GZIP_READER: Any = getattr(igzip, "_GzipReader", None)


def _gzip_reader(raw: IO[bytes]) -> Any:
    if _RAW_GZIP_READER is not None:
        return _RAW_GZIP_READER(raw, 1 << 19)
    return igzip.IGzipFile(fileobj=raw, mode="rb")  # pragma: no cover - older/newer isal


def _open_raw(path: Path) -> IO[bytes]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BrainmatchInputError(f"cannot open: {exc.strerror or exc}", path) from None
    return fh


class _HashingReader(io.RawIOBase):
    """A binary file whose bytes also go to a hash object as they are read."""

    def __init__(self, raw: Any, hasher: Any) -> None:
        self._file = raw
        self._hasher = hasher

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._file.readinto(b)
        if n:
            self._hasher.update(memoryview(b)[:n])
        return n or 0

    def close(self) -> None:
        self._file.close()
        super().close()


class NiftiStream:
    """Sequential reader of a NIfTI-1/2 image's volumes.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file (gzip is detected from the bytes, not the name).
    hasher : hashlib hash object, optional
        Gets every byte of the file, in order, as it is read (call :meth:`check_end`
        after the last volume to feed it the rest).

    Attributes
    ----------
    header : nibabel.Nifti1Header or nibabel.Nifti2Header
    shape : tuple of int
        Spatial shape (x, y, z).
    n_volumes : int
    affine : ndarray of shape (4, 4)
    dtype : numpy dtype
        On-disk data type (with the file's byte order).
    slope, inter : float
        Scaling to apply to stored values (1 and 0 when the header sets none).

    Notes
    -----
    Use as a context manager.  Iterate with :meth:`blocks`; the array it yields is a view
    of an internal buffer that the next block overwrites.
    """

    def __init__(self, path: str | Path, hasher: Any = None) -> None:
        self.path = Path(path)
        self._raw: Any = _open_raw(self.path)
        try:
            magic = self._raw.read(2)
            self._raw.seek(0)
            if hasher is not None:
                self._raw = _HashingReader(self._raw, hasher)
            self.compressed = magic == _GZIP_MAGIC
            self._fh: Any = _gzip_reader(self._raw) if self.compressed else self._raw
            self._read_header()
        except BaseException:
            self.close()
            raise

    # -- header ---------------------------------------------------------------------------
    def _read_exact(self, n: int, what: str) -> bytes:
        buf = bytearray(n)
        got = self._fill(memoryview(buf))
        data = bytes(buf[:got])
        if len(data) != n:
            raise BrainmatchInputError(
                f"file ends early: {what} needs {n} bytes, only {len(data)} left "
                "(truncated download or copy?)",
                self.path,
            )
        return data

    def _guard(self, func: Any) -> Any:
        try:
            return func()
        except _READ_ERRORS as exc:
            raise self._input_error(exc) from None

    def _input_error(self, exc: BaseException) -> BrainmatchInputError:
        if isinstance(exc, EOFError):
            return BrainmatchInputError(
                "gzip stream is truncated (the file ends before the compressed data does)",
                self.path,
            )
        kind = "gzip data is corrupt" if self.compressed else "cannot read"
        return BrainmatchInputError(f"{kind}: {exc}", self.path)

    def _read_header(self) -> None:
        first = self._read_exact(4, "the NIfTI header")
        size_le = int.from_bytes(first, "little")
        size_be = int.from_bytes(first, "big")
        if 348 in (size_le, size_be):
            klass: type[nib.Nifti1Header] = nib.Nifti1Header
            hdr_size = 348
        elif 540 in (size_le, size_be):
            klass = nib.Nifti2Header
            hdr_size = 540
        else:
            raise BrainmatchInputError(
                "not a NIfTI-1 or NIfTI-2 image (bad header size)", self.path
            )
        block = first + self._read_exact(hdr_size - 4, "the NIfTI header")
        try:
            header = klass.from_fileobj(io.BytesIO(block), check=True)
        except Exception as exc:
            raise BrainmatchInputError(f"invalid NIfTI header: {exc}", self.path) from None
        if header.get("magic").item() not in (b"n+1", b"n+2"):
            raise BrainmatchInputError(
                "header/image pairs (.hdr/.img) are not supported; convert to .nii.gz", self.path
            )
        self.header = header
        shape = header.get_data_shape()
        if len(shape) < 3:
            raise BrainmatchInputError(f"expected a 3D or 4D image, got shape {shape}", self.path)
        if len(shape) > 4 and any(s != 1 for s in shape[4:]):
            raise BrainmatchInputError(f"expected a 4D image, got shape {shape}", self.path)
        self.shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(shape[2]))
        self.n_volumes = int(shape[3]) if len(shape) > 3 else 1
        self.affine = header.get_best_affine()
        self.dtype = header.get_data_dtype()
        slope, inter = header.get_slope_inter()
        self.slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
        self.inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
        self.tr = float(header.get_zooms()[3]) if len(shape) > 3 else None
        if self.tr is not None:  # pixdim[4] in seconds whatever xyzt_units says
            unit = header.get_xyzt_units()[1]
            self.tr *= {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
        offset = int(header.get_data_offset())
        pos = hdr_size
        minimum = hdr_size + 4  # a single-file NIfTI: header, then the 4-byte extension flag
        if offset < minimum:
            raise BrainmatchInputError(
                f"malformed NIfTI: vox_offset {offset} is below {minimum}, the end of the "
                "header in a single-file image (readers disagree on where its data starts: "
                "nibabel would read the header itself as voxels); rewrite the file, e.g. "
                "with nibabel",
                self.path,
            )
        if offset > pos:
            self._read_exact(offset - pos, "the NIfTI extensions")
        self.n_voxels = self.shape[0] * self.shape[1] * self.shape[2]
        self.volume_bytes = self.n_voxels * self.dtype.itemsize
        self.volumes_read = 0

    @property
    def scaled(self) -> bool:
        """Whether stored values need ``slope * x + inter``."""
        return self.slope != 1.0 or self.inter != 0.0

    # -- data -----------------------------------------------------------------------------
    def _fill(self, view: memoryview) -> int:
        got = 0
        total = len(view)
        while got < total:
            n = self._guard(lambda g=got: self._fh.readinto(view[g:]))
            if not n:
                break
            got += n
        return got

    def blocks(self, volumes_per_block: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_volume, block)``; ``block`` has shape ``(k, n_voxels)``.

        The values are as stored (apply :attr:`slope` / :attr:`inter` yourself when
        :attr:`scaled`); the array is native-endian and valid until the next block is
        requested (one buffer is reused).
        """
        k = max(1, min(volumes_per_block, self.n_volumes))
        buf = bytearray(k * self.volume_bytes)
        while self.volumes_read < self.n_volumes:
            n = min(k, self.n_volumes - self.volumes_read)
            got = self._fill(memoryview(buf)[: n * self.volume_bytes])
            yield self._block(buf, n, got)

    def piece_reader(self, piece_voxels: int) -> PieceReader:
        """A :class:`PieceReader` over this file's remaining volumes."""
        return PieceReader(self, piece_voxels)

    def pieces(self, piece_voxels: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """Read one volume at a time in pieces of ``piece_voxels`` voxels.

        Yields ``(volume, first, stop, data)`` after voxels ``first:stop`` of volume
        ``volume`` were read into ``data``: one reused 1D native-endian array of
        :attr:`n_voxels` values, in which ``data[:first]`` also hold this volume and
        ``data[stop:]`` still hold the previous one.  Working on each piece right after
        it is inflated, while it is still in the CPU cache, is faster than inflating a
        whole volume (4 MB at 2 mm) and then reading it back from memory.
        """
        reader = self.piece_reader(piece_voxels)
        for t in range(self.volumes_read, self.n_volumes):
            for c, (first, stop) in enumerate(reader.spans):
                reader.read(t, c)
                yield t, first, stop, reader.data
            self.volumes_read = t + 1

    def _ends_early(self, volume: int, got_bytes: int) -> None:
        done = volume + got_bytes // self.volume_bytes
        raise BrainmatchInputError(
            f"file ends early: the header promises {self.n_volumes} volumes but "
            f"the data stops in volume {done + 1} (truncated file?)",
            self.path,
        )

    def _block(self, buf: bytearray, n: int, got: int) -> tuple[int, np.ndarray]:
        if got != n * self.volume_bytes:
            self._ends_early(self.volumes_read, got)
        arr = np.frombuffer(buf, dtype=self.dtype, count=n * self.n_voxels)
        if not self.dtype.isnative:
            arr = arr.byteswap().view(self.dtype.newbyteorder("="))
        start = self.volumes_read
        self.volumes_read += n
        return start, arr.reshape(n, self.n_voxels)

    def check_end(self) -> None:
        """Read to the end: for gzip files the CRC check then catches corrupt data, and the
        ``hasher`` given to the constructor has seen every byte of the file."""
        if self.compressed:
            self._guard(lambda: self._fh.read())
        if isinstance(self._raw, _HashingReader):
            buf = bytearray(1 << 20)
            while self._guard(lambda: self._raw.readinto(buf)):
                pass

    # -- context --------------------------------------------------------------------------
    def close(self) -> None:
        """Close the file."""
        fh = getattr(self, "_fh", None)
        if fh is not None and fh is not self._raw:
            try:
                fh.close()
            except Exception:
                pass
        self._raw.close()

    def __enter__(self) -> NiftiStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PieceReader:
    """Reads a :class:`NiftiStream`'s volumes piece by piece into one reused buffer.

    Attributes
    ----------
    data : ndarray, 1D
        The buffer as native-endian values (one volume).
    spans : list of (int, int)
        ``(first, stop)`` voxels of each piece.
    views : list of memoryview
        The bytes of each piece in ``data``'s buffer.
    readinto : callable
        The stream's raw ``readinto`` (for a caller that drives the reads itself, e.g.
        brainmatch's C kernel; its errors are mapped by :meth:`error`).
    """

    def __init__(self, stream: NiftiStream, piece_voxels: int) -> None:
        self.stream = stream
        n = stream.n_voxels
        piece = max(1, min(piece_voxels, n))
        item = stream.dtype.itemsize
        self._buf = bytearray(stream.volume_bytes)
        self._stored = np.frombuffer(self._buf, dtype=stream.dtype)
        self.data = np.frombuffer(self._buf, dtype=stream.dtype.newbyteorder("="))
        self.spans = [(a, min(a + piece, n)) for a in range(0, n, piece)]
        # made once: the pieces are read ~20 times a volume
        self.views = [memoryview(self._buf)[a * item : b * item] for a, b in self.spans]
        self.readinto = stream._fh.readinto

    def read(self, t: int, c: int, got: int = 0) -> None:
        """Read piece ``c`` of volume ``t`` (its first ``got`` bytes are already read).

        Raises
        ------
        BrainmatchInputError
            The file ends early, or its gzip data is truncated or corrupt.
        """
        view = self.views[c]
        if got < len(view):
            got += self.stream._fill(view[got:])
            if got != len(view):
                item = self.stream.dtype.itemsize
                self.stream._ends_early(t, self.spans[c][0] * item + got)
        if not self.stream.dtype.isnative:
            first, stop = self.spans[c]
            self._stored[first:stop].byteswap(inplace=True)

    def error(self, exc: BaseException) -> BrainmatchInputError:
        """The :class:`BrainmatchInputError` for an error raised by :attr:`readinto`."""
        return self.stream._input_error(exc)
