"""Every modality into one feature table: a simulated trial with DWI, task runs and cortex.

The simulator plants a cingulum-FA and an amygdala-reactivity moderator (and ENIGMA-named
cortical measures); extraction must recover them.  Also: the aparc.stats reader and its
failures, and ``brainmatch simulate --dwi --task-fmri --cortex`` through the CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def multimodal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    from brainmatch.simulate import TrialSpec, simulate_trial

    os.environ.setdefault("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    spec = TrialSpec(
        n_subjects=8,
        n_sites=2,
        arms=("CBT", "SSRI"),
        resolution=4,
        n_volumes=80,
        seed=3,
        dwi=True,
        task_fmri=True,
        cortex=True,
    )
    return simulate_trial(spec, tmp_path_factory.mktemp("mm") / "bids", n_jobs=1)


@pytest.mark.slow
def test_every_modality_recovers_its_planted_effect(multimodal: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    deriv = multimodal / "derivatives"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "extract", str(multimodal), str(out), "participant",
            "--derivatives", str(deriv / "fmriprep"),
            "--dwi-derivatives", str(deriv / "qsiprep"),
            "--freesurfer", str(deriv / "freesurfer"),
            "--atlas", "desikan-killiany",
            "--modalities", "func,dwi,anat",
            "--contrast", "faces-shapes",
            # the features only: QC figures and reportlets (half of this extraction's CPU)
            # are tested in test_extract.py and test_extract_task.py, and one process
            # spares a worker pool's start-up
            "--no-qc-reports", "--n-jobs", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out / "features.parquet").set_index("participant_id")
    truth = pd.read_csv(multimodal / "ground_truth.tsv", sep="\t").set_index("participant_id")
    truth = truth.loc[table.index]
    prefixes = {c.split("__")[0] for c in table.columns}
    assert {"conn", "amp", "falff", "task", "dti", "vol", "ctx"} <= prefixes
    # diffusion: cingulum FA planted as 0.52 + 0.03 z
    fa = table[["dti__fa__wm_Cingulum_L", "dti__fa__wm_Cingulum_R"]].mean(axis=1)
    assert np.corrcoef(fa, truth["cingulum_fa"])[0, 1] > 0.9
    slope = np.polyfit(truth["cingulum_fa"], fa, 1)[0]
    assert slope == pytest.approx(0.03, rel=0.35)
    # task: amygdala faces - shapes planted as 1.0 + 0.4 z (% signal) at the block
    # response's peak; the GLM's beta is per unit of the glover regressor, whose peak for
    # these blocks is about 1.54, so it measures the planted amplitude / that peak (at
    # seeds 0, 1, 2, 4, 5: mean within 0.18 of it, against up to 0.47 below the amplitude)
    from nilearn.glm.first_level import make_first_level_design_matrix

    amyg = table[
        [
            "task__faces__faces_shapes__Left_Amygdala",
            "task__faces__faces_shapes__Right_Amygdala",
        ]
    ].mean(axis=1)
    assert np.corrcoef(amyg, truth["amygdala_reactivity"])[0, 1] > 0.5
    events = pd.read_csv(multimodal / "sub-001/func/sub-001_task-faces_events.tsv", sep="\t")
    design = make_first_level_design_matrix(
        np.arange(80) * 2.0, events, hrf_model="glover", drift_model=None
    )
    peak = float(design["faces"].max())
    assert 1.4 < peak < 1.7
    planted = 1.0 + 0.4 * truth.loc[amyg.index, "amygdala_reactivity"].mean()
    assert float(amyg.mean()) == pytest.approx(planted / peak, abs=0.3)
    control = table["task__faces__faces_shapes__ctx_lh_precentral"]
    assert abs(float(control.mean())) < 0.3  # no response planted there
    # cortex: ENIGMA names; values as written in aparc.stats
    assert "ctx__L_insula_thickavg" in table.columns and "ctx__RSurfArea" in table.columns
    from brainmatch.features.modalities.anat import read_aparc_stats

    rows, _ = read_aparc_stats(deriv / "freesurfer" / "sub-001" / "stats" / "lh.aparc.stats")
    assert table.loc["sub-001", "ctx__L_insula_thickavg"] == pytest.approx(
        rows["insula"]["ThickAvg"]
    )
    # one table: resting state next to everything else, task runs not in connectivity
    rec = next((out / ".records").glob("sub-001_*.json")).read_text()
    # only BIDS names under sub-*/ (the records live in the ignored .records/ folder)
    assert not list(out.glob("sub-*/**/*_features.json"))
    assert '"task_runs"' in rec and '"dwi_runs"' in rec


def test_aparc_features_enigma_names_and_normalisation(tmp_path: Path) -> None:
    from brainmatch.features.modalities.anat import DK_REGIONS, aparc_features
    from brainmatch.simulate.freesurfer import write_aparc_stats

    lh, rh = write_aparc_stats(tmp_path, "sub-01", np.random.default_rng(0), 1.5e6, 1.0)
    feats = aparc_features(lh, rh, 1.5e6)
    assert len(feats) == 2 * (3 * len(DK_REGIONS) + 2)
    from brainmatch.features.modalities.anat import read_aparc_stats

    rows, measures = read_aparc_stats(rh)
    assert feats["ctx__R_precuneus_thickavg"] == pytest.approx(rows["precuneus"]["ThickAvg"])
    assert feats["ctx__R_precuneus_surfavg"] == pytest.approx(
        1000 * rows["precuneus"]["SurfArea"] / 1.5e6
    )
    assert feats["ctx__RThickness"] == pytest.approx(measures["MeanThickness"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.unlink(), "one hemisphere's aparc.stats is missing"),
        (lambda p: p.write_text("bankssts 1 2 3 4\n"), "rows before its '# ColHeaders' line"),
        (
            lambda p: p.write_text("# ColHeaders StructName NumVert SurfArea\nbankssts 1 2\n"),
            "needs StructName, SurfArea, GrayVol, ThickAvg",
        ),
    ],
)
def test_bad_aparc_is_one_failure_line(small_trial: Path, tmp_path: Path, edit, message) -> None:
    from brainmatch.features import extract_dataset
    from brainmatch.simulate.freesurfer import write_aparc_stats

    fs = tmp_path / "freesurfer"
    shutil.copytree(small_trial / "derivatives" / "freesurfer", fs)
    for sub in ("sub-001", "sub-002"):
        write_aparc_stats(fs, sub, np.random.default_rng(1), 1.5e6, 1.0)
    edit(fs / "sub-002" / "stats" / "rh.aparc.stats")
    res = extract_dataset(
        small_trial,
        tmp_path / "out",
        derivatives=small_trial / "derivatives" / "fmriprep",
        atlas="affect",
        freesurfer=fs,
        participant_label=["001", "002"],
        modalities="func,anat",
    )
    assert res.failures["participant_id"].tolist() == ["sub-002"]
    assert message in res.failures.iloc[0]["reason"]
    table = pd.read_parquet(res.features_path)
    assert "ctx__L_insula_thickavg" in table.columns


def test_cli_simulate_new_modalities(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    out = tmp_path / "sim"
    result = CliRunner().invoke(
        app,
        [
            "simulate", str(out), "--n-subjects", "2", "--sites", "1", "--n-volumes", "20",
            "--dwi", "--task-fmri", "--cortex", "--n-jobs", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "sub-001/func/sub-001_task-faces_events.tsv").exists()
    dwi = out / "derivatives/qsiprep/sub-001/dwi"
    assert (dwi / "sub-001_space-T1w_desc-preproc_dwi.bval").exists()
    assert (out / "derivatives/freesurfer/sub-001/stats/lh.aparc.stats").exists()
    truth = pd.read_csv(out / "ground_truth.tsv", sep="\t")
    assert {"cingulum_fa", "amygdala_reactivity"} <= set(truth.columns)
    events = pd.read_csv(out / "sub-001/func/sub-001_task-faces_events.tsv", sep="\t")
    assert set(events["trial_type"]) == {"faces", "shapes"} and (events["duration"] == 18).all()
