"""The trial simulator: BIDS/fMRIPrep layout, consistency with its own truth, determinism,
recovery of the planted biomarkers, and bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainmatch.atlases import template_grid
from brainmatch.errors import BrainmatchInputError
from brainmatch.simulate import TrialSpec, draw_trial, simulate_trial
from brainmatch.simulate.model import interaction_scale, parse_effect_size

SPACE = "space-MNI152NLin2009cAsym_res-4"


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values="n/a")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- layout


def test_layout_and_files_load(small_trial: Path) -> None:
    root = small_trial
    for name in (
        "dataset_description.json",
        "participants.tsv",
        "participants.json",
        "README",
        "phenotype/outcomes.tsv",
        "phenotype/outcomes.json",
        "ground_truth.json",
        "ground_truth.tsv",
        "derivatives/fmriprep/dataset_description.json",
    ):
        assert (root / name).is_file(), name
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] and desc["Name"]
    deriv = json.loads((root / "derivatives/fmriprep/dataset_description.json").read_text())
    assert deriv["DatasetType"] == "derivative" and deriv["GeneratedBy"][0]["Name"]

    participants = _read_tsv(root / "participants.tsv")
    assert list(participants.columns) == ["participant_id", "age", "sex", "site", "arm"]
    assert len(participants) == 8
    outcomes = _read_tsv(root / "phenotype/outcomes.tsv")
    assert list(outcomes.columns) == ["participant_id", "hamd_baseline", "hamd_week8", "remission"]

    shape, affine = template_grid(4)
    for pid in participants["participant_id"]:
        func = root / "derivatives/fmriprep" / pid / "func"
        bold = func / f"{pid}_task-rest_{SPACE}_desc-preproc_bold.nii.gz"
        img = nib.load(bold)
        assert img.shape == (*shape, 60)
        assert img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, affine)
        assert img.header.get_zooms()[3] == pytest.approx(2.0)
        side = json.loads((func / f"{pid}_task-rest_{SPACE}_desc-preproc_bold.json").read_text())
        assert side["RepetitionTime"] == 2.0 and side["TaskName"] == "rest"
        mask = nib.load(func / f"{pid}_task-rest_{SPACE}_desc-brain_mask.nii.gz")
        assert mask.shape == shape
        assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}
        assert (func / f"{pid}_task-rest_desc-confounds_timeseries.tsv").is_file()
        assert (func / f"{pid}_task-rest_desc-confounds_timeseries.json").is_file()
        assert (root / "derivatives/freesurfer" / pid / "stats/aseg.stats").is_file()


def test_bold_is_zero_outside_mask_and_positive_inside(small_trial: Path) -> None:
    func = small_trial / "derivatives/fmriprep/sub-001/func"
    data = np.asarray(
        nib.load(func / f"sub-001_task-rest_{SPACE}_desc-preproc_bold.nii.gz").dataobj
    )
    mask = (
        np.asarray(nib.load(func / f"sub-001_task-rest_{SPACE}_desc-brain_mask.nii.gz").dataobj) > 0
    )
    assert np.all(data[~mask] == 0)
    assert np.all(data[mask] > 1000)


MOTION = [f"{a}_{b}" for a in ("trans", "rot") for b in "xyz"]


def test_confounds_have_fmriprep_columns_and_values_match_image(small_trial: Path) -> None:
    func = small_trial / "derivatives/fmriprep/sub-002/func"
    conf = _read_tsv(func / "sub-002_task-rest_desc-confounds_timeseries.tsv")
    expected = [
        "global_signal",
        "csf",
        "white_matter",
        "csf_wm",
        "framewise_displacement",
        "dvars",
        "std_dvars",
        "rmsd",
        "a_comp_cor_00",
        "c_comp_cor_00",
        "w_comp_cor_00",
        "t_comp_cor_00",
    ]
    for m in [*MOTION, "global_signal", "csf", "white_matter"]:
        expected += [m, f"{m}_derivative1", f"{m}_power2", f"{m}_derivative1_power2"]
    missing = sorted(set(expected) - set(conf.columns))
    assert not missing, missing
    assert len(conf) == 60
    # fMRIPrep's 128 s cosine basis: floor(2 * n * TR / 128) - 1 regressors (none for 120 s)
    assert not [c for c in conf if c.startswith("cosine")]
    # fMRIPrep writes n/a in the first row of derivatives and FD, nowhere else
    assert conf["framewise_displacement"].isna().tolist() == [True] + [False] * 59
    assert conf["trans_x_derivative1"].iloc[0] != conf["trans_x_derivative1"].iloc[0]
    assert (
        conf.drop(
            columns=[
                c
                for c in conf
                if "derivative1" in c
                or c in ("framewise_displacement", "dvars", "std_dvars", "rmsd")
            ]
        )
        .notna()
        .all()
        .all()
    )
    # FD is Power's: |d trans| summed + 50 mm x |d rot| summed
    d = conf[MOTION].diff().abs()
    fd = d[MOTION[:3]].sum(axis=1) + 50 * d[MOTION[3:]].sum(axis=1)
    np.testing.assert_allclose(conf["framewise_displacement"][1:], fd[1:], rtol=1e-6)
    # global signal is the mean over the brain mask of the written image
    bold = nib.load(func / f"sub-002_task-rest_{SPACE}_desc-preproc_bold.nii.gz")
    mask = (
        np.asarray(nib.load(func / f"sub-002_task-rest_{SPACE}_desc-brain_mask.nii.gz").dataobj) > 0
    )
    gs = np.asarray(bold.dataobj)[mask].mean(axis=0, dtype=np.float64)
    np.testing.assert_allclose(conf["global_signal"], gs, rtol=1e-6)
    meta = json.loads((func / "sub-002_task-rest_desc-confounds_timeseries.json").read_text())
    assert meta["a_comp_cor_00"]["Mask"] == "combined"
    assert meta["a_comp_cor_00"]["Method"] == "aCompCor"
    assert meta["t_comp_cor_00"]["Method"] == "tCompCor"
    # compcor components are orthonormal
    comps = conf[[c for c in conf if c.startswith("a_comp_cor")]].to_numpy()
    np.testing.assert_allclose(comps.T @ comps, np.eye(comps.shape[1]), atol=1e-6)


@pytest.mark.parametrize("strategy", ["simple", "scrubbing", "compcor"])
def test_nilearn_loads_confounds(small_trial: Path, strategy: str) -> None:
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    bold = (
        small_trial
        / "derivatives/fmriprep/sub-003/func"
        / f"sub-003_task-rest_{SPACE}_desc-preproc_bold.nii.gz"
    )
    confounds, _sample_mask = load_confounds_strategy(str(bold), denoise_strategy=strategy)
    assert len(confounds) == 60
    assert confounds.shape[1] >= 6
    if strategy == "compcor":
        assert any(c.startswith("a_comp_cor") for c in confounds)


def test_aseg_stats_is_freesurfer_format(small_trial: Path) -> None:
    text = (small_trial / "derivatives/freesurfer/sub-001/stats/aseg.stats").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# Title Segmentation Statistics")
    etiv = [ln for ln in lines if ln.startswith("# Measure EstimatedTotalIntraCranialVol")]
    assert len(etiv) == 1 and 9e5 < float(etiv[0].split(",")[3]) < 2.5e6
    header = next(ln for ln in lines if ln.startswith("# ColHeaders")).split()[2:]
    assert header[:5] == ["Index", "SegId", "NVoxels", "Volume_mm3", "StructName"]
    rows = [ln.split() for ln in lines if not ln.startswith("#")]
    table = pd.DataFrame(rows, columns=header)
    n_rows = int(next(ln for ln in lines if ln.startswith("# NRows")).split()[2])
    assert len(table) == n_rows
    vols = table.set_index("StructName")["Volume_mm3"].astype(float)
    for name in ("Left-Hippocampus", "Right-Hippocampus", "Left-Amygdala", "Right-Amygdala"):
        assert 500 < vols[name] < 8000, name


# --------------------------------------------------------------------------- truth


def test_observed_outcomes_equal_truth_under_received_arm(small_trial: Path) -> None:
    outcomes = _read_tsv(small_trial / "phenotype/outcomes.tsv")
    truth = _read_tsv(small_trial / "ground_truth.tsv")
    participants = _read_tsv(small_trial / "participants.tsv")
    merged = participants.merge(outcomes, on="participant_id").merge(
        truth, on="participant_id", suffixes=("", "_truth")
    )
    assert (merged["arm"] == merged["arm_truth"]).all()
    for row in merged.itertuples():
        true_y = getattr(row, f"hamd_week8__{row.arm}")
        if row.dropout:
            assert math.isnan(row.hamd_week8)
            assert math.isnan(row.remission)
        else:
            assert row.hamd_week8 == true_y
            assert row.remission == int(true_y <= 7)
    for arm in ("CBT", "SSRI"):
        assert f"hamd_week8__{arm}" in truth and f"mu__{arm}" in truth
    mu = truth[["mu__CBT", "mu__SSRI"]].to_numpy()
    expected = np.array(["CBT", "SSRI"])[mu.argmin(axis=1)]
    assert (truth["oracle_arm"].to_numpy() == expected).all()
    params = json.loads((small_trial / "ground_truth.json").read_text())
    assert params["spec"]["seed"] == 7 and len(params["sites"]) == 2
    assert {a["name"] for a in params["arms"]} == {"CBT", "SSRI"}


def test_outcome_model_recovers_planted_interaction() -> None:
    """Regressing the true outcomes on arm x biomarker recovers beta and its signs."""
    trial = draw_trial(TrialSpec(n_subjects=4000, effect_size=0.5, seed=3))
    t = trial.truth
    beta = interaction_scale(0.5)
    diff = t["hamd_week8__CBT"] - t["hamd_week8__SSRI"]
    x = np.column_stack([np.ones(len(t)), t["insula_activity"], t["scc_connectivity"]])
    coef, *_ = np.linalg.lstsq(x, diff.to_numpy(float), rcond=None)
    # CBT loadings (+1, -1), SSRI (-1, +1): the CBT-SSRI difference has slopes (2b, -2b)
    assert coef[1] == pytest.approx(2 * beta, abs=0.15)
    assert coef[2] == pytest.approx(-2 * beta, abs=0.15)
    assert coef[0] == pytest.approx(11.1 - 10.2, abs=0.2)
    # realistic effect: SD of the true PAI is 0.5 x 6 points, about a third with |PAI| >= 3
    pai = t["mu__CBT"] - t["mu__SSRI"]
    assert pai.std() == pytest.approx(3.0, rel=0.06)
    assert 0.25 < (pai.abs() >= 3).mean() < 0.4
    # dropout near the requested 15 %
    assert trial.outcomes["hamd_week8"].isna().mean() == pytest.approx(0.15, abs=0.03)


def test_null_effect_has_no_interaction() -> None:
    t = draw_trial(TrialSpec(n_subjects=500, effect_size=0.0, seed=1)).truth
    pai = t["mu__CBT"] - t["mu__SSRI"]
    # without interaction the expected advantage does not depend on the patient
    assert pai.std() < 1e-3


def test_three_arms_including_unknown_name() -> None:
    trial = draw_trial(TrialSpec(n_subjects=90, arms=("CBT", "SSRI", "ketamine"), seed=5))
    assert trial.truth["arm"].value_counts().to_dict() == {"CBT": 30, "SSRI": 30, "ketamine": 30}
    klass = {a.name: a.klass for a in trial.arms}
    assert klass == {"CBT": "psychotherapy", "SSRI": "medication", "ketamine": "other"}
    assert {"hamd_week8__ketamine", "mu__ketamine"} <= set(trial.truth.columns)


def test_arms_balanced_within_sites() -> None:
    t = draw_trial(TrialSpec(n_subjects=60, n_sites=3, seed=2)).truth
    counts = pd.crosstab(t["site"], t["arm"])
    assert (counts.max(axis=1) - counts.min(axis=1)).max() <= 1


SCC = ("ctx-lh-rostralanteriorcingulate", "ctx-rh-rostralanteriorcingulate")
SCC_TARGETS = (
    "ctx-lh-insula",
    "ctx-lh-parsopercularis",
    "ctx-lh-parstriangularis",
    "ctx-lh-medialorbitofrontal",
)


def test_images_carry_the_planted_biomarkers(tmp_path: Path) -> None:
    """nilearn, run as a user would, recovers both prescriptive biomarkers from the images:
    right-insula amplitude tracks ``insula_activity`` and subcallosal-cingulate connectivity
    tracks ``scc_connectivity``."""
    from nilearn.interfaces.fmriprep import load_confounds_strategy
    from nilearn.maskers import NiftiLabelsMasker

    from brainmatch.atlases import load_shipped_atlas, resample_labels

    spec = TrialSpec(n_subjects=10, n_sites=1, resolution=4, n_volumes=80, seed=5)
    # one process: the output does not depend on n_jobs (test_same_seed_gives_identical_bytes)
    root = simulate_trial(spec, tmp_path / "bids", n_jobs=1)
    truth = _read_tsv(root / "ground_truth.tsv")
    atlas = load_shipped_atlas("desikan-killiany")
    labels_img = resample_labels(atlas.image, *template_grid(4))
    names = dict(zip(atlas.labels["index"], atlas.labels["name"], strict=True))
    # one masker for every subject (the labels and the grid are the same for all)
    masker = NiftiLabelsMasker(labels_img, standardize=False, detrend=True, t_r=2.0).fit()
    cols = [names[int(v)] for k, v in masker.region_ids_.items() if k != "background"]
    amplitude, scc = [], []
    for pid in truth["participant_id"]:
        bold = str(
            root
            / "derivatives/fmriprep"
            / pid
            / "func"
            / f"{pid}_task-rest_{SPACE}_desc-preproc_bold.nii.gz"
        )
        confounds, _ = load_confounds_strategy(bold, denoise_strategy="simple")
        ts = masker.transform(bold, confounds=confounds)
        table = pd.DataFrame(ts, columns=cols)
        amplitude.append(np.log(table["ctx-rh-insula"].std() / table.std().median()))
        z = np.arctanh(table.corr().clip(-0.999, 0.999))
        scc.append(np.mean([z.loc[a, b] for a in SCC for b in SCC_TARGETS]))
    assert np.corrcoef(amplitude, truth["insula_activity"])[0, 1] > 0.7
    assert np.corrcoef(scc, truth["scc_connectivity"])[0, 1] > 0.5


def test_two_sessions(tmp_path: Path) -> None:
    spec = TrialSpec(
        n_subjects=4, n_sites=1, resolution=4, n_volumes=30, seed=4, sessions=2, dropout_rate=0.3
    )
    root = simulate_trial(spec, tmp_path / "bids", n_jobs=1)
    truth = _read_tsv(root / "ground_truth.tsv")
    for row in truth.itertuples():
        base = root / "derivatives/fmriprep" / row.participant_id
        pre = (
            base
            / "ses-pre/func"
            / (
                f"{row.participant_id}_ses-pre_task-rest_"
                f"space-MNI152NLin2009cAsym_res-4_desc-preproc_bold.nii.gz"
            )
        )
        assert pre.is_file()
        assert (
            base / "ses-pre/func" / f"{row.participant_id}_ses-pre_task-rest_desc-confounds_"
            "timeseries.tsv"
        ).is_file()
        post = list((base / "ses-post").glob("func/*_desc-preproc_bold.nii.gz"))
        assert len(post) == (0 if row.dropout else 1)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    spec = TrialSpec(n_subjects=3, n_sites=2, resolution=4, n_volumes=25, seed=42)
    a = simulate_trial(spec, tmp_path / "a", n_jobs=1)
    b = simulate_trial(spec, tmp_path / "b", n_jobs=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert _sha(a / rel) == _sha(b / rel), rel
    c = simulate_trial(
        TrialSpec(n_subjects=3, n_sites=2, resolution=4, n_volumes=25, seed=43),
        tmp_path / "c",
        n_jobs=1,
    )
    assert _sha(a / "ground_truth.tsv") != _sha(c / "ground_truth.tsv")


# --------------------------------------------------------------------------- bad input


def test_refuses_non_empty_folder_and_keeps_its_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    spec = TrialSpec(n_subjects=2, n_sites=1, n_volumes=20)
    with pytest.raises(BrainmatchInputError, match=r"not empty.*--overwrite"):
        simulate_trial(spec, out)
    with pytest.raises(BrainmatchInputError, match="not written by brainmatch simulate"):
        simulate_trial(spec, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_overwrite_replaces_earlier_simulation(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    simulate_trial(TrialSpec(n_subjects=2, n_sites=1, n_volumes=20, seed=1), out)
    simulate_trial(TrialSpec(n_subjects=3, n_sites=1, n_volumes=20, seed=2), out, overwrite=True)
    assert len(_read_tsv(out / "participants.tsv")) == 3
    assert not list((out / "derivatives/fmriprep").glob("sub-004"))


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    out = tmp_path / "sim"

    def boom(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate_trial(TrialSpec(n_subjects=4, n_sites=1, n_volumes=20), out, progress=boom)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_subjects": 0}, "--n-subjects 0: need at least 2"),
        ({"n_sites": 0}, "--sites 0"),
        ({"n_sites": 5, "n_subjects": 3}, "more sites than subjects"),
        ({"arms": ("CBT",)}, "at least two arms"),
        ({"arms": ("CBT", "cbt")}, "duplicate arm"),
        ({"arms": ("CBT", "SSRI drug")}, "must start with a letter"),
        ({"resolution": 5}, "--resolution 5: must be 2, 3 or 4"),
        ({"n_volumes": 5}, "--n-volumes 5"),
        ({"tr": 0.0}, "--tr 0.0"),
        ({"sessions": 3}, "--sessions 3"),
        ({"seed": -1}, "--seed -1"),
    ],
)
def test_impossible_options(kwargs: dict, message: str) -> None:
    with pytest.raises(BrainmatchInputError, match=message.replace("(", r"\(")):
        TrialSpec(**kwargs)


def test_effect_size_names_and_numbers() -> None:
    assert parse_effect_size("null") == 0.0
    assert parse_effect_size("realistic") == 0.5
    assert parse_effect_size("0.8") == 0.8
    with pytest.raises(BrainmatchInputError, match="--effect-size 'huge'"):
        parse_effect_size("huge")
    with pytest.raises(BrainmatchInputError, match="between 0 and 5"):
        parse_effect_size("-1")


# --------------------------------------------------------------------------- CLI


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "brainmatch", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _cli_in_process(*args: str) -> tuple[int, str]:
    """Run ``brainmatch *args`` in this process: exit code and output (stdout + stderr).

    A subprocess pays about 2 s of imports and grid set-up per run.  Warnings are filtered
    as in a fresh interpreter (pytest turns on deprecation warnings), and the CLI prints
    each as a ``warning:`` line as it would there.
    """
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (
            DeprecationWarning,
            PendingDeprecationWarning,
            ImportWarning,
            ResourceWarning,
        ):
            warnings.filterwarnings("ignore", category=category)
        res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_cli_version_and_help() -> None:
    from brainmatch import __version__

    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"brainmatch {__version__}"
    res = _cli("--help")
    assert res.returncode == 0
    for command in ("simulate", "demo"):
        assert command in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arms", "CBT;SSRI"], "arm names must start with a letter"),
        (["--arms", "CBT,,SSRI"], "found an empty entry"),
        (["--n-subjects", "0"], "need at least 2 subjects"),
        (["--effect-size", "big"], "--effect-size 'big'"),
    ],
)
def test_cli_bad_options_exit_2_with_message(tmp_path: Path, args: list[str], message: str) -> None:
    res = _cli("simulate", str(tmp_path / "out"), *args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


def test_cli_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    res = _cli("simulate", str(tmp_path), "--n-subjects", "2", "--sites", "1", "--n-volumes", "20")
    assert res.returncode == 2
    assert "folder is not empty" in res.stderr and str(tmp_path) in res.stderr
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_cli_killed_run_then_rerun(tmp_path: Path) -> None:
    """SIGKILL mid-run leaves no dataset at OUT; a rerun cleans the partial folder and succeeds."""
    out = tmp_path / "sim"
    args = [
        sys.executable,
        "-m",
        "brainmatch",
        "simulate",
        str(out),
        "--n-subjects",
        "40",
        "--n-volumes",
        "60",
        "--n-jobs",
        "1",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        partial = list(tmp_path.glob(".sim.partial-*/derivatives/fmriprep/sub-*"))
        if len(partial) >= 2:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    # the rerun in this process: the killed one was another (its pid is gone either way)
    code, output = _cli_in_process(
        "simulate", str(out), "--n-subjects", "2", "--sites", "1", "--n-volumes", "20",
        "--n-jobs", "1",
    )  # fmt: skip
    assert code == 0, output
    assert (out / "ground_truth.tsv").is_file()
    assert not list(tmp_path.glob(".sim.partial-*"))
    assert str(out) in output


def _no_nan(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_no_nan(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_nan(v) for v in value)
    return True


@pytest.mark.parametrize(
    "options",
    [["--dwi"], ["--task-fmri"], ["--cortex"], ["--followup"], ["--dwi", "--task-fmri"]],
)
def test_cli_options_with_controls(tmp_path: Path, options: list[str]) -> None:
    """Each optional modality / follow-up combines with --n-controls: no warning, no NaN."""
    out = tmp_path / "sim"
    code, output = _cli_in_process(
        "simulate", str(out), "--n-subjects", "3", "--sites", "3", "--n-controls", "2",
        "--n-volumes", "40", "--resolution", "4", "--n-jobs", "1", *options,
    )  # fmt: skip
    assert code == 0, output
    assert "warning:" not in output.lower()
    for path in out.rglob("*.json"):  # strict JSON: NaN would be written as a bare NaN
        assert _no_nan(json.loads(path.read_text())), path
    truth = _read_tsv(out / "ground_truth.tsv")
    controls = truth.loc[truth["group"] == "control", "participant_id"].tolist()
    assert controls == ["sub-ctrl001", "sub-ctrl002"]
    for c in controls:
        if "--dwi" in options:
            dwi = out / "derivatives" / "qsiprep" / c / "dwi"
            img = nib.load(dwi / f"{c}_space-T1w_desc-preproc_dwi.nii.gz")
            mask = nib.load(dwi / f"{c}_space-T1w_desc-brain_mask.nii.gz").get_fdata() > 0
            assert (np.asarray(img.dataobj)[mask] >= 1).all()  # no cast of NaN signal
        if "--task-fmri" in options:
            func = out / "derivatives" / "fmriprep" / c / "func"
            stem = f"{c}_task-faces_space-MNI152NLin2009cAsym_res-4_desc-preproc_bold"
            assert (func / f"{stem}.nii.gz").is_file()
            conf = _read_tsv(func / f"{c}_task-faces_desc-confounds_timeseries.tsv")
            assert conf["tcompcor"].notna().all()
            assert (out / c / "func" / f"{c}_task-faces_events.tsv").is_file()
        if "--cortex" in options:
            stats = out / "derivatives" / "freesurfer" / c / "stats"
            assert (stats / "lh.aparc.stats").is_file() and (stats / "rh.aparc.stats").is_file()
    if "--followup" in options:  # controls are untreated: no follow-up rows
        followup = _read_tsv(out / "phenotype" / "followup.tsv")
        assert followup["participant_id"].tolist() == ["sub-001", "sub-002", "sub-003"]
        assert set(_read_tsv(out / "followup_truth.tsv")["participant_id"]).isdisjoint(controls)


def test_controls_leave_patients_moderators_and_followup_unchanged() -> None:
    """Controls draw their moderator biomarkers from their own stream; patients are unchanged."""
    from brainmatch.simulate.controls import add_controls
    from brainmatch.simulate.followup import draw_followup

    spec = TrialSpec(n_subjects=8, n_sites=2, dwi=True, task_fmri=True, followup=True)
    alone = draw_trial(spec)
    both = add_controls(draw_trial(dataclasses.replace(spec, n_controls=3)))
    patients = both.truth[both.truth["group"] == "patient"]
    for name in ("cingulum_fa", "amygdala_reactivity", "mu__CBT", "hamd_week8__SSRI"):
        np.testing.assert_array_equal(patients[name].to_numpy(), alone.truth[name].to_numpy())
    ctrl = both.truth[both.truth["group"] == "control"]
    assert ctrl[["cingulum_fa", "amygdala_reactivity"]].notna().all().all()
    assert ctrl["mu__CBT"].isna().all()  # untreated: no outcome, so no moderation
    pd.testing.assert_frame_equal(draw_followup(both)[0], draw_followup(alone)[0])
