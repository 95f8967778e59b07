"""``brainmatch change``: truth recovery, null calibration, CLI and input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.change import analyse_change, load_change_data
from brainmatch.change.synthetic import synthetic_change_data
from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError

runner = CliRunner()


def _tables(tmp_path: Path, **kw: object) -> tuple[Path, Path]:
    f, p = synthetic_change_data(**kw)  # type: ignore[arg-type]
    fp, pp = tmp_path / "features.tsv", tmp_path / "participants.tsv"
    f.to_csv(fp, sep="\t", index=False)
    p.to_csv(pp, sep="\t", index=False)
    return fp, pp


def test_truth_recovered_and_nothing_else() -> None:
    effects = {"amp__r005": {"CBT": 0.9}, "amp__r010": {"SSRI": -0.9}}
    f, p = synthetic_change_data(n_subjects=120, n_features=150, effects=effects, seed=4)
    res = analyse_change(
        f, p, treatment_column="arm", site_column="site", n_permutations=199, seed=1
    )
    assert res.params["contrast"] == ["CBT", "SSRI"]  # therapy minus medication
    sig = set(res.significant("interaction", "p_fwe")["feature"])
    assert sig == {"amp__r005", "amp__r010"}
    con = res.table[(res.table["effect"] == "contrast")].set_index("feature")
    # CBT - SSRI: CBT's rise and SSRI's fall both give a positive contrast
    assert con.loc["amp__r005", "estimate"] > 0 and con.loc["amp__r010", "estimate"] > 0
    ch = res.table[res.table["effect"] == "change"].set_index(["feature", "arm"])
    # each arm's change: the truth (0.9 / -0.9 plus the common 0.2 drift) within 3 SE
    for (feat, arm), delta in [(("amp__r005", "CBT"), 1.1), (("amp__r010", "SSRI"), -0.7)]:
        row = ch.loc[(feat, arm)]
        assert abs(row["estimate"] - delta) < 3 * row["se"]
        assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 1.959964 * row["se"])
    # the sign of each arm's own change
    assert ch.loc[("amp__r005", "CBT"), "p_fdr"] < 0.05
    # the arm's own change, FWE-controlled by sign-flipping its patients' differences
    assert ch.loc[("amp__r005", "CBT"), "p_fwe"] < 0.05
    assert ch.loc[("amp__r010", "SSRI"), "estimate"] < 0


@pytest.mark.slow
def test_null_family_wise_rate() -> None:
    """Small version of benchmarks/bench_change.py: FWE false positives across null seeds."""
    hits = 0
    n_seeds = 40
    for seed in range(n_seeds):
        f, p = synthetic_change_data(n_subjects=40, n_features=60, seed=100 + seed)
        res = analyse_change(
            f, p, treatment_column="arm", site_column="site", n_permutations=99, seed=seed
        )
        inter = res.table[res.table["effect"] == "interaction"]
        hits += int((inter["p_fwe"] < 0.05).any())
    # expected 5 % (2 of 40); P(>= 7 of 40 | 5 %) < 0.005
    assert hits <= 6


def test_fast_engine_equals_statsmodels_engine() -> None:
    f, p = synthetic_change_data(n_subjects=40, n_features=8, seed=2)
    kw = {"treatment_column": "arm", "site_column": "site", "n_permutations": 0}
    a = analyse_change(f, p, covariates=["age"], **kw)  # type: ignore[arg-type]
    b = analyse_change(f, p, covariates=["age"], engine="statsmodels", **kw)  # type: ignore[arg-type]
    np.testing.assert_allclose(a.table["estimate"], b.table["estimate"], rtol=1e-3, atol=1e-4)
    assert np.all(a.model["llf"] >= b.model["llf"] - 1e-8)


def test_three_arms_and_three_sessions() -> None:
    f, p = synthetic_change_data(
        n_subjects=60,
        n_features=6,
        arms=("CBT", "SSRI", "placebo"),
        seed=3,
        effects={"amp__r002": {"SSRI": -1.5}},
    )
    extra = f[f["session"] == "post"].copy()
    extra["session"] = "followup"
    f = pd.concat([f, extra.assign(amp__r002=extra["amp__r002"] + 0.0)], ignore_index=True)
    res = analyse_change(
        f, p, treatment_column="arm", site_column="site", n_permutations=0, sessions=None
    )
    assert res.params["sessions"] == ["pre", "post", "followup"]
    inter = res.interaction()
    assert set(inter["df"]) == {4}  # (3 arms - 1) x (3 sessions - 1)
    assert inter.iloc[0]["feature"] == "amp__r002"
    pairs = set(res.table.loc[res.table["effect"] == "contrast", "arm"])
    assert pairs == {"CBT - SSRI", "CBT - placebo", "SSRI - placebo"}


def test_flat_features_are_excluded() -> None:
    f, p = synthetic_change_data(n_subjects=30, n_features=5, seed=1)
    f["vol__Left_Hippocampus"] = f["participant_id"].str[-3:].astype(float)
    data = load_change_data(f, p, site_column="site")
    assert "vol__Left_Hippocampus" not in data.features
    assert "same value in every session" in data.excluded["vol__Left_Hippocampus"]


def test_symptom_association() -> None:
    f, p = synthetic_change_data(n_subjects=80, n_features=5, seed=5)
    post = f["session"] == "post"
    # symptom change tracks the brain change of r003 in every arm
    delta = f[post].set_index("participant_id")["amp__r003"] - f[~post].set_index("participant_id")[
        "amp__r003"
    ].reindex(f.loc[post, "participant_id"])
    p = p.merge(delta.rename("d").reset_index(), on="participant_id", how="left")
    p["hamd_baseline"] = 22.0
    p["hamd_week8"] = 12.0 - 4.0 * p["d"]
    res = analyse_change(
        f,
        p,
        treatment_column="arm",
        site_column="site",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        n_permutations=0,
    )
    a = res.association.set_index(["feature", "arm"])
    np.testing.assert_allclose(a.loc[("amp__r003", "CBT"), "r"], -1.0, atol=1e-9)
    assert a.loc[("amp__r001", "CBT"), "p"] > 1e-3


@pytest.mark.parametrize(
    ("engine", "method"),
    [("fast", "reml"), ("statsmodels", "reml"), ("fast", "ml"), ("statsmodels", "ml")],
)
def test_cli_options(tmp_path: Path, engine: str, method: str) -> None:
    fp, pp = _tables(tmp_path, n_subjects=30, n_features=4, seed=6)
    out = tmp_path / "out"
    args = [
        "change",
        "--features",
        str(fp),
        "--outcomes",
        str(pp),
        "--treatment-column",
        "arm",
        "--site-column",
        "site",
        "--covariates",
        "age",
        "--engine",
        engine,
        "--method",
        method,
        "--permutations",
        "19",
        "--contrast",
        "SSRI-CBT",
        "--out",
        str(out),
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    table = pd.read_csv(out / "change.tsv", sep="\t")
    api = analyse_change(
        fp,
        [pp],
        treatment_column="arm",
        site_column="site",
        covariates=["age"],
        engine=engine,
        reml=method == "reml",
        n_permutations=19,
        contrast=("SSRI", "CBT"),
    )
    np.testing.assert_allclose(table["estimate"], api.table["estimate"], rtol=1e-5)
    res = json.loads((out / "results.json").read_text())
    assert res["contrast"] == ["SSRI", "CBT"] and res["reml"] == (method == "reml")
    assert (out / "report.html").read_text().count("Methods") >= 1
    # a rerun replaces its own output
    assert runner.invoke(app, args).exit_code == 0


def test_cli_measures_sessions_outcomes(tmp_path: Path) -> None:
    f, p = synthetic_change_data(n_subjects=30, n_features=4, seed=8)
    f["falff__r001"] = f["amp__r001"] * 0.1 + np.random.default_rng(0).normal(0, 1, len(f))
    p["hamd_baseline"], p["hamd_week8"] = 20, np.arange(len(p)) % 15
    fp, pp = tmp_path / "f.parquet", tmp_path / "p.csv"
    f.to_parquet(fp)
    p.to_csv(pp, index=False)
    out = tmp_path / "o"
    r = runner.invoke(
        app,
        [
            "change",
            "--features",
            str(fp),
            "--outcomes",
            str(pp),
            "--treatment-column",
            "arm",
            "--measures",
            "falff",
            "--sessions",
            "pre,post",
            "--outcome-column",
            "hamd_week8",
            "--baseline-column",
            "hamd_baseline",
            "--permutations",
            "0",
            "--no-report",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out / "change.tsv", sep="\t")
    assert set(t["feature"]) == {"falff__r001"}
    assert (out / "association.tsv").exists() and not (out / "report.html").exists()


@pytest.mark.parametrize(
    ("mutate", "extra", "message"),
    [
        (lambda f, p: (f.drop(columns="session"), p), [], "--session-column 'session': no such"),
        (lambda f, p: (f[f.session == "pre"], p), [], "only ['pre']"),
        (lambda f, p: (f, p.drop(columns="arm")), [], "--treatment-column 'arm': no such column"),
        (lambda f, p: (f, p), ["--contrast", "CBT-placebo"], "--contrast CBT-placebo: give two"),
        (lambda f, p: (f, p), ["--contrast", "CBT"], "expected A-B"),
        (lambda f, p: (f, p), ["--engine", "R"], "--engine 'R'"),
        (lambda f, p: (f, p), ["--method", "bayes"], "--method 'bayes'"),
        (lambda f, p: (f, p), ["--permutations", "5"], "--permutations 5"),
        (lambda f, p: (f, p), ["--sessions", "pre,week8"], "--sessions: 'week8' not in"),
        (lambda f, p: (f, p), ["--measures", "conn"], "--measures: conn not in"),
        (lambda f, p: (f, p), ["--covariates", "agee"], "did you mean 'age'"),
        (lambda f, p: (pd.concat([f, f.iloc[:1]]), p), [], "appears on more than one row"),
        (
            lambda f, p: (f, p.assign(arm=np.where(p.arm == "SSRI", "CBT", p.arm))),
            [],
            "need at least two arms",
        ),
        (lambda f, p: (f.assign(amp__r001="x"), p), [], "not numeric: amp__r001"),
    ],
)
def test_cli_bad_input(tmp_path: Path, mutate, extra: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    f, p = synthetic_change_data(n_subjects=24, n_features=3, seed=9)
    f, p = mutate(f, p)
    fp, pp = tmp_path / "f.tsv", tmp_path / "p.tsv"
    f.to_csv(fp, sep="\t", index=False)
    p.to_csv(pp, sep="\t", index=False)
    r = runner.invoke(
        app,
        [
            "change",
            "--features",
            str(fp),
            "--outcomes",
            str(pp),
            "--treatment-column",
            "arm",
            "--out",
            str(tmp_path / "out"),
            "--permutations",
            "0",
            *extra,
        ],
    )
    assert r.exit_code == 2, r.output
    assert "error:" in r.output and message in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output


def test_refuses_foreign_output_folder(tmp_path: Path) -> None:
    fp, pp = _tables(tmp_path, n_subjects=24, n_features=3, seed=1)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(
        app,
        [
            "change",
            "--features",
            str(fp),
            "--outcomes",
            str(pp),
            "--treatment-column",
            "arm",
            "--out",
            str(out),
            "--permutations",
            "0",
        ],
    )
    assert r.exit_code == 2 and "holds no earlier brainmatch change output" in r.output
    assert (out / "notes.txt").read_text() == "mine"


def test_missing_file_and_too_few_per_arm(tmp_path: Path) -> None:
    with pytest.raises(BrainmatchInputError, match="--features: features file not found"):
        analyse_change(tmp_path / "nope.tsv", tmp_path / "p.tsv")
    f, p = synthetic_change_data(n_subjects=24, n_features=3, seed=1)
    keep = ~(
        (f["session"] == "post")
        & f["participant_id"].isin(p.loc[p.arm == "SSRI", "participant_id"])
    )
    with pytest.raises(BrainmatchInputError, match="arm 'SSRI' has 0 participant"):
        analyse_change(f[keep], p, n_permutations=0)


def test_affect_atlas_regions_and_circuits() -> None:
    from brainmatch.atlases import AFFECT_REGIONS

    names = [r.name for r in AFFECT_REGIONS]
    f, p = synthetic_change_data(
        n_subjects=60, n_features=len(names), seed=12, effects={"amp__r011": {"CBT": 1.0}}
    )
    f = f.rename(columns={f"amp__r{j + 1:03d}": f"amp__{n}" for j, n in enumerate(names)})
    res = analyse_change(
        f, p, treatment_column="arm", site_column="site", n_permutations=0, atlas="affect"
    )
    assert set(res.table["region"]) == set(names)  # region names as in the atlas
    circuits = res.circuits.set_index(["circuit", "effect", "arm"])
    assert {"affect network", "affect: prefrontal control", "affect: limbic reactivity"} <= set(
        res.circuits["circuit"]
    )
    # r011 is mpfc_L (prefrontal control): CBT's change shows in that circuit
    assert names[10] == "mpfc_L"
    pfc = circuits.loc[("affect: prefrontal control", "change", "CBT"), "estimate"]
    limbic = circuits.loc[("affect: limbic reactivity", "change", "CBT"), "estimate"]
    assert pfc > limbic


def test_random_site_equals_statsmodels_formula(tmp_path: Path) -> None:
    import warnings

    import statsmodels.formula.api as smf

    fp, pp = _tables(tmp_path, n_subjects=48, n_features=2, n_sites=4, seed=3)
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "change",
            "--features",
            str(fp),
            "--outcomes",
            str(pp),
            "--treatment-column",
            "arm",
            "--site-column",
            "site",
            "--site-effect",
            "random",
            "--engine",
            "statsmodels",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["site_effect"] == "random" and res["n_permutations"] == 0
    assert any("no permutation FWE" in n for n in res["notes"])
    model = pd.read_csv(out / "model.tsv", sep="\t").set_index("feature")
    table = pd.read_csv(out / "change.tsv", sep="\t")
    d = pd.read_csv(fp, sep="\t").merge(pd.read_csv(pp, sep="\t"), on="participant_id")
    d["post"] = (d["session"] == "post").astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smf.mixedlm(
            "amp__r001 ~ 0 + C(arm) + C(arm):post",
            d,
            groups="site",
            re_formula="1",
            vc_formula={"participant": "0 + C(participant_id)"},
        ).fit()
    # (the TSV files hold 6 significant digits)
    assert model.loc["amp__r001", "llf"] == pytest.approx(ref.llf, rel=1e-5)
    assert model.loc["amp__r001", "site_var"] == pytest.approx(
        float(ref.cov_re.iloc[0, 0]), rel=1e-6, abs=1e-8
    )
    ch = table[(table["feature"] == "amp__r001") & (table["effect"] == "change")]
    np.testing.assert_allclose(
        ch["estimate"], [ref.params["C(arm)[CBT]:post"], ref.params["C(arm)[SSRI]:post"]], rtol=1e-5
    )
    r = runner.invoke(
        app,
        [
            "change",
            "--features",
            str(fp),
            "--outcomes",
            str(pp),
            "--treatment-column",
            "arm",
            "--site-column",
            "site",
            "--site-effect",
            "random",
            "--out",
            str(tmp_path / "o2"),
        ],
    )
    assert r.exit_code == 2 and "use --engine statsmodels" in r.output
