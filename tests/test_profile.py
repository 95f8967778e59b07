"""``brainmatch profile`` and ``brainmatch normative fit / score`` through the CLI, on a
simulated cohort whose deviant circuits are known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.normative import score_normative
from brainmatch.normative.profile import build_profile
from brainmatch.simulate.controls import draw_cohort

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    cohort = draw_cohort(500, 40, n_sites=2, seed=11, connectivity=False, circuit_effect=2.0)
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    controls = tab[tab.group == "control"].drop(columns=["group"])
    patients = tab[tab.group == "patient"].drop(columns=["group"])
    features = root / "controls.tsv"
    controls.drop(columns=["age", "sex", "site"]).to_csv(features, sep="\t", index=False)
    covs = root / "participants.tsv"
    tab[["participant_id", "age", "sex", "site"]].to_csv(covs, sep="\t", index=False)
    pat = root / "patients.tsv"
    patients.to_csv(pat, sep="\t", index=False)
    res = runner.invoke(
        app,
        [
            "normative",
            "fit",
            str(features),
            "--out",
            str(root / "norm"),
            "--covariates",
            str(covs),
            "--covariate-columns",
            "age,sex",
            "--site-column",
            "site",
        ],
    )
    assert res.exit_code == 0, res.output
    return {
        "root": root,
        "cohort": cohort,
        "patients": pat,
        "covs": covs,
        "model": root / "norm" / "normative_model.npz",
        "features": features,
    }


def test_fit_cli_writes_model_and_calibration(data):
    norm = data["root"] / "norm"
    summary = json.loads((norm / "fit_summary.json").read_text())["summary"]
    assert 0.93 <= summary["calibration"]["share_abs_z_below_1_96"] <= 0.97
    metrics = pd.read_csv(norm / "fit_metrics.tsv", sep="\t")
    assert {"explained_variance", "msll", "share_abs_z_below_1_96"} <= set(metrics.columns)
    assert (norm / "report.html").is_file()


@pytest.mark.parametrize("noise", ["heteroskedastic", "homoskedastic", "auto"])
def test_fit_cli_noise_options_match_python_api(data, noise):
    from brainmatch.normative import fit_normative

    out = data["root"] / f"norm-{noise}"
    res = runner.invoke(
        app,
        [
            "normative",
            "fit",
            str(data["features"]),
            "--out",
            str(out),
            "--covariates",
            str(data["covs"]),
            "--covariate-columns",
            "age,sex",
            "--site-column",
            "site",
            "--noise",
            noise,
            "--holdout",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    api = fit_normative(
        data["features"],
        data["covs"],
        covariate_columns=("age", "sex"),
        site_column="site",
        heteroskedastic={"heteroskedastic": True, "homoskedastic": False, "auto": None}[noise],
        holdout=0,
    )
    from brainmatch.normative import load_normative_model

    model, _, _ = load_normative_model(out / "normative_model.npz")
    np.testing.assert_allclose(model.noise_coef_, api.model.noise_coef_)
    assert model.noise_coef_.shape[1] == (1 if noise == "homoskedastic" else model.coef_.shape[1])


def test_score_cli_matches_python_api(data):
    out = data["root"] / "dev"
    res = runner.invoke(
        app, ["normative", "score", str(data["model"]), str(data["patients"]), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    dev = pd.read_csv(out / "deviations.tsv", sep="\t")
    api = score_normative(data["model"], data["patients"])
    pd.testing.assert_frame_equal(dev, api.deviations, check_exact=False, rtol=1e-5)
    cols = list(pd.read_csv(data["patients"], sep="\t", nrows=0).columns)
    assert list(dev.columns) == ["participant_id"] + [c for c in cols if "__" in c]
    for name in ("circuits.tsv", "fit_metrics.tsv", "report.html", "people.tsv"):
        assert (out / name).is_file()


def test_score_cli_adapts_an_unseen_site(data, tmp_path):
    cohort = draw_cohort(30, 10, n_sites=1, seed=12, connectivity=False, site_prefix="new")
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    adapt = tmp_path / "adapt.tsv"
    tab[tab.group == "control"].drop(columns="group").to_csv(adapt, sep="\t", index=False)
    pats = tmp_path / "p.tsv"
    tab[tab.group == "patient"].drop(columns="group").to_csv(pats, sep="\t", index=False)
    res = runner.invoke(
        app, ["normative", "score", str(data["model"]), str(pats), "--out", str(tmp_path / "o1")]
    )
    assert res.exit_code == 0 and "were not in the controls" in res.output
    res = runner.invoke(
        app,
        [
            "normative",
            "score",
            str(data["model"]),
            str(pats),
            "--out",
            str(tmp_path / "o2"),
            "--adapt",
            str(adapt),
        ],
    )
    assert res.exit_code == 0, res.output
    people = pd.read_csv(tmp_path / "o2" / "people.tsv", sep="\t")
    assert set(people["site_status"]) == {"adapted"}


def test_cli_bad_inputs(data, tmp_path):
    res = runner.invoke(
        app,
        [
            "normative",
            "fit",
            str(data["features"]),
            "--out",
            str(tmp_path / "x"),
            "--covariate-columns",
            "age",
            "--covariates",
            str(data["covs"]),
            "--noise",
            "weird",
        ],
    )
    assert res.exit_code == 2 and "--noise 'weird'" in res.output
    res = runner.invoke(
        app,
        [
            "normative",
            "fit",
            str(data["features"]),
            "--out",
            str(tmp_path / "x"),
            "--covariate-columns",
            "agee",
        ],
    )
    assert res.exit_code == 2 and "'agee'" in res.output
    res = runner.invoke(
        app,
        [
            "normative",
            "score",
            str(data["features"]),
            str(data["patients"]),
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert res.exit_code == 2 and "not a brainmatch model file" in res.output
    few = pd.read_csv(data["features"], sep="\t").head(20)
    few.to_csv(tmp_path / "few.tsv", sep="\t", index=False)
    res = runner.invoke(
        app,
        [
            "normative",
            "fit",
            str(tmp_path / "few.tsv"),
            "--out",
            str(tmp_path / "z"),
            "--covariates",
            str(data["covs"]),
            "--covariate-columns",
            "age,sex",
            "--site-column",
            "site",
        ],
    )
    assert res.exit_code == 2 and "too few controls" in res.output


def test_profile_flags_the_planted_circuits(data):
    cohort = data["cohort"]
    truth = cohort.truth.set_index("participant_id")["planted"]
    hits = []
    for pid in truth[truth.str.contains("frontolimbic")].index:
        prof = build_profile(data["model"], data["patients"], participant=pid)
        c = prof.circuits
        fl = c[(c.circuit == "frontolimbic") & (c.score == "activity")].iloc[0]
        hits.append(fl["call"] == "under-active")
        if hits[-1]:
            assert any(
                h["circuit"] == "frontolimbic" and h["modality"] == "cbt" for h in prof.hypotheses
            )
        assert prof.selection is None
        # words, never raw column names
        assert all("__" not in r["label"] for r in prof.regions)
    assert len(hits) >= 5 and np.mean(hits) >= 0.7


def test_profile_cli_writes_one_page(data, tmp_path):
    pid = data["cohort"].truth["participant_id"].iloc[0]
    res = runner.invoke(
        app,
        [
            "profile",
            str(data["patients"]),
            "--model",
            str(data["model"]),
            "--participant-label",
            pid,
            "--out",
            str(tmp_path / "prof"),
        ],
    )
    assert res.exit_code == 0, res.output
    html = (tmp_path / "prof" / "report.html").read_text()
    assert "Hypothesis-generating, not a prediction" in html
    assert "No validated treatment-selection model was given" in html
    assert "amp__" not in html and "thick__" not in html
    profile = json.loads((tmp_path / "prof" / "profile.json").read_text())
    api = build_profile(data["model"], data["patients"], participant=pid)
    assert profile["participant_id"] == pid
    assert np.isclose(profile["circuits"][0]["mean_z"], api.circuits["mean_z"].iloc[0])
    res = runner.invoke(
        app,
        [
            "profile",
            str(data["patients"]),
            "--model",
            str(data["model"]),
            "--out",
            str(tmp_path / "prof2"),
        ],
    )
    assert res.exit_code == 2 and "--participant-label" in res.output
    res = runner.invoke(
        app,
        [
            "profile",
            str(data["patients"]),
            "--model",
            str(data["model"]),
            "--participant-label",
            "sub-nobody",
            "--out",
            str(tmp_path / "p3"),
        ],
    )
    assert res.exit_code == 2 and "'sub-nobody' is not in the table" in res.output


@pytest.mark.parametrize("likelihood", ["normal", "shash"])
def test_fit_cli_likelihood_options_match_python_api(data, likelihood):
    from brainmatch.normative import fit_normative, load_normative_model

    out = data["root"] / f"norm-{likelihood}"
    res = runner.invoke(
        app,
        [
            "normative",
            "fit",
            str(data["features"]),
            "--out",
            str(out),
            "--covariates",
            str(data["covs"]),
            "--covariate-columns",
            "age,sex",
            "--site-column",
            "site",
            "--likelihood",
            likelihood,
            "--holdout",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    api = fit_normative(
        data["features"],
        data["covs"],
        covariate_columns=("age", "sex"),
        site_column="site",
        likelihood=likelihood,
        holdout=0,
    )
    model, _, meta = load_normative_model(out / "normative_model.npz")
    assert meta["params"]["likelihood"] == likelihood
    if likelihood == "shash":
        np.testing.assert_allclose(model.shash_, api.model.shash_)
    else:
        assert model.shash_ is None
    res = runner.invoke(
        app, ["normative", "fit", str(data["features"]), "--out", str(out), "--likelihood", "t"]
    )
    assert res.exit_code == 2 and "--likelihood 't'" in res.output
