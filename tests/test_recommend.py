"""``brainmatch recommend``: per-patient output, unseen sites, safe model files, CLI.

References: an independent refit of the final interaction model (scikit-learn ``Ridge`` on
the explicit treatment-by-feature design with the model's penalty), the truth of
``brainmatch.simulate`` (oracle arm), and binomial / bootstrap errors for the floors.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.reports.selection import write_recommend_report
from brainmatch.selection import recommend, train
from brainmatch.selection.modelfile import load_model
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.validation.synthetic import measured_features, outcome_table

CLIN = ["participant_id", "site", "age", "sex", "hamd_baseline"]


def _train_sites_1_2(out, **kw):
    trial = draw_trial(TrialSpec(n_subjects=480, n_sites=3, effect_size=1.2, seed=11))
    f = measured_features(trial, n_noise=20, reliability=0.9, seed=11)
    o = outcome_table(trial)
    seen = (o["site"] != "site03") & (np.arange(len(o)) % 4 != 0)  # every 4th held out
    res = train(
        f,
        o[seen],
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        covariates=("age", "sex"),
        out_dir=out,
        n_repeats=2,
        n_permutations=199,
        n_boot=200,
        learning_curve=False,
        **kw,
    )
    return res, f.merge(o[CLIN]), trial


@pytest.fixture(scope="module")
def trained_ridge(tmp_path_factory):
    """The same model without feature screening (the plain ridge over all features)."""
    return _train_sites_1_2(tmp_path_factory.mktemp("model_ridge"), select="none")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained on 3/4 of sites 1-2 of a 3-site trial; site 3 is 'unseen'."""
    return _train_sites_1_2(tmp_path_factory.mktemp("model"))


def test_recommend_outputs(trained, tmp_path):
    res, new, _ = trained
    patients = new[new["site"] == "site01"].head(3)
    rec = recommend(res.model_path, patients, tmp_path)
    write_recommend_report(rec)
    data = json.loads((tmp_path / "recommend.json").read_text())
    assert [p["participant_id"] for p in data["patients"]] == patients["participant_id"].tolist()
    for p in data["patients"]:
        assert p["recommended"] in ("CBT", "SSRI") and p["advantage"] >= 0
        for arm in ("CBT", "SSRI"):
            lo, hi = p["predicted"][arm]["interval"]
            assert lo <= p["predicted"][arm]["value"] <= hi
        lo, hi = p["advantage_interval"]
        assert lo <= hi and p["advantage_interval_level"] == 0.95
        assert 0 <= p["bootstrap_agreement"] <= 1 and p["site_status"] == "trained"
        # drivers: material contributions only, each with a readable label
        floor = max(0.1 * 3.0, 0.05 * sum(abs(d["contribution"]) for d in p["drivers"]))
        assert all(abs(d["contribution"]) >= floor - 1e-12 for d in p["drivers"])
        assert len(p["drivers"]) <= 8
        for d in p["drivers"]:
            assert d["label"] != d["feature"] or not d["feature"].count("__")
        assert p["advantage_from_features"] + p["advantage_from_arm_average"] == pytest.approx(
            p["advantage"]
        )
        supported = data["model"]["selection_supported"]
        assert p["reliable_preference"] == (supported and lo > 0)
        small = (
            ""
            if p["above_threshold"]
            else f" (a small advantage: {p['advantage']:.2f}, below the clinical threshold 3)"
        )
        assert p["statement"] == (
            f"recommended: {p['recommended']}{small}"
            if p["reliable_preference"]
            else f"no reliable preference between {p['recommended']} and {p['next_best']}"
        )
    assert "validation" in data["model"] and data["model"]["validation"]["n"] == res.metrics["n"]
    html = (tmp_path / "report.html").read_text()
    assert "Treatment recommendation for" in html and "data:image/png;base64" in html
    assert 'title="activity__ctx-rh-insula">activity: right insula<' in html or not any(
        d["feature"] == "activity__ctx-rh-insula" for p in data["patients"] for d in p["drivers"]
    )
    for p in data["patients"]:
        lead = "Recommended: <b>" if p["reliable_preference"] else "No reliable preference between"
        assert lead in html
    tsv = pd.read_csv(tmp_path / "recommend.tsv", sep="\t")
    assert list(tsv["recommended"]) == [p["recommended"] for p in data["patients"]]
    assert list(tsv["statement"]) == [p["statement"] for p in data["patients"]]
    assert rec.patients[0]["statement"] == data["patients"][0]["statement"]


def test_predictions_equal_an_independent_refit(trained_ridge):
    """The final interaction model is ridge on the explicit design [Z, Z*1(CBT), Z*1(SSRI)]
    / sqrt(p) with arm intercepts and covariates unpenalised: refit it with scikit-learn's
    ``Ridge`` (Frisch-Waugh: unpenalised columns partialled out) at the model's penalty and
    compare each arm's prediction (preprocessing: the same fitted ``Preprocessor``)."""
    from sklearn.linear_model import Ridge

    from brainmatch.selection.pipeline import Preprocessor

    res, new, _ = trained_ridge
    _, meta = load_model(res.model_path)
    lam = meta["penalties"][0]
    rows = new.set_index("participant_id").loc[res.predictions["participant_id"]]
    X = rows[[c for c in meta["feature_names"]]].to_numpy()
    cov = rows[["hamd_baseline", "age", "sex"]].reset_index(drop=True)
    pre = Preprocessor(harmonize=True, n_outcome_only=1)
    Z, C = pre.fit_transform(X, cov, rows["site"].astype(str).to_numpy())
    arm = res.predictions["treatment"].to_numpy()
    y = res.predictions["observed"].to_numpy()
    onehot = np.column_stack([arm == "CBT", arm == "SSRI"]).astype(float)
    p = Z.shape[1]
    Phi = np.hstack([Z, Z * onehot[:, [0]], Z * onehot[:, [1]]]) / np.sqrt(p)
    D = np.column_stack([onehot, C])
    M = np.eye(len(y)) - D @ np.linalg.pinv(D)
    beta = Ridge(alpha=lam, fit_intercept=False).fit(M @ Phi, M @ y).coef_
    alpha = np.linalg.pinv(D) @ (y - Phi @ beta)
    patients = new[new["site"] == "site01"].head(4)
    rec = recommend(res.model_path, patients, None)
    Zn, Cn = pre.transform(
        patients[meta["feature_names"]].to_numpy(),
        patients[["hamd_baseline", "age", "sex"]].reset_index(drop=True),
        patients["site"].to_numpy(),
    )
    for a, name in enumerate(("CBT", "SSRI")):
        e = np.zeros((len(patients), 2))
        e[:, a] = 1
        Phi_n = np.hstack([Zn, Zn * e[:, [0]], Zn * e[:, [1]]]) / np.sqrt(p)
        ref = Phi_n @ beta + np.column_stack([e, Cn]) @ alpha
        got = [q["predicted"][name]["value"] for q in rec.patients]
        np.testing.assert_allclose(got, ref, atol=1e-6)


def test_out_of_range_prediction_is_clipped_with_a_caveat(trained):
    res, new, _ = trained
    _, meta = load_model(res.model_path)
    lo_y, hi_y = meta["outcome_range"]
    odd = new[new["site"] == "site01"].head(1).copy()
    odd["activity__ctx-rh-insula"] = odd["activity__ctx-rh-insula"] + 60
    odd["vol__Left-Hippocampus"] = odd["vol__Left-Hippocampus"] - 60
    p = recommend(res.model_path, odd, None).patients[0]
    values = [q["value"] for q in p["predicted"].values()]
    assert min(values) >= lo_y and max(values) <= hi_y
    assert any(v in (lo_y, hi_y) for v in values)
    assert any("outside the outcome range seen in training" in c for c in p["caveats"])
    for q in p["predicted"].values():
        assert q["interval"][0] <= q["value"] <= q["interval"][1]
    # a clipped prediction of either compared arm is an extrapolation: never a reliable
    # preference (its refits clip to the same bound, a collapsed interval)
    clipped = [a for a, q in p["predicted"].items() if q["value"] in (lo_y, hi_y)]
    assert {p["recommended"], p["next_best"]} & set(clipped)
    assert not p["reliable_preference"]
    assert any("an extrapolation" in r for r in p["no_preference_reasons"])


def test_drivers_note_never_contradicts_the_decomposition():
    from brainmatch.selection.recommend import _drivers_note

    assert _drivers_note(True, 0.3, False, False, 2.0, 1.0).startswith("features with")
    assert "log-odds" in _drivers_note(True, 0.04, True, False, 2.0, 1.0)
    # features together immaterial: the arms' average difference alone
    assert "alone" in _drivers_note(False, 0.3, False, False, 0.1, 2.0)
    # no single feature material, but together they are: never "alone"
    note = _drivers_note(False, 0.3, False, False, 0.9, -0.5)
    assert "alone" not in note and "together they contribute +0.9" in note


def test_null_model_gives_no_reliable_preference(tmp_path):
    """Trained on a trial without treatment-by-feature interaction, the model's validation
    does not support selection: every patient gets "no reliable preference" (and the report
    never leads with a bold pick)."""
    trial = draw_trial(TrialSpec(n_subjects=160, n_sites=2, effect_size=0.0, seed=13))
    f = measured_features(trial, n_noise=10, seed=13)
    o = outcome_table(trial)
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        out_dir=tmp_path / "m",
        n_repeats=2,
        n_permutations=99,
        learning_curve=False,
    )
    assert not res.metrics["selection"]["selection_supported"]
    rec = recommend(res.model_path, f.merge(o[CLIN]).head(5), tmp_path / "r")
    write_recommend_report(rec)
    assert all(not p["reliable_preference"] for p in rec.patients)
    assert all(p["no_preference_reasons"] for p in rec.patients)
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Recommended: <b>" not in html and html.count("No reliable preference between") == 5


def test_recommendations_track_the_truth(trained):
    """On held-out patients of the training sites the recommended arm is usually the oracle's
    and the recommendations capture most of the oracle's gain over the best single arm."""
    res, new, trial = trained
    train_ids = set(res.predictions["participant_id"]) | set(
        trial.truth.loc[trial.truth["dropout"], "participant_id"]
    )
    holdout = new[~new["participant_id"].isin(train_ids) & (new["site"] != "site03")]
    rec = recommend(res.model_path, holdout, None)
    truth = trial.truth.set_index("participant_id")
    ids = [p["participant_id"] for p in rec.patients]
    chosen = [p["recommended"] for p in rec.patients]
    agree = np.mean([truth.loc[i, "oracle_arm"] == c for i, c in zip(ids, chosen, strict=True)])
    mu = truth.loc[ids, ["mu__CBT", "mu__SSRI"]].to_numpy()
    pick = mu[np.arange(len(ids)), [0 if c == "CBT" else 1 for c in chosen]]
    best = mu.mean(axis=0).min()
    share = (best - pick.mean()) / (best - mu.min(axis=1).mean())
    # measured (n = 480 trial, 61 held-out patients): agreement 0.754 (binomial SE 0.055;
    # a random policy scores 0.50 +- 0.064) and share 0.56 (bootstrap SE 0.13; random
    # -0.56 +- 0.25); floors are measured minus two SEs
    assert len(holdout) >= 60
    assert agree > 0.64, agree
    assert share > 0.30, share


def test_unseen_site_and_single_patient(trained, tmp_path):
    res, new, _ = trained
    site3 = new[new["site"] == "site03"]
    one = recommend(res.model_path, site3.head(1), None).patients[0]
    assert one["site_status"] == "unadjusted"
    assert any("not in the training data" in c for c in one["caveats"])
    batch = recommend(res.model_path, site3.head(10), None).patients
    assert all(p["site_status"] == "estimated" for p in batch)
    # a patient far outside the training distribution is flagged
    odd = new.head(1).copy()
    cols = [c for c in odd.columns if c.startswith("noise__")]
    odd[cols] = odd[cols] * 25
    far = recommend(res.model_path, odd, None).patients[0]
    assert any("outside the training distribution" in c for c in far["caveats"])


def test_clinical_table_and_missing_columns(trained, tmp_path):
    res, new, _ = trained
    feats = new.drop(columns=["age", "sex", "hamd_baseline", "site"]).head(2)
    with pytest.raises(BrainmatchInputError, match=r"needs column.*hamd_baseline"):
        recommend(res.model_path, feats, None)
    clinical = new[CLIN]
    rec = recommend(res.model_path, feats, None, clinical=clinical)
    assert len(rec.patients) == 2
    with pytest.raises(BrainmatchInputError, match="features are not in the table"):
        recommend(res.model_path, new.drop(columns=["vol__Left-Hippocampus"]).head(1), None)
    huge = new.head(1).copy()
    huge["vol__Left-Hippocampus"] = 1e300
    with pytest.raises(BrainmatchInputError, match=r"larger than 1e\+100.*vol__Left-Hippocampus"):
        recommend(res.model_path, huge, None)
    # a BIDS folder needs the extraction options, which a model trained on a plain table lacks
    with pytest.raises(BrainmatchInputError, match="does not record how its features"):
        recommend(res.model_path, tmp_path, tmp_path / "out")


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    dst.write_bytes(buf.getvalue())


def test_model_file_is_safe_and_tamper_evident(trained, tmp_path):
    res, new, _ = trained
    _, meta = load_model(res.model_path)
    assert meta["feature_names"][0] == "activity__ctx-rh-insula"
    assert meta["training_data_hash"].startswith("sha256:")
    assert meta["validation"]["selection"]["benefit_d"] is not None

    def tamper(a):
        a["coef"] = a["coef"] * 1.01

    bad = tmp_path / "tampered.npz"
    _rewrite(res.model_path, bad, tamper)
    with pytest.raises(BrainmatchInputError, match="modified after it was written"):
        recommend(bad, new.head(1), None)

    def newer(a):
        m = json.loads(a["__meta__"].tobytes())
        m["brainmatch_version"] = "99.0.0"
        a["__meta__"] = np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)

    future = tmp_path / "future.npz"
    _rewrite(res.model_path, future, newer)
    with pytest.raises(BrainmatchInputError, match="newer brainmatch"):
        load_model(future)

    class Boom:
        def __reduce__(self):
            return (print, ("code executed",))

    evil = tmp_path / "evil.npz"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("coef.npy", b"")
        z.writestr("__meta__.npy", pickle.dumps(Boom()))
    with pytest.raises(BrainmatchInputError, match="not a brainmatch model"):
        load_model(evil)
    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(BrainmatchInputError, match="not a brainmatch model"):
        load_model(tmp_path / "x.npz")


def test_cli_train_and_recommend(tmp_path):
    trial = draw_trial(TrialSpec(n_subjects=90, n_sites=2, effect_size=1.2, seed=21))
    f = measured_features(trial, n_noise=10, seed=21)
    o = outcome_table(trial)
    f.to_parquet(tmp_path / "features.parquet")
    o.to_csv(tmp_path / "outcomes.tsv", sep="\t", index=False)
    runner = CliRunner()
    args = [
        "train",
        "--features",
        str(tmp_path / "features.parquet"),
        "--outcomes",
        str(tmp_path / "outcomes.tsv"),
        "--treatment-column",
        "arm",
        "--outcome-column",
        "hamd_week8",
        "--baseline-column",
        "hamd_baseline",
        "--site-column",
        "site",
        "--covariates",
        "age,sex",
        "--out",
        str(tmp_path / "m"),
        "--n-repeats",
        "2",
        "--n-permutations",
        "99",
        "--no-report",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "selection benefit d" in result.output and "policy gain d" in result.output
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert f"{m['selection']['policy_gain']:.3g}" in result.output
    new = f.merge(o[CLIN]).head(2)
    new.to_csv(tmp_path / "new.csv", index=False)
    result = runner.invoke(
        app,
        [
            "recommend",
            str(tmp_path / "m" / "model.npz"),
            str(tmp_path / "new.csv"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    rj = json.loads((tmp_path / "r" / "recommend.json").read_text())
    assert rj["patients"][0]["statement"] in result.output
    bad = runner.invoke(app, [*args[:6], "arms", *args[7:]])
    assert bad.exit_code == 2
    assert "error:" in bad.output and "'arms'" in bad.output


@pytest.mark.slow
def test_recommend_from_bids_extracts_with_the_models_options(small_trial, tmp_path):
    """A BIDS / fMRIPrep subject as INPUT: features are extracted as the model's were."""
    import shutil

    from brainmatch.features import extract_dataset

    deriv = small_trial / "derivatives"
    ext = extract_dataset(
        small_trial,
        tmp_path / "ext",
        derivatives=deriv / "fmriprep",
        atlas="affect",
        freesurfer=deriv / "freesurfer",
    )
    real = pd.read_parquet(ext.features_path)
    cols = [c for c in real.columns if c not in ("participant_id", "session")]
    # a training table with the same columns (values drawn around the real ones) and the
    # extraction's features.json beside it, as `brainmatch extract` leaves it
    rng = np.random.default_rng(0)
    n = 60
    train_f = pd.DataFrame(
        real[cols].mean().to_numpy()
        + rng.normal(size=(n, len(cols))) * (real[cols].std().fillna(0).to_numpy() + 1e-3),
        columns=cols,
    )
    train_f.insert(0, "participant_id", [f"sub-t{i:03d}" for i in range(n)])
    train_f.to_parquet(tmp_path / "features.parquet")
    shutil.copy(ext.metadata_path, tmp_path / "features.json")
    o = pd.DataFrame(
        {
            "participant_id": train_f["participant_id"],
            "arm": np.tile(["CBT", "SSRI"], n // 2),
            "y": rng.normal(15, 5, n),
        }
    )
    res = train(
        tmp_path / "features.parquet",
        o,
        treatment_column="arm",
        outcome_column="y",
        out_dir=tmp_path / "model",
        n_repeats=1,
        n_permutations=20,
        n_boot=50,
        learning_curve=False,
    )
    rec = recommend(res.model_path, small_trial, tmp_path / "rec", participant=["sub-001"])
    assert [p["participant_id"] for p in rec.patients] == ["sub-001"]
    assert (tmp_path / "rec" / "features" / "features.parquet").exists()
    direct = recommend(res.model_path, real[real["participant_id"] == "sub-001"], None)
    assert rec.patients[0]["predicted"]["CBT"]["value"] == pytest.approx(
        direct.patients[0]["predicted"]["CBT"]["value"], rel=1e-6
    )
    # the same BIDS subject through the command line (`brainmatch recommend MODEL BIDS_DIR
    # --participant-label 001`): exit 0 and the API's predicted outcomes, number for number
    cli = CliRunner().invoke(
        app,
        [
            "recommend",
            str(res.model_path),
            str(small_trial),
            "--participant-label",
            "001",
            "--out",
            str(tmp_path / "rec_cli"),
            "--no-report",
        ],
    )
    assert cli.exit_code == 0, cli.output
    rj = json.loads((tmp_path / "rec_cli" / "recommend.json").read_text())
    assert [p["participant_id"] for p in rj["patients"]] == ["sub-001"]
    for arm in ("CBT", "SSRI"):
        assert rj["patients"][0]["predicted"][arm]["value"] == pytest.approx(
            rec.patients[0]["predicted"][arm]["value"], rel=1e-9
        )
    assert rj["patients"][0]["statement"] in cli.output


def test_advantage_interval_is_the_bootstrap_t_interval():
    """A patient's 95 % advantage interval is the advantage +- t(0.975, B - 1) bootstrap
    SDs (50 draws' 2.5-97.5 percentiles cover less than 95 % by construction): for
    normal draws around the advantage it is the textbook interval, wider than the
    percentiles, and centred on the model's own advantage, not on the refits' mean."""
    from scipy import stats

    from brainmatch.selection.recommend import ADVANTAGE_INTERVAL, _advantage_interval

    assert ADVANTAGE_INTERVAL == "t"
    boot = np.random.default_rng(0).normal(1.0, 0.5, 50)
    lo, hi = _advantage_interval(1.2, boot)
    half = stats.t.ppf(0.975, 49) * boot.std(ddof=1)
    assert (lo, hi) == pytest.approx((1.2 - half, 1.2 + half))
    p_lo, p_hi = np.percentile(boot, [2.5, 97.5])
    assert hi - lo > p_hi - p_lo
    # the coverage it buys: for draws from the sampling distribution, 95 % (simulated)
    rng = np.random.default_rng(1)
    inside = []
    for _ in range(2000):
        est = rng.normal(0.0, 1.0)  # the model's advantage; the truth is 0
        lo, hi = _advantage_interval(est, est + rng.normal(0.0, 1.0, 50))
        inside.append(lo <= 0.0 <= hi)
    assert abs(np.mean(inside) - 0.95) < 0.015
