"""Task activation: the per-run GLM against nilearn's FirstLevelModel, contrasts, failures."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

TR = 2.0
N_VOL = 90
NAMES = ["amygdala", "fusiform", "control"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _events() -> pd.DataFrame:
    onsets = np.arange(0, N_VOL * TR - 20, 18.0)
    kinds = ["shapes", "faces"] * len(onsets)
    return pd.DataFrame({"onset": onsets, "duration": 18.0, "trial_type": kinds[: len(onsets)]})


def _region_series(seed: int, faces_amp: tuple[float, ...]) -> np.ndarray:
    from nilearn.glm.first_level import make_first_level_design_matrix

    rng = np.random.default_rng(seed)
    frame_times = np.arange(N_VOL) * TR
    design = make_first_level_design_matrix(frame_times, _events(), drift_model=None)
    out = np.empty((N_VOL, len(NAMES)))
    for k, amp in enumerate(faces_amp):
        noise = np.zeros(N_VOL)
        for t in range(1, N_VOL):
            noise[t] = 0.4 * noise[t - 1] + rng.normal(0, 3.0)
        drift = np.linspace(0, 8, N_VOL)
        out[:, k] = (
            1000 + 10 * amp * design["faces"].to_numpy() + 3 * design["shapes"] + noise + drift
        )
    return out


def _write_run(root: Path, sub: str, series: np.ndarray, events: pd.DataFrame | None) -> Path:
    """A 6 x 6 x 6 run whose three atlas blocks carry ``series`` in every voxel."""
    shape = (6, 6, 6)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = -12
    atlas = np.zeros(shape, dtype=np.int16)
    atlas[:2, :, :3] = 1
    atlas[2:4, :, :3] = 2
    atlas[4:, :, :3] = 3
    data = np.zeros((*shape, N_VOL), dtype=np.float32)
    for k in range(3):
        data[atlas == k + 1] = series[:, k]
    func = root / "deriv" / f"sub-{sub}" / "func"
    func.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{sub}_task-faces_space-MNI152NLin2009cAsym"
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms((4.0, 4.0, 4.0, TR))
    nib.save(img, func / f"{stem}_desc-preproc_bold.nii.gz")
    nib.save(
        nib.Nifti1Image((atlas > 0).astype(np.uint8), affine),
        func / f"{stem}_desc-brain_mask.nii.gz",
    )
    (func / f"{stem}_desc-preproc_bold.json").write_text(json.dumps({"RepetitionTime": TR}))
    raw = root / "bids" / f"sub-{sub}" / "func"
    raw.mkdir(parents=True, exist_ok=True)
    if events is not None:
        events.to_csv(raw / f"sub-{sub}_task-faces_events.tsv", sep="\t", index=False)
    atlas_path = root / "atlas-blocks_dseg.nii.gz"
    nib.save(nib.Nifti1Image(atlas, affine), atlas_path)
    pd.DataFrame({"index": [1, 2, 3], "name": NAMES}).to_csv(
        root / "atlas-blocks_dseg.tsv", sep="\t", index=False
    )
    return atlas_path


def _nilearn_effects(
    root: Path, sub: str, contrast: str, noise_model: str, **kwargs: object
) -> np.ndarray:
    from nilearn.glm.first_level import FirstLevelModel

    func = root / "deriv" / f"sub-{sub}" / "func"
    stem = f"sub-{sub}_task-faces_space-MNI152NLin2009cAsym"
    atlas = np.asarray(nib.load(root / "atlas-blocks_dseg.nii.gz").dataobj)
    model = FirstLevelModel(
        t_r=TR,
        mask_img=str(func / f"{stem}_desc-brain_mask.nii.gz"),
        noise_model=noise_model,
        **kwargs,  # type: ignore[arg-type]
    )
    # (nilearn's gc.collect() per image scans only this test's objects: conftest.py
    # freezes the heap around every test)
    model.fit(str(func / f"{stem}_desc-preproc_bold.nii.gz"), events=_events())
    maps = model.compute_contrast(contrast, output_type="all")
    out = []
    for key in ("effect_size", "z_score"):
        arr = np.asarray(maps[key].get_fdata())
        out.append([float(arr[atlas == k + 1].mean()) for k in range(3)])
    return np.asarray(out)


@pytest.mark.parametrize("noise_model", ["ar1", "ols"])
def test_task_glm_equals_nilearn_first_level(tmp_path: Path, noise_model: str) -> None:
    from brainmatch.features import extract_dataset
    from brainmatch.features.config import TaskOptions

    atlas = _write_run(tmp_path, "01", _region_series(1, (1.0, 0.6, 0.0)), _events())
    res = extract_dataset(
        tmp_path / "bids",
        tmp_path / "out",
        derivatives=tmp_path / "deriv",
        atlas=atlas,
        denoise="none",
        task_options=TaskOptions(
            contrasts=("faces-shapes",), noise_model=noise_model, qc_figures=noise_model == "ar1"
        ),
    )
    assert res.failures.empty, res.failures.to_dict("records")
    table = pd.read_parquet(res.features_path).set_index("participant_id")
    ours = [table.loc["sub-01", f"task__faces__faces_shapes__{n}"] for n in NAMES]
    ref = _nilearn_effects(tmp_path, "01", "faces-shapes", noise_model)
    # nilearn's masker hands the GLM float32 voxel signals; brainmatch's region means are
    # float64: the two agree to ~1e-6 relative
    np.testing.assert_allclose(ours, ref[0], rtol=1e-5, atol=1e-9)
    stat = pd.read_csv(
        tmp_path / "out/sub-01/func/"
        "sub-01_task-faces_space-MNI152NLin2009cAsym_seg-blocks_contrast-facesMinusShapes_statmap.tsv",
        sep="\t",
    )
    np.testing.assert_allclose(stat["z_score"], ref[1], rtol=1e-5, atol=1e-6)
    assert ours[0] > ours[1] > 0.0 > ours[2]  # planted: faces 1.0 / 0.6 / 0 (x 10), shapes 3
    if noise_model == "ar1":
        svg = list((tmp_path / "out/sub-01/func").glob("*glassbrain.svg"))
        assert svg and svg[0].read_text().lstrip().startswith("<?xml")
        assert (
            tmp_path / "out/sub-01/func/sub-01_task-faces_space-MNI152NLin2009cAsym_design.svg"
        ).exists()
    # no resting-state features from a task run
    assert not [c for c in table.columns if c.startswith(("conn__", "amp__"))]


def test_default_contrasts_one_per_condition(tmp_path: Path) -> None:
    from brainmatch.features import extract_dataset
    from brainmatch.features.config import TaskOptions

    atlas = _write_run(tmp_path, "01", _region_series(2, (1.0, 0.5, 0.0)), _events())
    res = extract_dataset(
        tmp_path / "bids",
        tmp_path / "out",
        derivatives=tmp_path / "deriv",
        atlas=atlas,
        denoise="none",
        task_options=TaskOptions(qc_figures=False),
    )
    cols = {
        c.split("__")[2]
        for c in pd.read_parquet(res.features_path).columns
        if c.startswith("task__")
    }
    assert cols == {"faces", "shapes"}


@pytest.mark.parametrize(
    ("events", "contrast", "message"),
    [
        (
            pd.DataFrame({"onset": [0, 20], "trial_type": ["a", "b"]}),
            "faces",
            "needs columns onset and duration",
        ),
        (
            pd.DataFrame({"onset": ["x", 20], "duration": [1, 1], "trial_type": ["a", "b"]}),
            "faces",
            "must hold numbers",
        ),
        (
            pd.DataFrame({"onset": [0, 900], "duration": [1, 1], "trial_type": ["a", "b"]}),
            "faces",
            "after the run ends",
        ),
        (_events(), "faces-houses", "cannot be evaluated over the design columns"),
    ],
)
def test_bad_events_and_contrasts_are_one_failure_line(
    tmp_path: Path, events: pd.DataFrame, contrast: str, message: str
) -> None:
    from brainmatch.features import extract_dataset
    from brainmatch.features.config import TaskOptions

    atlas = _write_run(tmp_path, "01", _region_series(3, (1.0, 0.5, 0.0)), events)
    _write_run(tmp_path, "02", _region_series(4, (1.0, 0.5, 0.0)), _events())
    res = extract_dataset(
        tmp_path / "bids",
        tmp_path / "out",
        derivatives=tmp_path / "deriv",
        atlas=atlas,
        denoise="none",
        task_options=TaskOptions(contrasts=(contrast,), qc_figures=False),
    )
    if contrast == "faces-houses":  # both subjects lack "houses"
        assert len(res.failures) == 2
    else:
        assert res.failures["participant_id"].tolist() == ["sub-01"]
        assert res.computed == ["sub-02"]
    assert message in res.failures.iloc[0]["reason"]


def test_cli_contrast_json_and_noise_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    atlas = _write_run(tmp_path, "01", _region_series(5, (1.0, 0.5, 0.0)), _events())
    spec = tmp_path / "contrasts.json"
    spec.write_text(json.dumps({"emotion": "faces - shapes"}))
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(tmp_path / "bids"),
            str(tmp_path / "out"),
            "participant",
            "--derivatives",
            str(tmp_path / "deriv"),
            "--atlas",
            str(atlas),
            "--denoise",
            "none",
            "--contrast",
            str(spec),
            "--task-noise-model",
            "ols",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "out" / "features.parquet").set_index("participant_id")
    ref = _nilearn_effects(tmp_path, "01", "faces - shapes", "ols")
    assert table.loc["sub-01", "task__faces__emotion__amygdala"] == pytest.approx(
        ref[0][0], rel=1e-6
    )


def test_cli_hrf_high_pass_and_no_qc(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    atlas = _write_run(tmp_path, "01", _region_series(6, (1.0, 0.5, 0.0)), _events())
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "extract", str(tmp_path / "bids"), str(out), "participant",
            "--derivatives", str(tmp_path / "deriv"), "--atlas", str(atlas), "--denoise", "none",
            "--contrast", "faces-shapes", "--task-hrf", "spm", "--task-high-pass", "0.02",
            "--no-qc-reports",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "features.parquet").set_index("participant_id")
    ref = _nilearn_effects(tmp_path, "01", "faces-shapes", "ar1", hrf_model="spm", high_pass=0.02)
    ours = [table.loc["sub-01", f"task__faces__faces_shapes__{n}"] for n in NAMES]
    np.testing.assert_allclose(ours, ref[0], rtol=1e-5, atol=1e-9)
    assert not list(out.rglob("*.svg")) and not list(out.rglob("*_desc-qc_bold.html"))
    # the default drift (0.01 Hz) gives different numbers: the option is really used
    default = _nilearn_effects(tmp_path, "01", "faces-shapes", "ar1", hrf_model="spm")
    assert not np.allclose(default[0], ref[0], rtol=1e-7)
