"""Read a 4D NIfTI one block of volumes at a time, without loading the whole image.

A NIfTI file (``.nii`` or ``.nii.gz``) is a header, optional extensions and the voxel
data in Fortran order, so the volumes of a 4D image follow each other on disk.  This
reader decompresses ``.nii.gz`` with python-isal (the fastest gzip reader available
here, ~2x nibabel's default) straight into a reused buffer and hands out views of
``k`` volumes at a time as a ``(k, n_voxels)`` array whose columns are voxels in
Fortran (x fastest) order, i.e. ``image.get_fdata().reshape(-1, t, order="F").T``.

Every problem with the file (not a NIfTI, truncated or corrupt gzip, fewer bytes than
the header promises) is raised as :class:`~brainmatch.errors.BrainmatchInputError`
naming the file.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import nibabel as nib
import numpy as np
from isal import igzip

from brainmatch.errors import BrainmatchInputError

_GZIP_MAGIC = b"\x1f\x8b"


def _open_raw(path: Path) -> IO[bytes]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise BrainmatchInputError(f"cannot open: {exc.strerror or exc}", path) from None
    return fh


class NiftiStream:
    """Sequential reader of a NIfTI-1/2 image's volumes.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz`` file (gzip is detected from the bytes, not the name).

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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._raw = _open_raw(self.path)
        try:
            magic = self._raw.read(2)
            self._raw.seek(0)
            self.compressed = magic == _GZIP_MAGIC
            self._fh: Any = (
                igzip.IGzipFile(fileobj=self._raw, mode="rb") if self.compressed else self._raw
            )
            self._read_header()
        except BaseException:
            self.close()
            raise

    # -- header ---------------------------------------------------------------------------
    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._guard(lambda: self._fh.read(n))
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
        except EOFError:
            raise BrainmatchInputError(
                "gzip stream is truncated (the file ends before the compressed data does)",
                self.path,
            ) from None
        except (OSError, zlib.error, ValueError) as exc:
            kind = "gzip data is corrupt" if self.compressed else "cannot read"
            raise BrainmatchInputError(f"{kind}: {exc}", self.path) from None

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
        offset = int(header.get_data_offset())
        pos = hdr_size
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

    def blocks(self, volumes_per_block: int = 8) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_volume, block)``; ``block`` has shape ``(k, n_voxels)``.

        The values are as stored (apply :attr:`slope` / :attr:`inter` yourself when
        :attr:`scaled`); the array is native-endian.  A block is valid until the next one
        is requested: two buffers alternate, and a background thread decompresses the next
        block into the other buffer while the caller works on this one (python-isal
        releases the GIL while it inflates, so reading and summing overlap).
        """
        k = max(1, min(volumes_per_block, self.n_volumes))
        bufs = [bytearray(k * self.volume_bytes), bytearray(k * self.volume_bytes)]
        native = self.dtype.newbyteorder("=")
        swap = not self.dtype.isnative
        sizes = []
        left = self.n_volumes - self.volumes_read
        while left > 0:
            sizes.append(min(k, left))
            left -= sizes[-1]
        if not sizes:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="niftistream") as reader:

            def fill(i: int) -> Future[int]:
                view = memoryview(bufs[i % 2])[: sizes[i] * self.volume_bytes]
                return reader.submit(self._fill, view)

            pending = fill(0)
            try:
                for i, n in enumerate(sizes):
                    got = pending.result()
                    if got != n * self.volume_bytes:
                        done = self.volumes_read + got // self.volume_bytes
                        raise BrainmatchInputError(
                            f"file ends early: the header promises {self.n_volumes} volumes but "
                            f"the data stops in volume {done + 1} (truncated file?)",
                            self.path,
                        )
                    if i + 1 < len(sizes):
                        pending = fill(i + 1)  # the other buffer: the caller is done with it
                    arr = np.frombuffer(bufs[i % 2], dtype=self.dtype, count=n * self.n_voxels)
                    if swap:
                        arr = arr.byteswap().view(native)
                    start = self.volumes_read
                    self.volumes_read += n
                    yield start, arr.reshape(n, self.n_voxels)
            finally:
                # never leave a read running on the file after the caller stops early
                wait([pending])

    def check_end(self) -> None:
        """For gzip files, read to the end so the CRC check catches corrupt data."""
        if self.compressed:
            self._guard(lambda: self._fh.read())

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
