"""brainmatch.features.cleaning equals nilearn's confounds, signal.clean and connectivity."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.features import cleaning

STEM = "sub-01_task-rest"


def _fmriprep_table(
    folder: Path,
    rng: np.random.Generator,
    n: int = 120,
    *,
    n_nss: int = 2,
    fd_spikes: tuple[int, ...] = (30, 31, 90),
    dvars_spikes: tuple[int, ...] = (60,),
) -> Path:
    """A confounds table with fMRIPrep's columns (and its n/a first row) + its JSON."""
    cols: dict[str, np.ndarray] = {}
    for base in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter"):
        v = np.cumsum(rng.normal(0, 0.05, n))
        d = np.r_[np.nan, np.diff(v)]
        cols[base], cols[f"{base}_derivative1"] = v, d
        cols[f"{base}_power2"], cols[f"{base}_derivative1_power2"] = v**2, d**2
    cols["global_signal"] = rng.normal(size=n)
    fd = np.abs(rng.normal(0, 0.1, n))
    fd[list(fd_spikes)] = 0.9
    fd[0] = np.nan
    dvars = np.abs(rng.normal(1, 0.1, n))
    dvars[list(dvars_spikes)] = 2.5
    dvars[0] = np.nan
    cols["framewise_displacement"], cols["std_dvars"] = fd, dvars
    t = np.arange(n)
    for k in range(4):
        cols[f"cosine{k:02d}"] = np.sqrt(2 / n) * np.cos(np.pi / n * (t + 0.5) * (k + 1))
    meta = {}
    masks = ["combined"] * 5 + ["WM"] * 3 + ["CSF"] * 3
    for i, mask in enumerate(masks):
        cols[f"a_comp_cor_{i:02d}"] = rng.normal(size=n)
        meta[f"a_comp_cor_{i:02d}"] = {"Method": "aCompCor", "Mask": mask}
    for i in range(3):
        cols[f"t_comp_cor_{i:02d}"] = rng.normal(size=n)
        meta[f"t_comp_cor_{i:02d}"] = {"Method": "tCompCor", "Mask": "combined"}
    for i in range(n_nss):
        onehot = np.zeros(n)
        onehot[i] = 1
        cols[f"non_steady_state_outlier{i:02d}"] = onehot
    onehot = np.zeros(n)
    onehot[45] = 1
    cols["motion_outlier00"] = onehot
    table = folder / f"{STEM}_desc-confounds_timeseries.tsv"
    pd.DataFrame(cols).to_csv(table, sep="\t", index=False, na_rep="n/a")
    table.with_suffix(".json").write_text(json.dumps(meta))
    return table


def _nilearn_confounds(table: Path, strategy: str, **kwargs: float):
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    bold = table.parent / f"{STEM}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz"
    bold.touch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_confounds_strategy(str(bold), strategy, **kwargs)


CASES = {
    "plain": {},
    "no-nss": {"n_nss": 0},
    "scrub-near-end": {"fd_spikes": (3, 116), "dvars_spikes": ()},
    "no-outliers": {"n_nss": 0, "fd_spikes": (), "dvars_spikes": ()},
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("strategy", ["simple", "scrubbing", "compcor"])
def test_confounds_equal_nilearn(tmp_path: Path, strategy: str, case: str) -> None:
    table = _fmriprep_table(tmp_path, np.random.default_rng(7), **CASES[case])  # type: ignore[arg-type]
    ref, ref_mask = _nilearn_confounds(table, strategy)
    conf, mask, names = cleaning.read_confounds(table, strategy, 120)
    assert names == [str(c) for c in ref.columns]
    assert conf is not None
    np.testing.assert_allclose(conf, ref.to_numpy(), rtol=0, atol=1e-12)
    if ref_mask is None:
        assert mask is None
    else:
        assert mask is not None and np.array_equal(mask, ref_mask)
    if strategy == "scrubbing" and case != "no-outliers":
        assert mask is not None and len(mask) <= 120 - 4


@pytest.mark.parametrize("fd", [0.2, 0.8])
def test_scrubbing_threshold_equals_nilearn(tmp_path: Path, fd: float) -> None:
    table = _fmriprep_table(tmp_path, np.random.default_rng(3))
    ref, ref_mask = _nilearn_confounds(table, "scrubbing", fd_threshold=fd)
    conf, mask, _ = cleaning.read_confounds(table, "scrubbing", 120, fd_threshold=fd)
    assert mask is not None and np.array_equal(mask, ref_mask)
    np.testing.assert_allclose(conf, ref.to_numpy(), rtol=0, atol=1e-12)


def test_confounds_errors_name_the_file(tmp_path: Path) -> None:
    table = _fmriprep_table(tmp_path, np.random.default_rng(1))
    with pytest.raises(BrainmatchInputError, match="120 rows but the BOLD has 100") as err:
        cleaning.read_confounds(table, "simple", 100)
    assert err.value.path == table
    df = pd.read_csv(table, sep="\t").drop(columns=["csf_derivative1", "csf_power2"])
    df.to_csv(table, sep="\t", index=False, na_rep="n/a")
    cleaning.read_confounds(table, "simple", 120)  # basic wm_csf needs neither
    with pytest.raises(BrainmatchInputError, match="csf_derivative1, csf_power2"):
        cleaning.read_confounds(table, "scrubbing", 120)
    table.with_suffix(".json").unlink()
    with pytest.raises(BrainmatchInputError, match="JSON sidecar is missing"):
        cleaning.read_confounds(table, "compcor", 120)
    table.with_suffix(".json").write_text(json.dumps({"a_comp_cor_00": {"Method": "x"}}))
    with pytest.raises(BrainmatchInputError, match="no 'Mask' entry for a_comp_cor_00"):
        cleaning.read_confounds(table, "compcor", 120)
    _fmriprep_table(tmp_path, np.random.default_rng(1))
    df = pd.read_csv(table, sep="\t").drop(columns=["framewise_displacement"])
    df.to_csv(table, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(BrainmatchInputError, match="no framewise_displacement column"):
        cleaning.read_confounds(table, "scrubbing", 120)


def test_every_volume_censored_is_an_error(tmp_path: Path) -> None:
    table = _fmriprep_table(tmp_path, np.random.default_rng(1), fd_spikes=tuple(range(1, 120)))
    with pytest.raises(BrainmatchInputError, match="every volume"):
        cleaning.read_confounds(table, "scrubbing", 120)


def _nilearn_clean(x: np.ndarray, **kwargs: object) -> np.ndarray:
    from nilearn import signal

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return signal.clean(x, standardize_confounds=True, **kwargs)  # type: ignore[arg-type]


# sample masks whose censored volumes' mirror images (n - 1 - i) are all kept: there
# nilearn 0.13 interpolates every censored volume (see the module notes)
MASK_START = np.r_[3:120]
MASK_INSIDE = np.setdiff1d(np.arange(120), [2, 3, 50, 51, 52, 80])


@pytest.mark.parametrize("detrend", [True, False])
@pytest.mark.parametrize("band", [(None, None), (0.1, None), (None, 0.02), (0.15, 0.01)])
@pytest.mark.parametrize("mask", ["none", "start", "inside"])
@pytest.mark.parametrize("with_confounds", [True, False])
@pytest.mark.parametrize("standardize", [True, False])
def test_clean_equals_nilearn(
    detrend: bool,
    band: tuple[float | None, float | None],
    mask: str,
    with_confounds: bool,
    standardize: bool,
) -> None:
    rng = np.random.default_rng(11)
    n = 120
    x = rng.normal(size=(n, 9)).cumsum(axis=0) + 50 + np.linspace(0, 3, n)[:, None]
    conf = rng.normal(size=(n, 5)) if with_confounds else None
    if conf is not None:
        conf[:, 4] = 1.0  # constant: zero after centring, so pivoted QR drops it
    sm = {"none": None, "start": MASK_START, "inside": MASK_INSIDE}[mask]
    low, high = band
    kwargs = dict(confounds=conf, t_r=2.0, low_pass=low, high_pass=high)
    ref = _nilearn_clean(
        x,
        detrend=detrend,
        standardize="zscore_sample" if standardize else None,
        sample_mask=None if sm is None else sm.copy(),
        **kwargs,
    )
    got = cleaning.clean(
        x, sample_mask=sm, detrend_signals=detrend, standardize=standardize, **kwargs
    )
    assert got.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * scale)


def test_censored_volumes_are_all_interpolated_before_filtering() -> None:
    """Where nilearn 0.13's mirrored indexing skips volumes, brainmatch interpolates
    each censored volume; feeding nilearn the series so interpolated gives our result."""
    from scipy.interpolate import CubicSpline

    rng = np.random.default_rng(5)
    n = 100
    x = rng.normal(size=(n, 4)).cumsum(axis=0)
    x[[0, 1, 40, 59, 98, 99]] += 100.0  # spikes on the censored volumes
    sm = np.setdiff1d(np.arange(n), [0, 1, 40, 59, 98, 99])  # 40 and 59 mirror each other
    kwargs = dict(t_r=1.5, low_pass=0.2, high_pass=0.02)
    got = cleaning.clean(x, sample_mask=sm, detrend_signals=True, **kwargs)
    spline = CubicSpline(sm * 1.5, x[sm], extrapolate=False)
    fixed = x.copy()
    fixed[[40, 59]] = spline(np.array([40, 59]) * 1.5)
    fixed = fixed[2:98]
    ref = _nilearn_clean(
        fixed, detrend=True, standardize="zscore_sample", sample_mask=sm - 2, **kwargs
    )
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    naive = _nilearn_clean(
        x, detrend=True, standardize="zscore_sample", sample_mask=sm.copy(), **kwargs
    )
    assert naive.shape != got.shape or not np.allclose(naive, got, atol=1e-3)


def test_boolean_sample_mask_equals_nilearn() -> None:
    x = np.random.default_rng(2).normal(size=(100, 3)).cumsum(axis=0)
    keep = np.ones(100, dtype=bool)
    keep[[3, 40]] = False
    ref = _nilearn_clean(x, detrend=True, standardize="zscore_sample", sample_mask=keep)
    got = cleaning.clean(x, sample_mask=keep)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_mask": np.r_[-1, 5:50]}, "indices must be in 0..99"),
        ({"sample_mask": np.r_[5:50, 100]}, "indices must be in 0..99"),
        ({"sample_mask": np.r_[5:50, 7]}, "increasing"),
        ({"sample_mask": np.ones(50, dtype=bool)}, "boolean sample_mask needs 100"),
        ({"sample_mask": np.array([10])}, "at least 2 volumes"),
        ({"t_r": 2.0, "low_pass": 0.05, "high_pass": 0.05}, "High pass cutoff"),
        ({"t_r": 2.0, "low_pass": 0.3, "high_pass": 0.4}, "High pass cutoff"),
        ({"low_pass": 0.1}, "t_r"),
        ({"confounds": np.zeros((50, 2))}, "one row per volume"),
    ],
)
def test_clean_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    x = np.random.default_rng(0).normal(size=(100, 3)).cumsum(axis=0)
    with pytest.raises(ValueError, match=message):
        cleaning.clean(x, **kwargs)  # type: ignore[arg-type]


def test_one_dimensional_confound_is_one_column() -> None:
    rng = np.random.default_rng(4)
    x, conf = rng.normal(size=(80, 3)), rng.normal(size=80)
    ref = _nilearn_clean(x, detrend=True, standardize="zscore_sample", confounds=conf)
    np.testing.assert_allclose(cleaning.clean(x, confounds=conf), ref, rtol=0, atol=1e-10)


def test_unused_non_numeric_column_is_ignored(tmp_path: Path) -> None:
    table = _fmriprep_table(tmp_path, np.random.default_rng(1))
    df = pd.read_csv(table, sep="\t")
    df["notes"] = "x"
    df.to_csv(table, sep="\t", index=False, na_rep="n/a")
    ref, _ = _nilearn_confounds(table, "simple")
    conf, _, _ = cleaning.read_confounds(table, "simple", 120)
    np.testing.assert_allclose(conf, ref.to_numpy(), rtol=0, atol=1e-12)
    df["csf"] = "high"
    df.to_csv(table, sep="\t", index=False, na_rep="n/a")
    with pytest.raises(BrainmatchInputError, match="'csf' holds non-numeric values"):
        cleaning.read_confounds(table, "simple", 120)


def test_connectivity_rejects_non_finite_series() -> None:
    x = np.random.default_rng(0).normal(size=(50, 4))
    x[5, 1] = np.nan
    for fn in (cleaning.correlation, cleaning.partial_correlation):
        with pytest.raises(ValueError, match="NaN or infinite"):
            fn(x)


def test_filter_longer_than_the_run_raises_padlen() -> None:
    x = np.random.default_rng(0).normal(size=(12, 3))
    with pytest.raises(ValueError, match="padlen"):
        cleaning.clean(x, t_r=2.0, low_pass=0.1, high_pass=0.01)


@pytest.mark.parametrize("shape", [(200, 2), (150, 20), (40, 90), (300, 100)])
def test_connectivity_equals_nilearn(shape: tuple[int, int]) -> None:
    from nilearn.connectome import ConnectivityMeasure

    rng = np.random.default_rng(shape[1])
    mix = rng.normal(size=(shape[1], shape[1])) / np.sqrt(shape[1])
    x = rng.normal(size=shape) @ (np.eye(shape[1]) + mix) * rng.uniform(0.5, 3, shape[1])
    for kind, ours in (
        ("correlation", cleaning.correlation),
        ("partial correlation", cleaning.partial_correlation),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ConnectivityMeasure(kind=kind).fit_transform([x])[0]
        np.testing.assert_allclose(ours(x), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", [(60, 1), (30, 5), (50, 1003)])
def test_ledoit_wolf_equals_scikit_learn(shape: tuple[int, int]) -> None:
    from sklearn.covariance import LedoitWolf

    x = np.random.default_rng(1).normal(size=shape) + 4.0
    ref = LedoitWolf(store_precision=False).fit(x).covariance_
    np.testing.assert_allclose(cleaning.ledoit_wolf(x), ref, rtol=1e-10, atol=1e-12)


def test_cleaning_imports_neither_nilearn_nor_sklearn() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, brainmatch.features.cleaning as c, brainmatch.features.denoise;"
        "x = np.random.default_rng(0).normal(size=(50, 4));"
        "c.correlation(c.clean(x, confounds=x[:, :1] ** 2));"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('nilearn', 'sklearn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
