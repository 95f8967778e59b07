"""Diffusion features: the tensor fit against DIPY, region summaries, failures, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmatch.features.dtifit import (
    check_gradients,
    design_matrix,
    eigenvalues,
    fit_lower_triangular,
    fit_scalars,
)

dipy = pytest.importorskip("dipy", reason="DIPY (the reference tensor fit) is not installed")

#: mean FA of DIPY 1.12's default (WLS) TensorModel fit on its shipped samples
SAMPLES = {"small_64D": 0.3931, "small_101D": 0.4208, "small_25": 0.4343}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _sample(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path, Path, Path]:
    from dipy.data import get_fnames
    from dipy.io import read_bvals_bvecs

    img, bval, bvec = get_fnames(name=name)
    data = nib.load(img).get_fdata()
    bvals, bvecs = read_bvals_bvecs(bval, bvec)
    return data, bvals, bvecs, Path(img), Path(bval), Path(bvec)


def _dipy_fit(data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, method: str = "WLS"):
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    return TensorModel(gradient_table(bvals, bvecs=bvecs), fit_method=method).fit(data)


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("method", ["WLS", "OLS"])
def test_fit_equals_dipy_on_its_samples(name: str, method: str) -> None:
    data, bvals, bvecs, _, bval_path, bvec_path = _sample(name)
    ref = _dipy_fit(data, bvals, bvecs, method)
    b, g = check_gradients(np.loadtxt(bval_path), np.loadtxt(bvec_path), data.shape[-1])
    maps, non_pd = fit_scalars(design_matrix(b, g), data.reshape(-1, data.shape[-1]), method)
    for s, want in (("fa", ref.fa), ("md", ref.md), ("ad", ref.ad), ("rd", ref.rd)):
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(maps[s], want.ravel(), rtol=0, atol=1e-9 * scale)
    if method == "WLS":  # the figure in the issue, measured with DIPY 1.12
        assert round(float(maps["fa"].mean()), 4) == SAMPLES[name]
    # non-positive-definite fits: DIPY's own unclipped eigenvalues
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import (
        MIN_POSITIVE_SIGNAL,
        TensorModel,
        from_lower_triangular,
        ols_fit_tensor,
        wls_fit_tensor,
    )

    model = TensorModel(gradient_table(bvals, bvecs=bvecs))
    y = np.maximum(data.reshape(-1, data.shape[-1]), MIN_POSITIVE_SIGNAL)
    fit = wls_fit_tensor if method == "WLS" else ols_fit_tensor
    lt, _ = fit(model.design_matrix, y, return_lower_triangular=True)
    dipy_evals = np.linalg.eigvalsh(from_lower_triangular(lt[:, :6]))
    assert int(non_pd.sum()) == int((dipy_evals[:, 0] <= 0).sum())


def test_analytic_tensor() -> None:
    """Eigenvalues 1.5, 0.3, 0.3 (x 1e-3 mm^2/s), rotated: FA 0.769800, MD 7.0e-4."""
    _, bvals, bvecs, *_ = _sample("small_64D")
    bvecs = np.where(np.isnan(bvecs), 0, bvecs)
    rot = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    tensor = rot @ np.diag([1.5e-3, 0.3e-3, 0.3e-3]) @ rot.T
    signal = 1000.0 * np.exp(-bvals * np.einsum("gi,ij,gj->g", bvecs, tensor, bvecs))
    design = design_matrix(*check_gradients(bvals, bvecs, len(bvals)))
    for method in ("WLS", "OLS"):
        maps, non_pd = fit_scalars(design, signal[None, :], method)
        assert maps["fa"][0] == pytest.approx(0.769800, abs=5e-7)
        assert maps["md"][0] == pytest.approx(7.0e-4, rel=1e-9)
        assert maps["ad"][0] == pytest.approx(1.5e-3, rel=1e-9)
        assert maps["rd"][0] == pytest.approx(0.3e-3, rel=1e-9)
        assert not non_pd.any()
        lt = fit_lower_triangular(design, signal[None, :], method)
        np.testing.assert_allclose(eigenvalues(lt)[0], [1.5e-3, 0.3e-3, 0.3e-3], rtol=1e-9)


@pytest.mark.parametrize(
    ("bvals", "bvecs", "message"),
    [
        (np.r_[0, np.full(6, 1000.0)], np.eye(3)[[0, 0, 1, 2, 0, 1, 2]], "for 8 volumes"),
        (np.full(8, 1000.0), np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]], "no b0 volume"),
        (
            np.r_[0, np.full(7, 1000.0)],
            np.r_[[[0, 0, 0]], 2 * np.eye(3)[[0, 1, 2, 0, 1, 2, 0]]],
            "unit vectors",
        ),
        (
            np.r_[0, np.full(7, 1000.0)],
            np.eye(3)[[0, 0, 1, 2, 0, 1, 2, 0]],
            "at least 6 non-collinear",
        ),
        (np.r_[-5, np.full(7, 1000.0)], np.eye(3)[[0, 0, 1, 2, 0, 1, 2, 0]], "negative b-value"),
    ],
)
def test_bad_gradient_tables(bvals: np.ndarray, bvecs: np.ndarray, message: str) -> None:
    from brainmatch.errors import BrainmatchInputError

    with pytest.raises(BrainmatchInputError, match=message):
        check_gradients(bvals, bvecs, 8)


# --- through extract_dataset --------------------------------------------------------------


def _qsiprep(root: Path, name: str = "small_64D", sub: str = "01") -> tuple[Path, Path, Path]:
    """DIPY's sample laid out as QSIPrep output, with a 4-region atlas on its grid."""
    _, _, _, img, bval, bvec = _sample(name)
    bids = root / "bids"
    (bids / f"sub-{sub}").mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text('{"Name": "dipy", "BIDSVersion": "1.9.0"}')
    dwi = root / "qsiprep" / f"sub-{sub}" / "dwi"
    dwi.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{sub}_space-T1w_desc-preproc_dwi"
    source = nib.load(img)
    nib.save(source, dwi / f"{stem}.nii.gz")
    shutil.copy(bval, dwi / f"{stem}.bval")
    shutil.copy(bvec, dwi / f"{stem}.bvec")
    shape = source.shape[:3]
    mask = np.ones(shape, dtype=np.uint8)
    mask[0] = 0
    nib.save(
        nib.Nifti1Image(mask, source.affine), dwi / f"sub-{sub}_space-T1w_desc-brain_mask.nii.gz"
    )
    atlas = np.zeros(shape, dtype=np.int16)
    half = [s // 2 for s in shape]
    atlas[: half[0], : half[1]] = 1
    atlas[half[0] :, : half[1]] = 2
    atlas[: half[0], half[1] :] = 3
    atlas[half[0] :, half[1] :, : max(1, half[2])] = 4
    atlas_path = root / "atlas-blocks_dseg.nii.gz"
    nib.save(nib.Nifti1Image(atlas, source.affine), atlas_path)
    pd.DataFrame(
        {"index": [1, 2, 3, 4], "name": ["front left", "front right", "back left", "back right"]}
    ).to_csv(root / "atlas-blocks_dseg.tsv", sep="\t", index=False)
    return bids, root / "qsiprep", atlas_path


def _dipy_region_means(name: str, atlas_path: Path) -> dict[str, float]:
    data, bvals, bvecs, *_ = _sample(name)
    fit = _dipy_fit(data, bvals, bvecs)
    atlas = np.asarray(nib.load(atlas_path).dataobj)
    mask = np.ones(atlas.shape, dtype=bool)
    mask[0] = False
    names = {1: "front_left", 2: "front_right", 3: "back_left", 4: "back_right"}
    out = {}
    for s, m in (("fa", fit.fa), ("md", fit.md), ("ad", fit.ad), ("rd", fit.rd)):
        for v, n in names.items():
            out[f"dti__{s}__{n}"] = float(m[(atlas == v) & mask].mean())
    return out


def test_extract_dwi_equals_dipy_region_means(tmp_path: Path) -> None:
    from brainmatch.features import extract_dataset
    from brainmatch.features.config import DwiOptions

    bids, qsiprep, atlas = _qsiprep(tmp_path)
    out = tmp_path / "out"
    kwargs = dict(
        derivatives=qsiprep,
        atlas=atlas,
        modalities="dwi",
        dwi_options=DwiOptions(tracts=None),
    )
    res = extract_dataset(bids, out, **kwargs)
    assert res.failures.empty, res.failures.to_dict("records")
    table = pd.read_parquet(res.features_path).set_index("participant_id")
    want = _dipy_region_means("small_64D", atlas)
    for k, v in want.items():
        assert table.loc["sub-01", k] == pytest.approx(v, rel=1e-9, abs=1e-12)
    tsv = out / "sub-01" / "dwi" / "sub-01_space-T1w_seg-blocks_stat-mean_desc-fa_dwimap.tsv"
    rows = pd.read_csv(tsv, sep="\t")
    assert rows["fa"].tolist() == pytest.approx(
        [want[f"dti__fa__{n}"] for n in ("front_left", "front_right", "back_left", "back_right")]
    )
    meta = json.loads(tsv.with_suffix(".json").read_text())
    assert meta["FitMethod"] == "WLS" and meta["NonPositiveDefiniteVoxels"] >= 0
    record = json.loads(next((out / ".records").glob("sub-01_*.json")).read_text())
    assert record["dwi_runs"][0]["n_non_positive_definite"] > 0  # small_64D has some
    again = extract_dataset(bids, out, **kwargs)
    assert again.skipped == ["sub-01"] and not again.computed


def test_bad_gradient_table_is_one_failure_line(tmp_path: Path) -> None:
    from brainmatch.features import extract_dataset
    from brainmatch.features.config import DwiOptions

    bids, qsiprep, atlas = _qsiprep(tmp_path, sub="01")
    _qsiprep(tmp_path, sub="02")
    bval = qsiprep / "sub-02" / "dwi" / "sub-02_space-T1w_desc-preproc_dwi.bval"
    values = np.loadtxt(bval)
    np.savetxt(bval, values[None, :-1], fmt="%g")  # one b-value short
    res = extract_dataset(
        bids,
        tmp_path / "out",
        derivatives=qsiprep,
        atlas=atlas,
        modalities="dwi",
        dwi_options=DwiOptions(tracts=None),
    )
    assert len(res.failures) == 1
    row = res.failures.iloc[0]
    assert row["participant_id"] == "sub-02"
    assert "64 b-values and 65 b-vectors for 65 volumes" in row["reason"]
    assert row["file"].endswith(".bval")
    assert res.computed == ["sub-01"]


def test_cli_modalities_dwi(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    bids, qsiprep, atlas = _qsiprep(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "extract",
            str(bids),
            str(out),
            "participant",
            "--derivatives",
            str(qsiprep),
            "--atlas",
            str(atlas),
            "--modalities",
            "dwi",
            "--dwi-tracts",
            "none",
            "--dwi-fit-method",
            "OLS",
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "features.parquet").set_index("participant_id")
    data, bvals, bvecs, *_ = _sample("small_64D")
    fit = _dipy_fit(data, bvals, bvecs, "OLS")
    a = np.asarray(nib.load(atlas).dataobj)
    sel = a == 1
    sel[0] = False
    assert table.loc["sub-01", "dti__fa__front_left"] == pytest.approx(
        float(fit.fa[sel].mean()), rel=1e-9
    )


def test_qsirecon_maps_are_used_instead_of_fitting(tmp_path: Path) -> None:
    """With --qsirecon, a run's tensor maps are summarised (the DWI is not even read)."""
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    bids, qsiprep, atlas = _qsiprep(tmp_path)
    data, bvals, bvecs, img, *_ = _sample("small_64D")
    fit = _dipy_fit(data, bvals, bvecs)
    recon = tmp_path / "qsirecon" / "qsirecon-DIPYDTI" / "sub-01" / "dwi"
    recon.mkdir(parents=True)
    affine = nib.load(img).affine
    for s, m in (("fa", fit.fa), ("md", fit.md), ("ad", fit.ad), ("rd", fit.rd)):
        nib.save(
            nib.Nifti1Image(m.astype(np.float64), affine),
            recon / f"sub-01_space-T1w_model-tensor_param-{s}_dwimap.nii.gz",
        )
    # a DWI that could not be fitted: proves the maps are what is summarised
    (qsiprep / "sub-01" / "dwi" / "sub-01_space-T1w_desc-preproc_dwi.bval").write_text("0 1000\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "extract", str(bids), str(out), "participant", "--derivatives", str(qsiprep),
            "--atlas", str(atlas), "--modalities", "dwi", "--dwi-tracts", "none",
            "--qsirecon", str(tmp_path / "qsirecon"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "features.parquet").set_index("participant_id")
    for k, v in _dipy_region_means("small_64D", atlas).items():
        assert table.loc["sub-01", k] == pytest.approx(v, rel=1e-12)
    record = json.loads(next((out / ".records").glob("sub-01_*.json")).read_text())
    assert record["dwi_runs"][0]["source"] == "qsirecon"
    assert all("param-" in e["path"] or "mask" in e["path"] for e in record["inputs"])


def test_dwi_space_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    bids, qsiprep, atlas = _qsiprep(tmp_path)
    for f in (qsiprep / "sub-01" / "dwi").iterdir():
        f.rename(f.with_name(f.name.replace("space-T1w", "space-ACPC")))
    base = [
        "extract", str(bids), "", "participant", "--derivatives", str(qsiprep),
        "--atlas", str(atlas), "--modalities", "dwi", "--dwi-tracts", "none",
    ]  # fmt: skip
    base[2] = str(tmp_path / "t1w")
    result = CliRunner().invoke(app, base)
    assert result.exit_code == 1  # every participant failed
    assert "no DWI in space T1w: found space ACPC" in result.output
    base[2] = str(tmp_path / "acpc")
    result = CliRunner().invoke(app, [*base, "--dwi-space", "ACPC"])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "acpc" / "features.parquet").set_index("participant_id")
    want = _dipy_region_means("small_64D", atlas)["dti__fa__front_left"]
    assert table.loc["sub-01", "dti__fa__front_left"] == pytest.approx(want, rel=1e-9)
