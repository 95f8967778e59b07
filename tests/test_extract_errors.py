"""Bad input: one clear line in failures.tsv per broken participant, nothing else lost."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.features import extract_dataset


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _clone(src_func: Path, dst_func: Path, sub: str) -> None:
    dst_func.mkdir(parents=True)
    for f in src_func.iterdir():
        shutil.copy(f, dst_func / f.name.replace("sub-001", f"sub-{sub}"))


def _bold(func: Path) -> Path:
    return next(func.glob("*_desc-preproc_bold.nii*"))


def _resave(
    func: Path, change: Callable[[np.ndarray], np.ndarray], affine: np.ndarray | None = None
) -> None:
    path = _bold(func)
    img = nib.load(path)
    data = change(np.asarray(img.dataobj).copy())
    new = nib.Nifti1Image(data, img.affine if affine is None else affine, img.header)
    nib.save(new, path)


def truncated(func: Path) -> None:
    p = _bold(func)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def corrupt(func: Path) -> None:
    p = _bold(func)
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 64] = bytes(64)
    p.write_bytes(bytes(raw))


def shifted_affine(func: Path) -> None:
    img = nib.load(_bold(func))
    aff = img.affine.copy()
    aff[:3, 3] += 400.0  # the grid no longer overlaps MNI space
    _resave(func, lambda d: d, aff)
    mask = next(func.glob("*_desc-brain_mask.nii.gz"))
    m = nib.load(mask)
    nib.save(nib.Nifti1Image(np.asarray(m.dataobj), aff), mask)


def mask_shape(func: Path) -> None:
    mask = next(func.glob("*_desc-brain_mask.nii.gz"))
    m = nib.load(mask)
    nib.save(nib.Nifti1Image(np.asarray(m.dataobj)[:-2], m.affine), mask)


def nan_voxels(func: Path) -> None:
    mask = np.asarray(nib.load(next(func.glob("*_desc-brain_mask.nii.gz"))).dataobj) > 0
    i, j, k = np.argwhere(mask)[len(np.argwhere(mask)) // 2]

    def change(d: np.ndarray) -> np.ndarray:
        d[i, j, k, 10] = np.nan
        return d

    _resave(func, change)


def constant_voxels(func: Path) -> None:
    """Zero-filled data: every voxel of the brain mask is constant (no region is covered)."""
    mask = np.asarray(nib.load(next(func.glob("*_desc-brain_mask.nii.gz"))).dataobj) > 0

    def change(d: np.ndarray) -> np.ndarray:
        d[mask] = 1234.0
        return d

    _resave(func, change)


def tr_mismatch(func: Path) -> None:
    side = next(func.glob("*_desc-preproc_bold.json"))
    meta = json.loads(side.read_text())
    meta["RepetitionTime"] = 0.15  # the header says 2 s
    side.write_text(json.dumps(meta))


def small_vox_offset(func: Path) -> None:
    """An uncompressed .nii whose header claims the data start at byte 0."""
    p = _bold(func)
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[108:112] = np.float32(0.0).tobytes()  # vox_offset (native = little endian here)
    p.unlink()
    (p.parent / p.name.removesuffix(".gz")).write_bytes(bytes(raw))


def too_few_volumes(func: Path) -> None:
    _resave(func, lambda d: d[..., :25])
    conf = next(func.glob("*_desc-confounds_timeseries.tsv"))
    table = pd.read_csv(conf, sep="\t")
    table.iloc[:25].to_csv(conf, sep="\t", index=False, na_rep="n/a")


def no_confounds(func: Path) -> None:
    next(func.glob("*_desc-confounds_timeseries.tsv")).unlink()


def bad_confounds(func: Path) -> None:
    next(func.glob("*_desc-confounds_timeseries.tsv")).write_text("this is,not\na table\n")


def no_sidecar(func: Path) -> None:
    next(func.glob("*_desc-preproc_bold.json")).unlink()


def bad_sidecar(func: Path) -> None:
    next(func.glob("*_desc-preproc_bold.json")).write_text('{"RepetitionTime": ')


def duplicate_run(func: Path) -> None:
    p = _bold(func)
    (p.parent / p.name.removesuffix(".gz")).write_bytes(gzip.decompress(p.read_bytes()))


def wrong_space(func: Path) -> None:
    for f in func.iterdir():
        f.rename(f.with_name(f.name.replace("space-MNI152NLin2009cAsym", "space-T1w")))


#: (breaker, file name fragment the failure names, words the reason contains)
CASES = {
    "101": (truncated, "_desc-preproc_bold.nii.gz", "truncated"),
    "102": (corrupt, "_desc-preproc_bold.nii.gz", "corrupt"),
    "103": (shifted_affine, "_desc-preproc_bold.nii.gz", "does not match the atlas space"),
    "104": (mask_shape, "_desc-brain_mask.nii.gz", "brain mask shape"),
    "105": (nan_voxels, "_desc-preproc_bold.nii.gz", "NaN"),
    "106": (constant_voxels, "_desc-preproc_bold.nii.gz", "never change"),
    "107": (too_few_volumes, "_desc-preproc_bold.nii.gz", "usable volumes, fewer than"),
    "108": (no_confounds, "_desc-confounds_timeseries.tsv", "is missing"),
    "109": (bad_confounds, "_desc-confounds_timeseries.tsv", "confounds table"),
    "110": (no_sidecar, "_desc-preproc_bold.json", "sidecar is missing"),
    "111": (bad_sidecar, "_desc-preproc_bold.json", "malformed JSON"),
    "112": (duplicate_run, "_desc-preproc_bold.nii", "duplicate runs"),
    "113": (wrong_space, "space-T1w", "no BOLD in the atlas space"),
    "114": (tr_mismatch, "_desc-preproc_bold.json", "disagrees with the NIfTI header"),
    "115": (small_vox_offset, "_desc-preproc_bold.nii", "vox_offset 0 is below 352"),
}


@pytest.mark.slow
def test_every_bad_input_is_one_clear_failure_line(small_trial: Path, tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    fmriprep = bids / "derivatives" / "fmriprep"
    src = small_trial / "derivatives" / "fmriprep" / "sub-001" / "func"
    (bids).mkdir()
    shutil.copy(small_trial / "dataset_description.json", bids)
    _clone(src, fmriprep / "sub-001" / "func", "001")
    for sub, (breaker, _, _) in CASES.items():
        func = fmriprep / f"sub-{sub}" / "func"
        _clone(src, func, sub)
        breaker(func)
    res = extract_dataset(
        bids,
        tmp_path / "out",
        derivatives=fmriprep,
        atlas="affect",
        low_pass=0.1,
        high_pass=0.01,
        n_jobs=2,
    )
    assert res.computed == ["sub-001"]
    table = pd.read_csv(res.failures_path, sep="\t", dtype=str)
    assert len(table) == len(CASES)
    rows = table.set_index("participant_id")
    for sub, (_, fragment, words) in CASES.items():
        row = rows.loc[f"sub-{sub}"]
        assert fragment in row["file"], (sub, row["file"])
        assert words in row["reason"], (sub, row["reason"])
        assert "\n" not in row["reason"]
    features = pd.read_parquet(res.features_path)
    assert features["participant_id"].tolist() == ["sub-001"]


def test_too_few_volumes_for_the_filter(small_trial: Path, tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    bids.mkdir()
    func = bids / "derivatives" / "fmriprep" / "sub-001" / "func"
    _clone(small_trial / "derivatives" / "fmriprep" / "sub-001" / "func", func, "001")
    too_few_volumes(func)
    res = extract_dataset(
        bids,
        tmp_path / "out",
        derivatives=bids / "derivatives/fmriprep",
        atlas="affect",
        denoise="none",
        low_pass=0.1,
        high_pass=0.01,
    )
    assert res.all_failed and res.features_path is None
    assert "fewer than the Butterworth filter needs" in res.failures.iloc[0]["reason"]


def test_atlas_label_absent_from_table_fails_the_command(small_trial: Path, tmp_path: Path) -> None:
    img = nib.load(_bold(small_trial / "derivatives/fmriprep/sub-001/func"))
    data = np.zeros(img.shape[:3], dtype=np.int16)
    data[5:10, 5:10, 5:10] = 1
    data[12:16, 12:16, 12:16] = 2
    atlas = tmp_path / "atlas-two_dseg.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), atlas)
    labels = tmp_path / "labels.tsv"
    labels.write_text("index\tname\n1\tfirst\n")
    res = CliRunner().invoke(
        app,
        [
            "extract",
            str(small_trial),
            str(tmp_path / "out"),
            "participant",
            "--derivatives",
            str(small_trial / "derivatives" / "fmriprep"),
            "--atlas",
            str(atlas),
            "--atlas-labels",
            str(labels),
        ],
    )
    assert res.exit_code == 2
    assert "absent from the labels table" in res.output and ": 2" in res.output
    assert not (tmp_path / "out").exists()


def test_missing_freesurfer_stats_fail_only_that_subject(small_trial: Path, tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    (bids / "derivatives").mkdir(parents=True)
    shutil.copy(small_trial / "dataset_description.json", bids)
    for sub in ("001", "002"):
        shutil.copytree(
            small_trial / f"derivatives/fmriprep/sub-{sub}",
            bids / f"derivatives/fmriprep/sub-{sub}",
        )
    fs = bids / "derivatives" / "freesurfer"
    shutil.copytree(small_trial / "derivatives/freesurfer/sub-001", fs / "sub-001")
    (fs / "sub-002" / "stats").mkdir(parents=True)
    (fs / "sub-002" / "stats" / "aseg.stats").write_text("# no measures here\n")
    res = extract_dataset(
        bids,
        tmp_path / "out",
        derivatives=bids / "derivatives/fmriprep",
        atlas="affect",
        freesurfer=fs,
    )
    assert res.computed == ["sub-001"]
    row = res.failures.iloc[0]
    assert row["participant_id"] == "sub-002" and row["file"].endswith("aseg.stats")
    assert "EstimatedTotalIntraCranialVol" in row["reason"]


def _one_subject(small_trial: Path, tmp_path: Path) -> tuple[Path, Path]:
    bids = tmp_path / "bids"
    bids.mkdir()
    shutil.copy(small_trial / "dataset_description.json", bids)
    func = bids / "derivatives" / "fmriprep" / "sub-001" / "func"
    _clone(small_trial / "derivatives" / "fmriprep" / "sub-001" / "func", func, "001")
    return bids, func


def test_partial_coverage_drops_the_region_not_the_subject(
    small_trial: Path, tmp_path: Path
) -> None:
    """XCP-D's rule: a region below --min-coverage is NaN; constant voxels elsewhere are fine."""
    from brainmatch.atlases import load_atlas, resample_atlas

    bids, func = _one_subject(small_trial, tmp_path)
    img = nib.load(_bold(func))
    atlas = load_atlas("affect")
    labels3d = resample_atlas(atlas, img.shape[:3], img.affine)
    mask = np.asarray(nib.load(next(func.glob("*_desc-brain_mask.nii.gz"))).dataobj) > 0
    value = int(atlas.labels.set_index("name").loc["amygdala_L", "index"])
    region = np.argwhere((labels3d == value) & mask)
    n_bad = int(np.ceil(0.7 * len(region)))
    outside = np.argwhere(mask & (labels3d == 0))[:50]

    def change(d: np.ndarray) -> np.ndarray:
        for i, j, k in [*region[:n_bad], *outside]:
            d[i, j, k, :] = 0.0  # dropped-out voxels
        return d

    _resave(func, change)
    out = tmp_path / "out"
    res = extract_dataset(bids, out, derivatives=bids / "derivatives/fmriprep", atlas="affect")
    assert res.failures.empty, res.failures.to_dict("records")
    table = pd.read_parquet(res.features_path)
    assert np.isnan(table.loc[0, "amp__amygdala_R"]) is np.False_
    assert "amp__amygdala_L" not in table.columns or table["amp__amygdala_L"].isna().all()
    cov = pd.read_csv(next((out / "sub-001/func").glob("*_stat-coverage_bold.tsv")), sep="\t")
    got = cov.set_index("name").loc["amygdala_L", "coverage"]
    assert got == pytest.approx(1 - n_bad / int((labels3d == value).sum()), abs=1e-6)
    assert (cov.set_index("name").drop("amygdala_L")["coverage"] == 1.0).all()
    # a lower --min-coverage keeps the region (through the CLI)
    result = CliRunner().invoke(
        app,
        [
            "extract", str(bids), str(tmp_path / "out2"), "participant",
            "--derivatives", str(bids / "derivatives/fmriprep"), "--atlas", "affect",
            "--min-coverage", "0.2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    kept = pd.read_parquet(tmp_path / "out2" / "features.parquet")
    assert np.isfinite(kept.loc[0, "amp__amygdala_L"])


def test_low_pass_above_nyquist_is_refused(small_trial: Path, tmp_path: Path) -> None:
    bids, _ = _one_subject(small_trial, tmp_path)
    res = extract_dataset(
        bids, tmp_path / "out", derivatives=bids / "derivatives/fmriprep", atlas="affect",
        low_pass=0.3,
    )  # fmt: skip
    assert res.all_failed
    assert (
        "--low-pass 0.3 Hz is at or above the Nyquist frequency 0.25 Hz"
        in (res.failures.iloc[0]["reason"])
    )


@pytest.mark.parametrize("n_jobs", [-3, -2])
def test_bad_n_jobs_is_refused(small_trial: Path, tmp_path: Path, n_jobs: int) -> None:
    from brainmatch.errors import BrainmatchInputError

    with pytest.raises(BrainmatchInputError, match="--n-jobs"):
        extract_dataset(
            small_trial, tmp_path / "out", derivatives=small_trial / "derivatives/fmriprep",
            atlas="affect", n_jobs=n_jobs,
        )  # fmt: skip
    result = CliRunner().invoke(
        app,
        [
            "extract", str(small_trial), str(tmp_path / "out"), "participant",
            "--derivatives", str(small_trial / "derivatives/fmriprep"), "--atlas", "affect",
            "--n-jobs", str(n_jobs),
        ],
    )  # fmt: skip
    assert result.exit_code == 2 and "error:" in result.output and "--n-jobs" in result.output
    assert not (tmp_path / "out").exists()
