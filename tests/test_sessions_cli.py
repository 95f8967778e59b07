"""``brainmatch simulate-sessions``, ``sessions`` and ``sessions-effects`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.sessions import analyse_sessions, one_stage_ipd, study_effects
from brainmatch.sessions.simulate import BRAIN

runner = CliRunner()


def _run(*args: str) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def _sim(path: Path, *extra: str) -> Path:
    _run("simulate-sessions", path, "--n-per-arm", "12", "--n-sessions", "5", *extra)
    return path


@pytest.mark.parametrize("effect", ["null", "none", "realistic", "strong", "0.5"])
def test_simulate_effect_sizes(tmp_path: Path, effect: str) -> None:
    out = _sim(tmp_path / "t", "--effect-size", effect, "--seed", "4")
    gt = json.loads((out / "ground_truth.json").read_text())
    size = {"null": 0.0, "none": 0.0, "realistic": 1.0, "strong": 2.0, "0.5": 0.5}[effect]
    assert gt["coefficients"]["between"]["augmented:window"] == pytest.approx(-2.5 * size)
    assert gt["coefficients"]["within"]["exercise"] == (0.0 if effect == "null" else 4.0)


@pytest.mark.parametrize("timing", ["before", "during", "after"])
def test_simulate_timings(tmp_path: Path, timing: str) -> None:
    out = _sim(tmp_path / "t", "--timing", timing)
    s = pd.read_csv(out / "sessions.tsv", sep="\t")
    assert set(s["timing"]) == {timing}


@pytest.mark.parametrize(
    "kind",
    [
        "pharmacological",
        "nmda",
        "psychedelic",
        "brain_stimulation",
        "exercise",
        "sleep_circadian",
        "other",
    ],
)
def test_simulate_augmentation_types(tmp_path: Path, kind: str) -> None:
    out = _sim(
        tmp_path / "t",
        "--augmentation-type",
        kind,
        "--arms",
        "control,augmented",
        "--dose-probability",
        "1",
        "--dropout",
        "0",
        "--study",
        "S1",
    )
    s = pd.read_csv(out / "sessions.tsv", sep="\t")
    assert set(s["augmentation_type"]) == {kind}
    assert len(s) == 24 * 5  # no dropout
    assert s.loc[s["arm"] == "augmented", "augmented"].eq(1).all()


def test_simulate_bad_options(tmp_path: Path) -> None:
    for args, msg in [
        (["--augmentation-type", "nmdaa"], "--augmentation-type 'nmdaa' is unknown"),
        (["--timing", "later"], "--timing 'later'"),
        (["--effect-size", "huge"], "--effect-size 'huge'"),
        (["--arms", "a"], "--arms 'a'"),
        (["--n-sessions", "1"], "--n-sessions must be at least 2"),
    ]:
        res = runner.invoke(app, ["simulate-sessions", str(tmp_path / "x"), *args])
        assert res.exit_code == 2, res.output
        assert "error:" in res.output and msg in res.output, res.output


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_sessions_cli_equals_the_python_api(tmp_path: Path, method: str) -> None:
    trial = _sim(tmp_path / "trial", "--seed", "9", "--effect-size", "strong")
    out = tmp_path / "res"
    text = _run(
        "sessions",
        trial / "sessions.tsv",
        "--out",
        out,
        "--participants",
        trial / "features.tsv",
        "--brain-moderators",
        BRAIN,
        "--method",
        method,
    )
    assert "report" in text
    data = json.loads((out / "results.json").read_text())
    api = analyse_sessions(
        trial / "sessions.tsv",
        brain_moderators=[BRAIN],
        participants=trial / "features.tsv",
        reml=method == "REML",
    )
    assert data["final"]["estimate"] == pytest.approx(api.final["estimate"], rel=1e-9)
    got = {r["term"]: r["estimate"] for r in data["models"]["between"]["fixed_effects"]}
    assert got[f"augmented:{BRAIN}"] == pytest.approx(
        api.models["between"].params[f"augmented:{BRAIN}"], rel=1e-9
    )
    assert data["models"]["between"]["reml"] is (method == "REML")
    assert (out / "report.html").is_file()


def test_sessions_cli_window_level_title(tmp_path: Path) -> None:
    trial = _sim(tmp_path / "trial", "--seed", "2")
    out = tmp_path / "res"
    _run(
        "sessions",
        trial / "sessions.tsv",
        "--out",
        out,
        "--window-minutes",
        "90",
        "--level",
        "0.9",
        "--rating-scale",
        "0,100",
        "--title",
        "Trial X",
    )
    data = json.loads((out / "results.json").read_text())
    api = analyse_sessions(trial / "sessions.tsv", window_minutes=90, level=0.9)
    row = api.models["between"].table().set_index("term").loc["augmented:window"]
    got = next(
        r for r in data["models"]["between"]["fixed_effects"] if r["term"] == "augmented:window"
    )
    assert got["ci_lb"] == pytest.approx(row["ci_lb"], rel=1e-9)
    assert data["options"]["window_minutes"] == 90
    assert "Trial X" in (out / "report.html").read_text()


def test_sessions_cli_errors(tmp_path: Path) -> None:
    trial = _sim(tmp_path / "trial")
    bad = pd.read_csv(trial / "sessions.tsv", sep="\t")
    bad.loc[3, "fear_end"] = 101
    bad.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    res = runner.invoke(app, ["sessions", str(tmp_path / "bad.tsv"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "error:" in res.output and "row 5 is 101" in res.output
    assert not (tmp_path / "o").exists()  # nothing written for bad input
    for args, msg in [
        (["--method", "OLS"], "--method 'OLS'"),
        (["--rating-scale", "100"], "--rating-scale '100'"),
        (["--brain-moderators", "nope"], "no column 'nope'"),
    ]:
        res = runner.invoke(
            app, ["sessions", str(trial / "sessions.tsv"), "--out", str(tmp_path / "o2"), *args]
        )
        assert res.exit_code == 2, res.output
        assert msg in res.output, res.output
    res = runner.invoke(app, ["sessions", str(trial / "sessions.tsv"), "--out", str(trial)])
    assert res.exit_code == 2 and "no earlier brainmatch sessions output" in res.output


def test_bridge_to_meta_analysis(tmp_path: Path) -> None:
    """Several trials -> study-level effects -> brainmatch meta --schema augmentation."""
    designs = [
        ("dcs1", "nmda", "before"),
        ("dcs2", "nmda", "before"),
        ("tms1", "brain_stimulation", "during"),
        ("tms2", "brain_stimulation", "during"),
    ]
    paths = []
    for k, (name, kind, timing) in enumerate(designs):
        paths.append(
            _sim(
                tmp_path / name,
                "--augmentation-type",
                kind,
                "--timing",
                timing,
                "--seed",
                str(k),
                "--effect-size",
                "strong",
            )
        )
    eff = tmp_path / "effects.csv"
    ipd = tmp_path / "ipd.json"
    text = _run(
        "sessions-effects", *paths, "--out", eff, "--diagnosis-dimension", "fear", "--ipd", ipd
    )
    assert "one-stage IPD" in text
    tab = pd.read_csv(eff)
    api = study_effects(paths, diagnosis_dimension="fear")
    assert tab["g"].to_numpy() == pytest.approx(api["g"].to_numpy(), abs=1e-5)
    assert list(tab["study"]) == [d[0] for d in designs]
    assert set(tab["type"]) == {"nmda", "brain_stimulation"}
    one = json.loads(ipd.read_text())
    assert one["estimate"] == pytest.approx(one_stage_ipd(paths)["estimate"], rel=1e-9)
    _run(
        "meta",
        eff,
        "--out",
        tmp_path / "meta",
        "--effect",
        "g",
        "--se",
        "se",
        "--schema",
        "augmentation",
        "--subgroup",
        "type",
        "--moderators",
        "timing",
    )
    res = json.loads((tmp_path / "meta" / "results.json").read_text())
    assert res["k"] == 4
    # the two-stage pooled estimate lies inside the one-stage model's CI
    assert one["ci_lb"] <= res["estimate"] <= one["ci_ub"]
    # Hedges' g from the written means / SDs / ns agrees with metafor-style escalc
    _run("meta", eff, "--out", tmp_path / "meta2", "--measure", "SMD")
    res2 = json.loads((tmp_path / "meta2" / "results.json").read_text())
    assert res2["estimate"] == pytest.approx(res["estimate"], abs=1e-4)


def test_sessions_effects_errors(tmp_path: Path) -> None:
    trial = _sim(tmp_path / "trial")
    res = runner.invoke(app, ["sessions-effects", str(trial), "--out", str(tmp_path / "e.txt")])
    assert res.exit_code == 2 and "must end in .csv" in res.output
    res = runner.invoke(
        app,
        [
            "sessions-effects",
            str(trial),
            "--out",
            str(tmp_path / "e.csv"),
            "--diagnosis-dimension",
            "panic",
        ],
    )
    assert res.exit_code == 2 and "--diagnosis-dimension 'panic'" in res.output
    res = runner.invoke(
        app,
        ["sessions-effects", str(trial), str(trial), "--out", str(tmp_path / "e.csv")],
    )
    assert res.exit_code == 2 and "study label 'trial'" in res.output
    res = runner.invoke(
        app,
        ["sessions-effects", str(trial), "--out", str(tmp_path / "e.csv"), "--labels", "a,b"],
    )
    assert res.exit_code == 2 and "--labels has 2 name(s) for 1 table(s)" in res.output
    res = runner.invoke(
        app,
        ["sessions-effects", str(trial), "--out", str(tmp_path / "e.csv"), "--outcome", "hamd"],
    )
    assert res.exit_code == 2 and "no 'hamd' column" in res.output
    _run(
        "sessions-effects",
        trial,
        "--out",
        tmp_path / "e.csv",
        "--labels",
        "Smith 2024",
        "--outcome",
        "symptom_score",
    )
    assert pd.read_csv(tmp_path / "e.csv")["study"].tolist() == ["Smith 2024"]
