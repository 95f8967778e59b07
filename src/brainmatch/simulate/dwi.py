"""QSIPrep-style diffusion images of one simulated subject: a tensor field with known FA.

The model (cylindrically symmetric tensors, eigenvalues ``l1 > l2 = l3``):

- tissue from nilearn's packaged MNI152 (2009) grey / white-matter probability maps and
  the MNI brain mask, on the fMRIPrep grid of the chosen resolution; CSF elsewhere in
  the mask;
- mean diffusivity 0.75e-3 mm^2/s in tissue, 3.0e-3 in CSF; fractional anisotropy 0.15 in
  grey matter, 0.45 in white matter, 0.05 in CSF, and in each white-matter tract of the
  Juelich atlas (``juelich-wm``, the tract atlas ``brainmatch extract`` summarises) the
  subject's tract FA (``TRACT_FA`` plus the subject's deviations, e.g. the cingulum
  FA moderator);
- principal direction: a fixed direction per tract (left-right for the callosal body,
  anterior-posterior for the cingulum, fornix and fascicles, superior-inferior for the
  corticospinal tract and radiations), elsewhere a smooth random field;
- signal ``S = S0 exp(-b g' D g)`` with ``S0`` 1000 (tissue) or 2000 (CSF), Rician noise of
  SD ``S0 / snr``, rounded to int16, on a gradient table of ``n_b0`` b0 volumes and
  ``n_directions`` unit directions on a Fibonacci hemisphere at one b-value shell.

Files (QSIPrep names): ``sub-<id>[_ses-<id>]_space-T1w_desc-preproc_dwi.nii.gz`` with
``.bval`` / ``.bvec`` / ``.json`` and ``..._space-T1w_desc-brain_mask.nii.gz`` (the
simulated T1w space is the template grid: simulated subjects share one anatomy).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainmatch._io import write_json, write_text
from brainmatch._nifti import NiftiVolumeWriter, save_image

#: Typical adult tract FA (TBSS skeleton-level values, assumed, not fitted).
TRACT_FA: dict[str, float] = {
    "Callosal_body": 0.62,
    "Cingulum_L": 0.52,
    "Cingulum_R": 0.52,
    "Uncinate_fascicle_L": 0.48,
    "Uncinate_fascicle_R": 0.48,
    "Corticospinal_tract_L": 0.58,
    "Corticospinal_tract_R": 0.58,
    "Fornix": 0.45,
}
#: Principal diffusion direction (x, y, z) per tract name prefix.
_DIRECTIONS = {
    "Callosal": (1.0, 0.0, 0.0),
    "Corticospinal": (0.0, 0.0, 1.0),
    "Acoustic": (1.0, 0.0, 0.0),
    "Optic": (0.0, 1.0, 0.0),
}
MD_TISSUE = 0.75e-3
MD_CSF = 3.0e-3


@dataclass(frozen=True)
class DwiParams:
    """What the DWI generator needs to know about one subject-session."""

    participant_id: str
    session: str | None
    seed: tuple[int, ...]
    tract_fa: tuple[tuple[str, float], ...] = ()
    snr: float = 30.0
    b_value: float = 1000.0
    n_directions: int = 32
    n_b0: int = 2


def fibonacci_directions(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors on the upper hemisphere (n x 3)."""
    k = np.arange(n) + 0.5
    z = 1.0 - k / n  # (0, 1]
    r = np.sqrt(1.0 - z * z)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def gradient_table(n_b0: int, n_directions: int, b_value: float) -> tuple[np.ndarray, np.ndarray]:
    """b-values and unit b-vectors (n x 3): ``n_b0`` b0 volumes first, then the shell."""
    bvals = np.r_[np.zeros(n_b0), np.full(n_directions, float(b_value))]
    bvecs = np.r_[np.zeros((n_b0, 3)), fibonacci_directions(n_directions)]
    return bvals, bvecs


def cylinder_eigenvalues(fa: np.ndarray, md: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(l1, l_perp)`` of cylindrically symmetric tensors with the given FA and MD."""
    a = md * fa * np.sqrt(3.0 / (9.0 - 6.0 * fa * fa))
    return md + 2.0 * a, md - a


@dataclass(frozen=True)
class _Anatomy:
    shape: tuple[int, int, int]
    affine: np.ndarray
    mask: np.ndarray  # 3D bool
    tissue: np.ndarray  # per mask voxel: 0 CSF, 1 GM, 2 WM
    tract: np.ndarray  # per mask voxel: index into names, -1 none
    names: tuple[str, ...]


@functools.lru_cache(maxsize=2)
def anatomy(resolution: float) -> _Anatomy:
    """Brain mask, tissue classes and Juelich tracts on the fMRIPrep grid (cached)."""
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template
    from nilearn.image import resample_img

    from brainmatch.atlases import mni_brain_mask, resample_atlas, template_grid, tract_atlas

    shape, affine = template_grid(resolution)  # type: ignore[arg-type]
    mask = np.asarray(mni_brain_mask(resolution).dataobj) > 0

    def prob(img: Any) -> np.ndarray:
        out = resample_img(
            img,
            target_affine=affine,
            target_shape=shape,
            interpolation="linear",
            force_resample=True,
            copy_header=True,
        )
        return np.asarray(out.dataobj, dtype=np.float64)

    gm = prob(load_mni152_gm_template(resolution=1))
    wm = prob(load_mni152_wm_template(resolution=1))
    tissue3 = np.where(wm >= 0.5, 2, np.where(gm >= 0.3, 1, 0))
    tracts = tract_atlas("juelich-wm")
    labels = resample_atlas(tracts, shape, affine)
    names = tuple(str(n) for n in tracts.labels["name"])
    lut = np.full(int(labels.max()) + 1, -1, dtype=np.int32)
    for k, v in enumerate(tracts.labels["index"].astype(int)):
        lut[v] = k
    tract3 = lut[labels]
    return _Anatomy(shape, affine, mask, tissue3[mask], tract3[mask], names)


def _direction_field(rng: np.random.Generator, anat: _Anatomy, resolution: float) -> np.ndarray:
    from scipy import ndimage

    vecs = np.empty((int(anat.mask.sum()), 3))
    for k in range(3):
        f = ndimage.gaussian_filter(rng.standard_normal(anat.shape), 8.0 / resolution)
        vecs[:, k] = f[anat.mask]
    for k, name in enumerate(anat.names):
        sel = anat.tract == k
        d = next((v for p, v in _DIRECTIONS.items() if name.startswith(p)), (0.0, 1.0, 0.0))
        vecs[sel] = d
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def write_subject_dwi(out_dwi: Path, p: DwiParams, resolution: float) -> dict[str, Any]:
    """Generate and write one subject-session's DWI, gradient table, mask and sidecar.

    Returns the tract FA values planted (for the truth file).
    """
    anat = anatomy(resolution)
    rng = np.random.default_rng(list(p.seed))
    fa = np.where(anat.tissue == 2, 0.45, np.where(anat.tissue == 1, 0.15, 0.05))
    md = np.where(anat.tissue == 0, MD_CSF, MD_TISSUE)
    planted = dict(TRACT_FA)
    planted.update(dict(p.tract_fa))
    for k, name in enumerate(anat.names):
        if name in planted:
            fa[anat.tract == k] = planted[name]
        else:
            fa[anat.tract == k] = 0.5
    l1, lp = cylinder_eigenvalues(fa, md)
    v = _direction_field(rng, anat, resolution)
    s0 = np.where(anat.tissue == 0, 2000.0, 1000.0)
    sigma = s0 / p.snr
    bvals, bvecs = gradient_table(p.n_b0, p.n_directions, p.b_value)
    ses = f"_ses-{p.session}" if p.session else ""
    stem = f"{p.participant_id}{ses}_space-T1w"
    out_dwi.mkdir(parents=True, exist_ok=True)
    vol = np.zeros(anat.shape, dtype=np.int16)
    with NiftiVolumeWriter(
        out_dwi / f"{stem}_desc-preproc_dwi.nii.gz",
        (*anat.shape, len(bvals)),
        anat.affine,
        np.int16,
    ) as writer:
        for b, g in zip(bvals, bvecs, strict=True):
            adc = lp + (l1 - lp) * (v @ g) ** 2
            signal = s0 * np.exp(-b * adc)
            real = signal + sigma * rng.standard_normal(len(signal))
            imag = sigma * rng.standard_normal(len(signal))
            vol[anat.mask] = np.clip(np.round(np.hypot(real, imag)), 1, 32767).astype(np.int16)
            writer.write(vol)
    write_text(out_dwi / f"{stem}_desc-preproc_dwi.bval", " ".join(f"{b:g}" for b in bvals) + "\n")
    write_text(
        out_dwi / f"{stem}_desc-preproc_dwi.bvec",
        "\n".join(" ".join(f"{x:.8f}" for x in row) for row in bvecs.T) + "\n",
    )
    import nibabel as nib

    save_image(
        nib.Nifti1Image(anat.mask.astype(np.uint8), anat.affine),
        out_dwi / f"{stem}_desc-brain_mask.nii.gz",
    )
    write_json(
        out_dwi / f"{stem}_desc-preproc_dwi.json",
        {
            "GeneratedBy": "brainmatch simulate (synthetic data with known ground truth)",
            "Model": "cylindrically symmetric tensors, Rician noise",
            "SNR_b0": p.snr,
        },
    )
    return {f"tract_fa_{k}": float(planted[k]) for k in sorted(planted)}


__all__ = [
    "TRACT_FA",
    "DwiParams",
    "anatomy",
    "cylinder_eigenvalues",
    "fibonacci_directions",
    "gradient_table",
    "write_subject_dwi",
]
