"""Region signals and connectivity equal nilearn's NiftiLabelsMasker + ConnectivityMeasure."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmatch.features.denoise import CleanOptions, clean_signals, connectivity
from brainmatch.features.niftistream import NiftiStream
from brainmatch.features.regions import RegionPlan

TOL = 1e-4  # the bound on z-scored series (float32 precision)


def _nilearn(
    img: nib.Nifti1Image, labels: nib.Nifti1Image, confounds: object = None, **kwargs: object
) -> np.ndarray:
    from nilearn.maskers import NiftiLabelsMasker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiLabelsMasker(labels, **kwargs)  # type: ignore[arg-type]
        return np.asarray(masker.fit_transform(img, confounds=confounds))


def _ours(
    path: Path,
    labels: np.ndarray,
    options: CleanOptions,
    tr: float,
    confounds: np.ndarray | None = None,
) -> np.ndarray:
    values = sorted(int(v) for v in np.unique(labels) if v != 0)
    sig = RegionPlan(labels, values).extract(path, volumes_per_block=3)
    return clean_signals(sig.signals, confounds=confounds, sample_mask=None, tr=tr, options=options)


def _random_labels(shape: tuple[int, int, int], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n + 1, size=shape).astype(np.int32)
    lab[0, 0, 0] = n  # every label present
    return lab


@pytest.mark.parametrize(
    ("shape", "n_regions", "dtype", "ext"),
    [
        ((7, 8, 9, 40), 5, np.float32, ".nii.gz"),
        ((12, 10, 6, 64), 11, np.float32, ".nii"),
        ((5, 17, 4, 41), 3, np.int16, ".nii.gz"),
        ((9, 9, 9, 50), 20, np.float64, ".nii.gz"),
    ],
)
def test_random_images_match_nilearn(
    tmp_path: Path, shape: tuple[int, ...], n_regions: int, dtype: type, ext: str
) -> None:
    rng = np.random.default_rng(sum(shape))
    t = shape[3]
    # regions share slow signals plus voxel noise; int16 with a scale factor
    data = (
        1000
        + 30 * rng.standard_normal(shape)
        + np.cumsum(rng.standard_normal(t))[None, None, None, :] * 5
    )
    img = nib.Nifti1Image(data.astype(dtype), np.diag([2.0, 2.5, 3.0, 1.0]))
    if dtype is np.int16:
        img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / f"bold{ext}"
    nib.save(img, path)
    img = nib.load(path)
    labels = _random_labels(shape[:3], n_regions, seed=1)
    labels_img = nib.Nifti1Image(labels, img.affine)
    confounds = rng.standard_normal((t, 3))
    for options in (
        CleanOptions(denoise="none", detrend=True),
        CleanOptions(denoise="none", detrend=False, low_pass=0.2, high_pass=0.02),
    ):
        ref = _nilearn(
            img,
            labels_img,
            standardize="zscore_sample",
            detrend=options.detrend,
            low_pass=options.low_pass,
            high_pass=options.high_pass,
            t_r=2.0,
            confounds=confounds,
        )
        got = _ours(path, labels, options, 2.0, confounds)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= TOL
        conn_ref = connectivity([ref], "correlation")[0]
        conn_got = connectivity([got], "correlation")[0]
        assert np.abs(conn_ref - conn_got).max() <= TOL


def test_raw_region_means_match_nilearn_on_real_epi() -> None:
    """nibabel's example4d.nii.gz: real EPI, int16, 128 x 96 x 24 x 2."""
    path = Path(os.path.dirname(nib.__file__)) / "tests" / "data" / "example4d.nii.gz"
    img = nib.load(path)
    labels = _random_labels(img.shape[:3], 30, seed=3)
    ref = _nilearn(img, nib.Nifti1Image(labels, img.affine))
    sig = RegionPlan(labels, list(range(1, 31))).extract(path)
    assert np.abs(sig.signals - ref).max() <= 1e-3 * np.abs(ref).max() * 1e-3


def test_nitime_real_fmri_matches_nilearn() -> None:
    """nitime's fmri1.nii.gz: real 4D fMRI (10 x 10 x 18 x 40, int16)."""
    import nitime

    path = Path(nitime.__file__).parent / "data" / "fmri1.nii.gz"
    img = nib.load(path)
    labels = _random_labels(img.shape[:3], 12, seed=4)
    ref = _nilearn(
        img,
        nib.Nifti1Image(labels, img.affine),
        standardize="zscore_sample",
        detrend=True,
        t_r=1.35,
    )
    got = _ours(path, labels, CleanOptions(denoise="none"), 1.35)
    assert np.abs(got - ref).max() <= TOL


def test_nitime_roi_series_give_their_connectivity(tmp_path: Path) -> None:
    """Voxels carrying nitime's 31 real ROI series (+ noise) give back their connectivity."""
    import nitime

    roi = pd.read_csv(Path(nitime.__file__).parent / "data" / "fmri_timeseries.csv")
    series = roi.to_numpy(dtype=np.float64)  # 250 x 31
    t, n = series.shape
    shape = (8, 8, 8)
    labels = (np.arange(np.prod(shape)).reshape(shape) % n + 1).astype(np.int32)
    rng = np.random.default_rng(5)
    vox = series[:, labels.ravel() - 1] + 0.05 * series.std(axis=0)[
        labels.ravel() - 1
    ] * rng.standard_normal((t, labels.size))
    data = vox.T.reshape(*shape, t).astype(np.float32)
    path = tmp_path / "roi.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    ref = _nilearn(
        nib.load(path),
        nib.Nifti1Image(labels, np.eye(4)),
        standardize="zscore_sample",
        detrend=True,
        t_r=2.0,
    )
    got = _ours(path, labels, CleanOptions(denoise="none"), 2.0)
    assert np.abs(got - ref).max() <= TOL
    for kind in ("correlation", "partial"):
        a = connectivity([got], kind)[0]
        b = connectivity([ref], kind)[0]
        assert np.abs(a - b).max() <= TOL
    truth = np.corrcoef(series.T)
    est = connectivity([got], "correlation")[0]
    iu = np.triu_indices(n, 1)
    assert np.corrcoef(truth[iu], est[iu])[0, 1] > 0.95


def test_stream_blocks_equal_nibabel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 5, 6, 7)).astype(">f4")  # big-endian on disk
    img = nib.Nifti1Image(data, np.eye(4))
    path = tmp_path / "be.nii.gz"
    nib.save(img, path)
    ref = np.asarray(nib.load(path).get_fdata()).reshape(-1, 7, order="F").T
    with NiftiStream(path) as s:
        blocks = np.concatenate([b.copy() for _, b in s.blocks(3)])
    assert np.array_equal(blocks, ref.astype(np.float32))


@pytest.mark.parametrize("strategy", ["simple", "scrubbing", "compcor"])
def test_simulated_subject_matches_nilearn_with_fmriprep_confounds(
    small_trial: Path, tmp_path: Path, strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    from brainmatch.atlases import load_atlas, resample_atlas
    from brainmatch.features import extract_dataset

    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    res = extract_dataset(
        small_trial,
        out,
        derivatives=small_trial / "derivatives" / "fmriprep",
        atlas="aal",
        denoise=strategy,
        participant_label=["sub-002"],
        connectivity=("correlation", "partial"),
    )
    assert res.failures.empty
    func = small_trial / "derivatives" / "fmriprep" / "sub-002" / "func"
    bold = next(func.glob("*_desc-preproc_bold.nii.gz"))
    img = nib.load(bold)
    atlas = load_atlas("aal")
    labels = nib.Nifti1Image(resample_atlas(atlas, img.shape[:3], img.affine), img.affine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conf, sample_mask = load_confounds_strategy(str(bold), strategy)
    from nilearn.maskers import NiftiLabelsMasker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiLabelsMasker(labels, standardize="zscore_sample", detrend=True, t_r=2.0)
        ref = masker.fit_transform(img, confounds=conf, sample_mask=sample_mask)
    ts = next((out / "sub-002" / "func").glob("*_seg-aal_stat-mean_timeseries.tsv"))
    got = pd.read_csv(ts, sep="\t")
    assert got.shape == ref.shape
    diff = np.abs(got.to_numpy() - ref).max()
    print(f"\n{strategy}: max |brainmatch - NiftiLabelsMasker| = {diff:.2e} (z units)")
    assert diff <= TOL
    names = dict(zip(atlas.labels["index"], atlas.labels["name"], strict=True))
    present = sorted(int(v) for v in np.unique(np.asarray(labels.dataobj)) if v != 0)
    assert list(got.columns) == [names[v] for v in present]
    for kind, stat in (("correlation", "pearsoncorrelation"), ("partial", "partialcorrelation")):
        rel = pd.read_csv(
            str(ts).replace("stat-mean_timeseries", f"stat-{stat}_relmat"),
            sep="\t",
            index_col="Node",
        )
        cdiff = np.abs(rel.to_numpy() - connectivity([ref], kind)[0]).max()
        print(f"{strategy} {kind}: max |relmat - ConnectivityMeasure| = {cdiff:.2e}")
        assert cdiff <= TOL
