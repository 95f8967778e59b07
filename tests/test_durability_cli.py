"""``brainmatch train --time-column`` and ``brainmatch recommend`` with a durability model:
the CLI against :class:`SurvivalSelector` (same predictions), the signed model file (a
tampered copy is refused), the honesty rule, and each bad input's one-line message."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.durability import SurvivalSelector
from brainmatch.durability.modelfile import load_durability_model
from brainmatch.durability.run import read_survival_data
from brainmatch.durability.train import selection_summary
from brainmatch.errors import BrainmatchInputError
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.simulate.followup import write_followup
from brainmatch.validation.synthetic import measured_features

runner = CliRunner()


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("durcli")
    trial = draw_trial(TrialSpec(n_subjects=160, n_sites=2, seed=8, followup=True))
    write_followup(trial, tmp)
    f = measured_features(trial, n_noise=3, seed=2)
    fp = tmp / "features.tsv"
    f.to_csv(fp, sep="\t", index=False)
    pp = tmp / "participants.tsv"
    trial.participants.to_csv(pp, sep="\t", index=False)
    return fp, pp, tmp / "phenotype" / "followup.tsv"


def _train_args(fp: Path, pp: Path, fu: Path, out: Path) -> list[str]:
    return [
        "train",
        "--features",
        str(fp),
        "--outcomes",
        str(pp),
        "--outcomes",
        str(fu),
        "--treatment-column",
        "arm",
        "--time-column",
        "relapse_weeks",
        "--event-column",
        "relapse",
        "--horizon",
        "52w",
        "--n-splits",
        "3",
        "--n-repeats",
        "1",
        "--n-bootstrap",
        "30",
        "--seed",
        "3",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def trained(tables: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    fp, pp, fu = tables
    out = tmp_path_factory.mktemp("durtrain") / "model"
    r = runner.invoke(app, _train_args(fp, pp, fu, out))
    assert r.exit_code == 0, r.output
    assert "durability model" in r.output
    return out


def test_train_writes_metrics_predictions_report_model(
    trained: Path, tables: tuple[Path, Path, Path]
) -> None:
    fp, pp, fu = tables
    m = json.loads((trained / "metrics.json").read_text())
    assert m["outcome_kind"] == "time-to-event"
    assert 0.0 <= m["metrics"]["harrell_c"] <= 1.0
    # no permutation test was run: validation cannot support selection
    assert m["selection"]["permutation_p"] is None
    assert m["selection"]["selection_supported"] is False
    pred = pd.read_csv(trained / "predictions.tsv", sep="\t")
    assert {"rfs__CBT", "rfs__SSRI", "recommended", "received"} <= set(pred.columns)
    assert "Harrell's C" in (trained / "report.html").read_text()
    # the saved model is the per-arm Cox fit on everyone: refit through the API, compare
    d = read_survival_data(
        fp, [pp, fu], treatment_column="arm", time_column="relapse_weeks", event_column="relapse"
    )
    sel = SurvivalSelector(horizon=52.0).fit(d["X"], d["time"], d["event"], d["arm"])
    loaded, meta = load_durability_model(trained / "model.npz")
    assert meta["features"] == d["features"]
    np.testing.assert_allclose(loaded.predict_rfs(d["X"]), sel.predict_rfs(d["X"]), atol=1e-12)
    for a, b in zip(loaded.models_, sel.models_, strict=True):
        np.testing.assert_allclose(a.coef_std_, b.coef_std_, atol=1e-12)
    assert len(loaded.boot_) == 30


def test_recommend_one_patient_matches_api(
    trained: Path, tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    fp, pp, fu = tables
    feats = pd.read_csv(fp, sep="\t")
    one = feats.iloc[[5]]
    onep = tmp_path / "one.tsv"
    one.to_csv(onep, sep="\t", index=False)
    out = tmp_path / "rec"
    r = runner.invoke(app, ["recommend", str(trained / "model.npz"), str(onep), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "recommend.json").read_text())
    assert rec["model"]["kind"] == "durability"
    (p,) = rec["patients"]
    # equal to SurvivalSelector.predict_rfs on the same row (model refitted through the API)
    d = read_survival_data(
        fp, [pp, fu], treatment_column="arm", time_column="relapse_weeks", event_column="relapse"
    )
    sel = SurvivalSelector(horizon=52.0, n_bootstrap=30, seed=3).fit(
        d["X"], d["time"], d["event"], d["arm"]
    )
    x = one[d["features"]].to_numpy(dtype=float)
    want = sel.predict_rfs(x)[0]
    lo, hi = sel.predict_interval(x)
    for k, arm in enumerate(sel.arms_):
        q = p["relapse_free"][arm]
        assert q["probability"] == pytest.approx(want[k], abs=1e-12)
        assert q["interval"] == pytest.approx([lo[0, k], hi[0, k]], abs=1e-12)
        curve = p["curves"][arm]
        assert curve[0] == pytest.approx(1.0) and curve[-1] == pytest.approx(want[k], abs=1e-12)
        assert np.all(np.diff(curve) <= 1e-12)  # a survival curve never rises
    assert p["curves"]["times"][-1] == pytest.approx(52.0)
    # validation without a permutation test never supports a preference
    assert p["statement"] == (
        f"no reliable preference between {p['recommended']} and {p['next_best']}"
    )
    assert p["reliable_preference"] is False and p["no_preference_reasons"]
    html = (out / "report.html").read_text()
    assert "Relapse-free probability" in html and "no reliable preference" in html


def test_tampered_model_is_refused(
    trained: Path, tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    fp = tables[0]
    bad = tmp_path / "tampered.npz"
    with zipfile.ZipFile(trained / "model.npz") as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "arm0_coef_std.npy":
                arr = np.load(io.BytesIO(data))
                buf = io.BytesIO()
                np.save(buf, arr + 0.5)
                data = buf.getvalue()
            zout.writestr(name, data)
    r = runner.invoke(app, ["recommend", str(bad), str(fp), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "modified" in lines[0], r.output
    assert not (tmp_path / "r" / "recommend.json").exists()


def test_selection_summary_honesty_rule() -> None:
    g = {"estimate": 2.0, "ci_low": 0.5, "ci_high": 3.5, "level": 0.95, "best_single_arm": "CBT"}
    ok = selection_summary({"policy_rmst_gain": g, "permutation_p": 0.01})
    assert ok["selection_supported"] and not ok["reasons"]
    assert not selection_summary({"policy_rmst_gain": g, "permutation_p": 0.2})[
        "selection_supported"
    ]
    assert not selection_summary({"policy_rmst_gain": g})["selection_supported"]
    g0 = {**g, "ci_low": -0.1}
    assert not selection_summary({"policy_rmst_gain": g0, "permutation_p": 0.01})[
        "selection_supported"
    ]


def _one_error(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_bad_inputs_name_the_flag(tables: tuple[Path, Path, Path], tmp_path: Path) -> None:
    fp, pp, fu = tables
    args = _train_args(fp, pp, fu, tmp_path / "o")

    def run(**change: str) -> str:
        a = list(args)
        for flag, value in change.items():
            a[a.index("--" + flag.replace("_", "-")) + 1] = value
        r = runner.invoke(app, a)
        assert r.exit_code == 2, r.output
        return _one_error(r.output)

    assert "--time-column 'weeks'" in run(time_column="weeks")
    assert "--horizon" in run(horizon="5y")
    tab = pd.read_csv(fu, sep="\t")
    neg = tab.copy()
    neg.loc[neg["relapse_weeks"].notna().idxmax(), "relapse_weeks"] = -3
    negp = tmp_path / "neg.tsv"
    neg.to_csv(negp, sep="\t", index=False, na_rep="n/a")
    a = list(args)
    a[a.index(str(fu))] = str(negp)
    r = runner.invoke(app, a)
    assert r.exit_code == 2 and "--time-column 'relapse_weeks'" in _one_error(r.output)
    two = tab.copy()
    two.loc[two["relapse"].notna().idxmax(), "relapse"] = 2
    twop = tmp_path / "two.tsv"
    two.to_csv(twop, sep="\t", index=False, na_rep="n/a")
    a[a.index(str(negp))] = str(twop)
    r = runner.invoke(app, a)
    assert r.exit_code == 2 and "--event-column 'relapse'" in _one_error(r.output)
    # --event-column without --time-column, and --outcome-column together with it
    a = [x for x in args]
    i = a.index("--time-column")
    del a[i : i + 2]
    r = runner.invoke(app, a)
    assert r.exit_code == 2 and "--time-column" in _one_error(r.output)
    r = runner.invoke(app, [*args, "--outcome-column", "hamd_week8"])
    assert r.exit_code == 2 and "--outcome-column" in _one_error(r.output)
    # continuous-model options are refused, not silently ignored
    r = runner.invoke(app, [*args, "--baseline-column", "hamd_baseline"])
    assert r.exit_code == 2
    assert "--baseline-column: not used with --time-column" in _one_error(r.output)
    r = runner.invoke(app, [*args, "--followup-scores", str(fu)])
    assert r.exit_code == 2
    assert "--followup-scores: not used with --time-column" in _one_error(r.output)


def test_signed_but_implausible_model_is_refused(
    trained: Path, tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from brainmatch.durability.modelfile import save_durability_model

    sel, meta = load_durability_model(trained / "model.npz")
    sel.models_[0].cumhaz_ = sel.models_[0].cumhaz_[::-1].copy()  # a hazard that decreases
    keep = {k: v for k, v in meta.items() if k not in ("signature", "content_sha256")}
    save_durability_model(tmp_path / "odd.npz", sel, keep)
    r = runner.invoke(
        app, ["recommend", str(tmp_path / "odd.npz"), str(tables[0]), "--out", str(tmp_path / "r")]
    )
    assert r.exit_code == 2
    assert "not a non-decreasing function" in _one_error(r.output)


@pytest.mark.slow
def test_supported_model_states_preferences_only_with_interval(tmp_path: Path) -> None:
    """A strong simulated brain moderator (1.5 log-HR/SD, 200 patients): validation supports
    selection (permutation p < 0.05, RMST-gain CI above 0), so ``recommend`` states a
    preference exactly for the patients whose interval of the difference excludes 0, and
    those preferences mostly agree with the simulator's more durable arm."""
    trial = draw_trial(
        TrialSpec(n_subjects=200, n_sites=2, seed=5, followup=True, durability_effect=1.5)
    )  # 200 patients: at trial seeds 5, 6, 7 still p = 1/21, RMST-gain CI low >= 0.79, agree >= 0.9
    write_followup(trial, tmp_path)
    feats = measured_features(trial, n_noise=2, seed=2)
    fp = tmp_path / "features.tsv"
    feats.to_csv(fp, sep="\t", index=False)
    pp = tmp_path / "participants.tsv"
    trial.participants.to_csv(pp, sep="\t", index=False)
    args = _train_args(fp, pp, tmp_path / "phenotype" / "followup.tsv", tmp_path / "m")
    args[args.index("--seed") + 1] = "1"
    # 20 permutations: the smallest p, 1/21, is below 0.05 (the permutations are the first
    # 20 of the 24 this test ran before, none of which reached the observed gain)
    r = runner.invoke(app, [*args, "--n-permutations", "20", "--no-report"])
    assert r.exit_code == 0, r.output
    sel = json.loads((tmp_path / "m" / "metrics.json").read_text())["selection"]
    assert sel["selection_supported"] and sel["permutation_p"] < 0.05
    assert sel["policy_rmst_gain_ci"][0] > 0
    # no report: test_recommend_one_patient_matches_api renders it (50 figures here)
    r = runner.invoke(
        app,
        [
            *("recommend", str(tmp_path / "m" / "model.npz"), str(fp)),
            *("--out", str(tmp_path / "r"), "--no-report"),
        ],
    )
    assert r.exit_code == 0, r.output
    pats = json.loads((tmp_path / "r" / "recommend.json").read_text())["patients"]
    truth = pd.read_csv(tmp_path / "followup_truth.tsv", sep="\t").set_index("participant_id")
    reliable = [p for p in pats if p["reliable_preference"]]
    assert 0 < len(reliable) < len(pats)
    for p in pats:
        assert p["reliable_preference"] == (p["difference_interval"][0] > 0)
        if not p["reliable_preference"]:
            assert p["statement"] == (
                f"no reliable preference between {p['recommended']} and {p['next_best']}"
            )
    agree = np.mean(
        [truth.loc[p["participant_id"], "durable_arm"] == p["recommended"] for p in reliable]
    )
    assert agree > 0.7


@pytest.mark.parametrize(
    "learner", ["pseudo", "per-arm", pytest.param("auto", marks=pytest.mark.slow)]
)
def test_train_survival_model_values_through_the_cli(
    learner: str, tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Every --survival-model value runs through the CLI; the saved model predicts as the
    API's SurvivalSelector fitted on the same data (auto: the same learner is chosen)."""
    fp, pp, fu = tables
    out = tmp_path / "m"
    args = _train_args(fp, pp, fu, out)
    args[args.index("--n-bootstrap") + 1] = "5"
    r = runner.invoke(app, [*args, "--survival-model", learner])
    assert r.exit_code == 0, r.output
    d = read_survival_data(
        fp, [pp, fu], treatment_column="arm", time_column="relapse_weeks", event_column="relapse"
    )
    sel = SurvivalSelector(horizon=52.0, model=learner, seed=3).fit(
        d["X"], d["time"], d["event"], d["arm"]
    )
    loaded, meta = load_durability_model(out / "model.npz")
    assert meta["model"] == sel.model_ and meta["options"]["model"] == learner
    if learner == "auto":
        assert sel.model_ in ("per-arm", "lasso-cox", "pseudo")
        assert set(sel.model_scores_) == {"per-arm", "lasso-cox", "pseudo"}
        m = json.loads((out / "metrics.json").read_text())
        assert m["final_model"]["model"] == sel.model_
        assert sum(m["metrics"]["model_chosen"].values()) == pytest.approx(1.0)
    np.testing.assert_allclose(loaded.predict_rfs(d["X"]), sel.predict_rfs(d["X"]), atol=1e-12)
    grid = np.linspace(0, 52, 27)
    curves = loaded.predict_survival(d["X"][:5], grid)
    np.testing.assert_allclose(curves, sel.predict_survival(d["X"][:5], grid), atol=1e-12)
    assert np.all(np.diff(curves, axis=-1) <= 1e-12) and np.allclose(curves[..., 0], 1.0)
    assert len(loaded.boot_) == 5
    lo, hi = loaded.predict_interval(d["X"][:3])
    assert np.all(lo <= hi)


def test_train_refuses_survival_options_without_time_column(
    tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    fp, pp, _ = tables
    base = ["train", "--features", str(fp), "--outcomes", str(pp), "--treatment-column", "arm"]
    base += ["--outcome-column", "hamd_week8", "--out", str(tmp_path / "x")]
    r = runner.invoke(app, [*base, "--survival-model", "pseudo"])
    assert r.exit_code == 2 and "--survival-model: only with --time-column" in r.output
    r = runner.invoke(app, [*base, "--penalizer", "0.1"])
    assert r.exit_code == 2 and "--penalizer: only with --time-column" in r.output
    fu = tables[2]
    args = _train_args(fp, pp, fu, tmp_path / "y")
    r = runner.invoke(app, [*args, "--survival-model", "interaction"])
    assert r.exit_code == 2 and "validation only" in r.output
    r = runner.invoke(app, [*args, "--survival-model", "pseudo", "--penalizer", "0.1"])
    assert r.exit_code == 2 and "penalizer: not used with model 'pseudo'" in r.output


@pytest.mark.slow
def test_recommend_from_bids_with_a_durability_model(small_trial: Path, tmp_path: Path) -> None:
    """A BIDS / fMRIPrep INPUT: features are extracted as the training table's were, and
    the recommendation equals the one from the extracted table."""
    import shutil

    from brainmatch.durability.train import train_durability
    from brainmatch.features import extract_dataset

    deriv = small_trial / "derivatives"
    ext = extract_dataset(
        small_trial,
        tmp_path / "ext",
        derivatives=deriv / "fmriprep",
        atlas="affect",
        freesurfer=deriv / "freesurfer",
    )
    assert ext.features_path is not None and ext.metadata_path is not None
    real = pd.read_parquet(ext.features_path)
    cols = [c for c in real.columns if c not in ("participant_id", "session")][:4]
    rng = np.random.default_rng(0)
    n = 80
    train_f = pd.DataFrame(
        real[cols].mean().to_numpy()
        + rng.normal(size=(n, len(cols))) * (real[cols].std().fillna(0).to_numpy() + 1e-3),
        columns=cols,
    )
    train_f.insert(0, "participant_id", [f"sub-t{i:03d}" for i in range(n)])
    train_f.to_parquet(tmp_path / "features.parquet")
    shutil.copy(ext.metadata_path, tmp_path / "features.json")
    arm = np.tile(["CBT", "SSRI"], n // 2)
    ev_t = rng.exponential(np.where(arm == "CBT", 120.0, 60.0))
    cens = rng.uniform(52, 104, n)
    o = pd.DataFrame(
        {
            "participant_id": train_f["participant_id"],
            "arm": arm,
            "weeks": np.round(np.minimum(ev_t, cens), 2) + 0.01,
            "relapse": (ev_t <= cens).astype(int),
        }
    )
    res = train_durability(
        tmp_path / "features.parquet",
        o,
        treatment_column="arm",
        time_column="weeks",
        event_column="relapse",
        out_dir=tmp_path / "model",
        model="per-arm",
        n_splits=3,
        n_repeats=1,
        n_bootstrap=10,
    )
    out = tmp_path / "rec"
    r = runner.invoke(
        app,
        [
            *("recommend", str(res.model_path), str(small_trial)),
            *("--participant-label", "sub-001", "--out", str(out), "--no-report"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (out / "features" / "features.parquet").exists()
    rec = json.loads((out / "recommend.json").read_text())
    assert [p["participant_id"] for p in rec["patients"]] == ["sub-001"]
    x = real.loc[real["participant_id"] == "sub-001", cols].to_numpy(dtype=float)
    want = res.selector.predict_rfs(x)[0]
    for k, a in enumerate(res.selector.arms_):
        assert rec["patients"][0]["relapse_free"][a]["probability"] == pytest.approx(
            want[k], rel=1e-6
        )


def test_site_harmonised_model_train_and_recommend(
    tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """--site-column with --time-column: ComBat fitted on the training patients, the same
    as harmonising first and fitting without sites; the saved model needs each new
    patient's site, and an unseen site gets a caveat."""
    from brainmatch.harmonize import ComBat

    fp, pp, fu = tables
    out = tmp_path / "m"
    args = _train_args(fp, pp, fu, out)
    args[args.index("--n-bootstrap") + 1] = "5"
    r = runner.invoke(app, [*args, "--site-column", "site"])
    assert r.exit_code == 0, r.output
    d = read_survival_data(
        fp,
        [pp, fu],
        treatment_column="arm",
        time_column="relapse_weeks",
        event_column="relapse",
        site_column="site",
    )
    sel = SurvivalSelector(horizon=52.0, seed=3).fit(
        d["X"], d["time"], d["event"], d["arm"], sites=d["site"]
    )
    Xh = ComBat().fit_transform(d["X"], sites=d["site"])
    plain = SurvivalSelector(horizon=52.0, seed=3).fit(Xh, d["time"], d["event"], d["arm"])
    np.testing.assert_allclose(
        sel.predict_rfs(d["X"], sites=d["site"]), plain.predict_rfs(Xh), atol=1e-12
    )
    loaded, meta = load_durability_model(out / "model.npz")
    assert meta["options"]["site_column"] == "site" and meta["combat_sites"]
    np.testing.assert_allclose(
        loaded.predict_rfs(d["X"], sites=d["site"]),
        sel.predict_rfs(d["X"], sites=d["site"]),
        atol=1e-12,
    )
    with pytest.raises(BrainmatchInputError, match="pass each patient's site"):
        loaded.predict_rfs(d["X"])
    # recommend: the site comes from --clinical; without it, one clear error
    feats = pd.read_csv(fp, sep="\t").iloc[:3]
    fpath = tmp_path / "new.tsv"
    feats.to_csv(fpath, sep="\t", index=False)
    rr = runner.invoke(
        app, ["recommend", str(out / "model.npz"), str(fpath), "--out", str(tmp_path / "r0")]
    )
    assert rr.exit_code == 2 and "needs a value in column 'site'" in rr.output
    rr = runner.invoke(
        app,
        [
            *("recommend", str(out / "model.npz"), str(fpath)),
            *("--clinical", str(pp), "--out", str(tmp_path / "r1")),
        ],
    )
    assert rr.exit_code == 0, rr.output
    rec = json.loads((tmp_path / "r1" / "recommend.json").read_text())["patients"]
    part = pd.read_csv(pp, sep="\t").set_index("participant_id")
    ids = [p["participant_id"] for p in rec]
    x = feats.set_index("participant_id").loc[ids, d["features"]].to_numpy(float)
    want = sel.predict_rfs(x, sites=part.loc[ids, "site"].astype(str).to_numpy())
    got = np.array([[p["relapse_free"][a]["probability"] for a in sel.arms_] for p in rec])
    np.testing.assert_allclose(got, want, atol=1e-12)
    # an unseen site (one patient: too few to estimate) is left unadjusted, with a caveat
    clin = part.loc[ids].reset_index().assign(site="elsewhere")
    cpath = tmp_path / "clin.tsv"
    clin.to_csv(cpath, sep="\t", index=False)
    one = feats.iloc[[0]]
    opath = tmp_path / "one.tsv"
    one.to_csv(opath, sep="\t", index=False)
    rr = runner.invoke(
        app,
        [
            *("recommend", str(out / "model.npz"), str(opath)),
            *("--clinical", str(cpath), "--out", str(tmp_path / "r2")),
        ],
    )
    assert rr.exit_code == 0, rr.output
    (p,) = json.loads((tmp_path / "r2" / "recommend.json").read_text())["patients"]
    assert any("not in the training data" in c for c in p["caveats"])
