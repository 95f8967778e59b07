"""``brainmatch simulate --n-controls``: healthy controls beside the trial's patients."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.simulate import TrialSpec
from brainmatch.simulate.controls import IMAGE_PLANTABLE, _image_regions


@pytest.mark.slow
def test_simulate_adds_controls(tmp_path):
    out = tmp_path / "trial"
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            str(out),
            "--n-subjects",
            "4",
            "--n-controls",
            "3",
            "--sites",
            "2",
            "--n-volumes",
            "20",
            "--n-jobs",
            "1",
            "--seed",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    part = pd.read_csv(out / "participants.tsv", sep="\t")
    assert part["group"].value_counts().to_dict() == {"patient": 4, "control": 3}
    assert part.loc[part.group == "control", "arm"].isna().all()
    outcomes = pd.read_csv(out / "phenotype" / "outcomes.tsv", sep="\t")
    assert len(outcomes) == 4  # controls have no outcome
    truth = pd.read_csv(out / "ground_truth.tsv", sep="\t", keep_default_na=False)
    assert set(truth.loc[truth.group == "control", "planted"]) == {""}
    for pid in part["participant_id"]:
        assert (out / "derivatives" / "fmriprep" / pid).is_dir()
        assert (out / "derivatives" / "freesurfer" / pid / "stats" / "aseg.stats").is_file()


def test_planted_circuits_map_to_image_regions():
    for key in IMAGE_PLANTABLE:
        regions = _image_regions(key)
        assert regions and all(r.startswith(("ctx-", "Left-", "Right-")) for r in regions)
    assert "Left-Amygdala" in _image_regions("frontolimbic")
    assert "ctx-rh-insula" in _image_regions("salience")


def test_n_controls_is_validated():
    with pytest.raises(BrainmatchInputError, match="--n-controls -1"):
        TrialSpec(n_controls=-1)


@pytest.mark.slow
def test_profile_of_a_bids_subject_extracts_with_the_controls_options(tmp_path):
    """Controls extracted by brainmatch extract -> model records the options -> a patient's
    BIDS scan is extracted the same way by ``brainmatch profile``."""
    from brainmatch.features import extract_dataset
    from brainmatch.normative import fit_normative
    from brainmatch.simulate import simulate_trial

    bids = simulate_trial(
        TrialSpec(n_subjects=2, n_sites=1, n_controls=12, n_volumes=30, seed=5),
        tmp_path / "bids",
        n_jobs=1,
    )
    part = pd.read_csv(bids / "participants.tsv", sep="\t")
    controls = part.loc[part.group == "control", "participant_id"].str.removeprefix("sub-")
    ext = extract_dataset(
        bids,
        tmp_path / "features",
        derivatives=bids / "derivatives" / "fmriprep",
        atlas="desikan-killiany",
        connectivity=(),
        participant_label=list(controls),
    )
    assert ext.features_path is not None
    fit = fit_normative(ext.features_path, bids / "participants.tsv", holdout=0)
    assert fit.summary["feature_provenance"]["options"]["atlas"] == "desikan-killiany"
    fit.save(tmp_path / "norm")
    res = CliRunner().invoke(
        app,
        [
            "profile",
            str(bids),
            "--participant-label",
            "001",
            "--model",
            str(tmp_path / "norm" / "normative_model.npz"),
            "--out",
            str(tmp_path / "profile"),
        ],
    )
    assert res.exit_code == 0, res.output
    dev = pd.read_csv(tmp_path / "profile" / "deviations.tsv", sep="\t")
    assert dev["participant_id"].tolist() == ["sub-001"]
    assert dev.drop(columns="participant_id").notna().all(axis=None)
