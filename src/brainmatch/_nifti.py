"""Stream a 4D NIfTI-1 image to disk one volume at a time.

A NIfTI-1 single file is a 348-byte header, a 4-byte extension flag and the voxel data
in Fortran order, so the volumes of a 4D image are contiguous and can be written in
sequence without holding the whole image in memory.  ``.nii.gz`` output goes through
python-isal (a fast, standard gzip stream) with a zero timestamp, so the same data
always gives the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import nibabel as nib
import numpy as np
from isal import igzip

from brainmatch._io import default_mode


def nifti_header(
    shape: tuple[int, ...], affine: np.ndarray, dtype: np.dtype | type, tr: float | None = None
) -> nib.Nifti1Header:
    """Build the NIfTI-1 header nibabel would write for an image of this shape and affine."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.dtype(dtype))
    header.set_data_shape(shape)
    header.set_sform(affine, code="aligned")
    header.set_qform(affine, code="aligned")
    header.set_xyzt_units("mm", "sec")
    if tr is not None and len(shape) == 4:
        zooms = (*header.get_zooms()[:3], float(tr))
        header.set_zooms(zooms)
    header.set_slope_inter(1.0, 0.0)
    return header


class NiftiVolumeWriter:
    """Write a 4D NIfTI (``.nii`` or ``.nii.gz``) volume by volume, atomically.

    Parameters
    ----------
    path : str or Path
        Destination; gzip compression when it ends in ``.gz``.
    shape : tuple of 3 or 4 int
        Image shape (x, y, z[, t]); a 3D image is written as one volume.
    affine : ndarray of shape (4, 4)
    dtype : numpy dtype
        On-disk data type.
    tr : float, optional
        Repetition time written to ``pixdim[4]``.
    compresslevel : int
        gzip level (1 is fastest; the output is standard gzip either way).

    Notes
    -----
    Use as a context manager and call :meth:`write` once per volume, in order.  The file
    appears at ``path`` only when every volume was written and the block exits
    without an exception.
    """

    def __init__(
        self,
        path: str | Path,
        shape: tuple[int, ...],
        affine: np.ndarray,
        dtype: np.dtype | type = np.float32,
        tr: float | None = None,
        compresslevel: int = 1,
    ) -> None:
        self.path = Path(path)
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.header = nifti_header(shape, affine, self.dtype, tr)
        self.compresslevel = compresslevel
        self._written = 0
        self.n_volumes = shape[3] if len(shape) == 4 else 1
        self._raw: IO[bytes] | None = None
        self._stream: Any = None
        self._tmp: str | None = None

    def __enter__(self) -> NiftiVolumeWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        self._raw = os.fdopen(fd, "wb")
        if self.path.name.endswith(".gz"):
            self._stream = igzip.IGzipFile(
                filename="", mode="wb", fileobj=self._raw, compresslevel=self.compresslevel, mtime=0
            )
        else:
            self._stream = self._raw
        self.header.set_data_offset(352)
        self._stream.write(self.header.binaryblock)
        self._stream.write(b"\x00\x00\x00\x00")  # no extensions
        return self

    def write(self, volume: np.ndarray) -> None:
        """Append one 3D volume of shape ``shape[:3]``."""
        if volume.shape != self.shape[:3]:
            raise ValueError(f"volume shape {volume.shape} != {self.shape[:3]}")
        if self._written >= self.n_volumes:
            raise ValueError("all volumes already written")
        assert self._stream is not None
        self._stream.write(np.asarray(volume, dtype=self.dtype).tobytes(order="F"))
        self._written += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._raw is not None and self._stream is not None and self._tmp is not None
        ok = exc_type is None and self._written == self.n_volumes
        try:
            if self._stream is not self._raw:
                self._stream.close()
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            if ok:
                os.chmod(self._tmp, default_mode())
                os.replace(self._tmp, self.path)
        finally:
            if not ok:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._tmp)
        if exc_type is None and not ok:
            raise ValueError(f"{self.path}: wrote {self._written} of {self.n_volumes} volumes")


def save_image(image: nib.Nifti1Image, path: str | Path) -> None:
    """Save a 3D image atomically with deterministic gzip bytes."""
    data = np.asanyarray(image.dataobj)
    with NiftiVolumeWriter(path, data.shape, image.affine, data.dtype) as writer:
        writer.write(data)
