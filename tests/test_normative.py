"""Normative models: calibration on held-out controls, site adaptation, model file, bad input,
ground truth from the simulated cohort (planted circuits, ENIGMA effect sizes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.normative import (
    NormativeModel,
    fit_normative,
    load_normative_model,
    score_normative,
)
from brainmatch.normative._design import bspline_basis, spline_knots
from brainmatch.reports.normative import write_fit_report
from brainmatch.simulate.controls import PLANTABLE, draw_cohort


def _toy(n: int, f: int, seed: int = 0, sites=("a", "b", "c")) -> tuple[pd.DataFrame, np.ndarray]:
    """Non-linear age, sex, site location and scale, heteroskedastic noise."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    sex = rng.choice(["F", "M"], n)
    site = rng.choice(list(sites), n)
    loc = {"a": 0.0, "b": 0.5, "c": -0.3, "d": 0.8}
    scale = {"a": 1.0, "b": 1.5, "c": 0.8, "d": 1.2}
    mu = np.sin(age / 20)[:, None] + 0.3 * (sex == "M")[:, None]
    mu = mu + np.array([loc[s] for s in site])[:, None] + rng.normal(0, 1, f)
    sd = (0.5 + 0.01 * age)[:, None] * np.array([scale[s] for s in site])[:, None]
    y = mu + sd * rng.standard_normal((n, f))
    return pd.DataFrame({"age": age, "sex": sex, "site": site}), y


@pytest.fixture(scope="module")
def cohort():
    return draw_cohort(900, 600, n_sites=3, seed=3, connectivity=False)


@pytest.fixture(scope="module")
def cohort_fit(cohort):
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    controls = tab[tab.group == "control"]
    return fit_normative(controls, covariate_columns=("age", "sex"), site_column="site", seed=1)


def test_bspline_basis_is_a_partition_of_unity_and_matches_scipy():
    from scipy.interpolate import BSpline

    x = np.linspace(18, 80, 57)
    knots = np.asarray(spline_knots(x, 5, 3))
    basis = bspline_basis(x, knots, 3)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0, atol=1e-12)
    ref = BSpline.design_matrix(x, knots, 3).toarray()
    np.testing.assert_allclose(basis, ref, atol=1e-12)


def test_heldout_controls_are_calibrated_with_site_effects():
    X, y = _toy(3000, 40)
    train = np.arange(3000) < 2400
    model = NormativeModel(covariates=("age", "sex"), site_column="site").fit(X[train], y[train])
    z, info = model.zscores(X[~train].reset_index(drop=True), y[~train])
    assert abs(z.mean()) < 0.03
    assert abs(z.std() - 1) < 0.03
    share = np.mean(np.abs(z) < 1.96)
    assert 0.94 <= share <= 0.96
    per_feature = np.mean(np.abs(z) < 1.96, axis=0)
    se = np.sqrt(0.95 * 0.05 / z.shape[0])  # binomial SE of a feature's share (600 controls)
    assert np.all(np.abs(per_feature - 0.95) < 3.5 * se)
    assert np.mean((per_feature >= 0.93) & (per_feature <= 0.97)) >= 0.9
    assert set(info["site_status"]) == {"seen"}
    # without the site term the scanner differences leak into the deviations
    no_site = NormativeModel(covariates=("age", "sex")).fit(X[train], y[train])
    z2, _ = no_site.zscores(X[~train].reset_index(drop=True), y[~train])
    site_b = (X[~train]["site"] == "b").to_numpy()
    assert abs(z2[site_b].mean()) > 0.25 > abs(z[site_b].mean()) + 0.2


def test_homoskedastic_model_is_miscalibrated_where_noise_grows_with_age():
    X, y = _toy(3000, 20, seed=1)
    train = np.arange(3000) < 2400
    Xt = X[~train].reset_index(drop=True)
    old = (Xt["age"] > 65).to_numpy()
    het = NormativeModel(covariates=("age", "sex"), site_column="site").fit(X[train], y[train])
    hom = NormativeModel(covariates=("age", "sex"), site_column="site", heteroskedastic=False)
    hom.fit(X[train], y[train])
    z_het, _ = het.zscores(Xt, y[~train])
    z_hom, _ = hom.zscores(Xt, y[~train])
    assert abs(z_het[old].std() - 1) < 0.05
    assert z_hom[old].std() > 1.1  # the noise SD grows with age and with site


def test_unseen_site_is_flagged_then_adapted_from_a_few_controls():
    X, y = _toy(3000, 30, seed=2, sites=("a", "b", "c", "d"))
    seen = (X["site"] != "d").to_numpy()
    model = NormativeModel(covariates=("age", "sex"), site_column="site").fit(X[seen], y[seen])
    d_rows = np.flatnonzero(~seen)
    adapt_rows, test_rows = d_rows[:20], d_rows[20:]
    z, info = model.zscores(X.iloc[test_rows].reset_index(drop=True), y[test_rows])
    assert set(info["site_status"]) == {"unseen"}
    assert abs(z.mean()) > 0.2  # site d's offset is not known yet
    model.adapt(X.iloc[adapt_rows].reset_index(drop=True), y[adapt_rows])
    z, info = model.zscores(X.iloc[test_rows].reset_index(drop=True), y[test_rows])
    assert set(info["site_status"]) == {"adapted"}
    assert abs(z.mean()) < 0.1
    assert 0.93 <= np.mean(np.abs(z) < 1.96) <= 0.98
    with pytest.raises(BrainmatchInputError, match="at least 3 are needed"):
        model2 = NormativeModel(covariates=("age", "sex"), site_column="site")
        model2.fit(X[seen], y[seen]).adapt(X.iloc[d_rows[:2]], y[d_rows[:2]])


def test_fit_result_calibration_and_model_file_roundtrip(tmp_path, cohort, cohort_fit):
    cal = cohort_fit.summary["calibration"]
    assert abs(cal["mean_z"]) < 0.05 and abs(cal["sd_z"] - 1) < 0.05
    assert 0.93 <= cal["share_abs_z_below_1_96"] <= 0.97
    assert cohort_fit.warnings == []
    m = cohort_fit.fit_metrics
    assert {"explained_variance", "msll", "smse", "share_abs_z_below_1_96"} <= set(m.columns)
    assert (m["msll"] < 0).mean() > 0.9  # age / sex / site explain something in most features
    path = cohort_fit.save(tmp_path / "norm")
    assert path.name == "normative_model.npz"
    write_fit_report(cohort_fit, tmp_path / "norm" / "report.html")
    assert {"fit_metrics.tsv", "report.html", "fit_summary.json"} <= {
        p.name for p in (tmp_path / "norm").iterdir()
    }
    model, metrics, _meta = load_normative_model(path)
    tab = cohort.features.merge(cohort.participants, on="participant_id").head(30)
    z1, _ = cohort_fit.model.zscores(tab, tab[model.feature_names_])
    z2, _ = model.zscores(tab, tab[model.feature_names_])
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_allclose(metrics["msll"], m["msll"])
    # the file is plain NPZ: no pickles
    with np.load(path, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_tampered_or_foreign_model_file_is_refused(tmp_path, cohort_fit):
    path = cohort_fit.save(tmp_path / "norm")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["coef"] = arrays["coef"] + 1e-3
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(BrainmatchInputError, match="modified after it was written"):
        load_normative_model(bad)
    (tmp_path / "text.npz").write_text("not a model")
    with pytest.raises(BrainmatchInputError, match="not a brainmatch model file"):
        load_normative_model(tmp_path / "text.npz")
    # a treatment-selection model is not a normative model
    from brainmatch.selection.modelfile import save_model

    other = save_model(tmp_path / "sel.npz", {"a": np.zeros(2)}, {"kind": "x"})
    with pytest.raises(BrainmatchInputError, match="not a brainmatch normative model"):
        load_normative_model(other)
    # signed with another key: refused unless trusted
    forged = save_model(
        tmp_path / "forged.npz", arrays_without_meta(path), meta_of(path), key=b"someone else's key"
    )
    with pytest.raises(BrainmatchInputError, match="signed with another key"):
        load_normative_model(forged)
    with pytest.warns(UserWarning, match="explicitly trusted"):
        load_normative_model(forged, trust=True)


def arrays_without_meta(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "__meta__"}


def meta_of(path):
    import json

    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["__meta__"].tobytes().decode("utf-8"))
    return {k: v for k, v in meta.items() if k not in ("signature", "content_sha256")}


def test_planted_circuits_are_flagged_and_enigma_effects_recovered(cohort, cohort_fit):
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    patients = tab[tab.group == "patient"]
    scores = score_normative(cohort_fit.model, patients)
    truth = cohort.truth.set_index("participant_id")["planted"]
    c = scores.circuits
    sens, fpr = [], []
    for key, (measure, sign) in PLANTABLE.items():
        sub = c[(c.circuit == key) & (c.score == measure)].set_index("participant_id")
        if sub.empty:  # the cohort has no connectivity features
            continue
        flagged = sub["call"] != ""
        right_way = np.sign(sub["mean_z"]) == sign
        planted = truth.reindex(sub.index).str.contains(key)
        sens.append((flagged & right_way)[planted].mean())
        fpr.append(flagged[~planted & (truth.reindex(sub.index) == "")].mean())
    # 1.5 SD planted over 2-12 features against 1 SD threshold
    assert len(sens) == 3 and min(sens) > 0.7, sens
    assert max(fpr) < 0.05, fpr
    # ENIGMA-MDD effects (d of 84 volumes / thicknesses) recovered by the patients' mean z
    d = pd.Series(cohort.enigma_d)
    mean_z = scores.deviations[d.index].mean()
    slope = np.polyfit(d.to_numpy(), mean_z.to_numpy(), 1)[0]
    assert np.corrcoef(d, mean_z)[0, 1] > 0.6
    assert 0.6 < slope < 1.4
    assert (mean_z - d).abs().mean() < 0.05
    hippo = mean_z[["vol__Left_Hippocampus", "vol__Right_Hippocampus"]].mean()
    assert -0.25 < hippo < -0.05  # ENIGMA d = -0.144


def test_patients_mixed_into_controls_are_detected():
    cohort = draw_cohort(600, 150, n_sites=2, seed=5, connectivity=False, circuit_effect=3.0)
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    # labelled: a group column says who is a patient
    res = fit_normative(tab, covariate_columns=("age", "sex"), site_column="site")
    assert any("look like patients" in w for w in res.warnings)
    # unlabelled: only the deviations can tell
    res = fit_normative(
        tab.drop(columns="group"), covariate_columns=("age", "sex"), site_column="site"
    )
    assert res.summary["contamination"]["suspect"]
    assert any("mixed with patients" in w for w in res.warnings)
    clean = tab[tab.group == "control"].drop(columns="group")
    res = fit_normative(clean, covariate_columns=("age", "sex"), site_column="site")
    assert not res.summary["contamination"]["suspect"]
    assert not res.warnings


def test_without_covariates_reference_is_the_controls_distribution():
    X, y = _toy(500, 5)
    model = NormativeModel().fit(X, y)
    z, _ = model.zscores(X, y)
    expected = (y - y.mean(axis=0)) / y.std(axis=0)
    np.testing.assert_allclose(z, expected, atol=0.02)


def test_bad_inputs_have_one_clear_message(cohort_fit, cohort):
    X, y = _toy(200, 3)
    with pytest.raises(BrainmatchInputError, match="too few controls"):
        NormativeModel(covariates=("age", "sex"), site_column="site").fit(X[:40], y[:40])
    with pytest.raises(BrainmatchInputError, match="covariate column 'age' is missing"):
        NormativeModel(covariates=("age",)).fit(X.drop(columns="age"), y)
    with pytest.raises(BrainmatchInputError, match="constant in the controls"):
        NormativeModel().fit(X, np.c_[y, np.ones(200)])
    # the analysis leaves such features out, by name, instead of refusing the fit
    table = pd.DataFrame(y, columns=["f1", "f2", "f3"]).assign(
        participant_id=[f"sub-{i}" for i in range(200)], zeros=0.0, age=X["age"]
    )
    res = fit_normative(table, covariate_columns=("age",))
    assert res.model.feature_names_ == ["f1", "f2", "f3"]
    assert any("left out of the model: zeros" in w for w in res.warnings)
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    patients = tab[tab.group == "patient"].head(5)
    with pytest.raises(BrainmatchInputError, match="features are not in the table"):
        score_normative(cohort_fit.model, patients.drop(columns=["amp__ctx_lh_insula"]))
    with pytest.raises(BrainmatchInputError, match="needs covariate column"):
        score_normative(cohort_fit.model, patients.drop(columns=["age"]))
    old = patients.assign(age=95.0)
    res = score_normative(cohort_fit.model, old)
    assert any("outside the controls' range" in w and "extrapolation" in w for w in res.warnings)
    assert res.people["extrapolated"].all()
    unseen = patients.assign(site="elsewhere")
    res = score_normative(cohort_fit.model, unseen)
    assert any("were not in the controls" in w for w in res.warnings)
    assert set(res.people["site_status"]) == {"unseen"}
    with pytest.raises(BrainmatchInputError, match="never seen in the controls"):
        score_normative(cohort_fit.model, patients.assign(sex="X"))


def test_output_folder_of_someone_else_is_refused(tmp_path, cohort_fit):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(BrainmatchInputError, match="not empty"):
        cohort_fit.save(folder)
    # a rerun into its own output folder is fine
    cohort_fit.save(tmp_path / "norm")
    cohort_fit.save(tmp_path / "norm")


def test_shash_likelihood_calibrates_the_tails_of_skewed_measures():
    rng = np.random.default_rng(7)
    n, f = 3000, 6
    X = pd.DataFrame({"age": rng.uniform(18, 80, n), "sex": rng.choice(["F", "M"], n), "site": "a"})
    e = rng.standard_normal((n, f))
    y = np.sin(X["age"].to_numpy() / 20)[:, None] + np.exp(0.7 * e)  # log-normal noise
    train = np.arange(n) < 2000
    Xt = X[~train].reset_index(drop=True)
    tails = {}
    for lik in ("normal", "shash"):
        model = NormativeModel(covariates=("age", "sex"), likelihood=lik).fit(X[train], y[train])
        z, _ = model.zscores(Xt, y[~train])
        tails[lik] = (np.mean(z < -1.96), np.mean(z > 1.96))
        assert np.isfinite(model.log_likelihood(Xt, y[~train])).all()
    low, high = tails["normal"]
    assert low < 0.005 and high > 0.04  # a Gaussian misplaces both tails of skewed data
    low, high = tails["shash"]
    assert 0.015 < low < 0.035 and 0.015 < high < 0.035
    from scipy import stats

    model = NormativeModel(covariates=("age", "sex"), likelihood="shash").fit(X[train], y[train])
    z, _ = model.zscores(Xt, y[~train])
    assert abs(stats.skew(z.ravel())) < 0.15
    with pytest.raises(BrainmatchInputError, match="likelihood 'weird'"):
        NormativeModel(likelihood="weird").fit(X, y)


def test_noise_model_is_chosen_by_sample_size():
    small = draw_cohort(60, 0, n_sites=2, seed=8, connectivity=False)
    tab = small.features.merge(small.participants, on="participant_id").drop(columns="group")
    res = fit_normative(tab, covariate_columns=("age", "sex"), site_column="site", holdout=0)
    assert res.summary["heteroskedastic"] is False and res.model.noise_coef_.shape[1] == 1
    res = fit_normative(
        tab, covariate_columns=("age", "sex"), site_column="site", holdout=0, heteroskedastic=True
    )
    assert res.model.noise_coef_.shape[1] == res.model.coef_.shape[1]


def test_fit_metrics_equal_per_feature_scipy_with_missing_values():
    """The vectorised diagnostics equal the same statistics computed feature by feature with
    numpy and scipy over each feature's observed rows."""
    from scipy import stats

    from brainmatch.normative.analysis import fit_metrics

    X, y = _toy(260, 6, seed=5)
    model = NormativeModel(covariates=("age", "sex"), site_column="site").fit(X[:200], y[:200])
    Y = y[200:].copy()
    rng = np.random.default_rng(0)
    Y[rng.random(Y.shape) < 0.2] = np.nan
    Y[:, 5] = np.nan
    Y[:3, 5] = [0.1, 0.2, 0.3]  # three observed rows: no kurtosis
    got = fit_metrics(model, X[200:], Y, y[:200])
    mean, _ = model.predict(X[200:])
    z, _ = model.zscores(X[200:], Y)
    logp = model.log_likelihood(X[200:], Y)
    for j in range(Y.shape[1]):
        ok = ~np.isnan(Y[:, j])
        yy, m, zz = Y[ok, j], mean[ok, j], z[ok, j]
        mu0, var0 = y[:200, j].mean(), y[:200, j].var()
        nlp0 = 0.5 * np.log(2 * np.pi * var0) + 0.5 * (yy - mu0) ** 2 / var0
        ref = {
            "n_test": ok.sum(),
            "explained_variance": 1 - np.var(yy - m) / yy.var(),
            "smse": np.mean((yy - m) ** 2) / yy.var(),
            "rho": np.corrcoef(yy, m)[0, 1],
            "msll": np.mean(-logp[ok, j] - nlp0),
            "mean_z": zz.mean(),
            "sd_z": zz.std(ddof=1),
            "skew_z": stats.skew(zz),
            "kurtosis_z": stats.kurtosis(zz) if ok.sum() > 3 else np.nan,
            "share_abs_z_below_1_96": np.mean(np.abs(zz) < 1.96),
            "share_abs_z_above_2_6": np.mean(np.abs(zz) > 2.6),
        }
        for key, value in ref.items():
            np.testing.assert_allclose(got[key].iloc[j], value, rtol=1e-10, err_msg=key)


def test_non_numeric_feature_column_is_named():
    X, y = _toy(120, 3, seed=2)
    frame = pd.DataFrame(y, columns=["a", "b", "c"])
    model = NormativeModel(covariates=("age",), site_column="site").fit(X, frame)
    text = frame.astype(object)
    text.loc[4, "b"] = "n/a?"
    with pytest.raises(BrainmatchInputError, match=r"non-numeric values in feature.*: b"):
        model.zscores(X, text)
    # numbers stored as text are read as numbers
    z_text, _ = model.zscores(X, frame.astype(str))
    z_num, _ = model.zscores(X, frame)
    np.testing.assert_allclose(z_text, z_num, rtol=1e-12)
