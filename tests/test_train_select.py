"""Feature screening inside the CV loop of ``brainmatch train`` (``select=``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection import recommend, train, validate
from brainmatch.selection._ridge import LAMBDA_GRID
from brainmatch.selection.modelfile import load_model
from brainmatch.selection.pipeline import ArmModels
from brainmatch.selection.screen import ScreenedArmModels, parse_select, screening_scores
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.validation.synthetic import measured_features, outcome_table

KW = {
    "treatment_column": "arm",
    "outcome_column": "hamd_week8",
    "baseline_column": "hamd_baseline",
    "site_column": "site",
    "n_boot": 200,
    "learning_curve": False,
}


def _trial(n, effect, n_noise, seed, sites=3, reliability=0.9):
    trial = draw_trial(
        TrialSpec(n_subjects=n, n_sites=sites, effect_size=effect, arms=("CBT", "SSRI"), seed=seed)
    )
    f = measured_features(trial, n_noise=n_noise, reliability=reliability, seed=seed)
    return trial, f, outcome_table(trial)


def _share(trial, result):
    arms = result.metrics["arms"]
    truth = trial.truth.set_index("participant_id")
    pred = result.predictions.set_index("participant_id")
    mu = truth.loc[pred.index, [f"mu__{a}" for a in arms]].to_numpy()
    rec = np.searchsorted(arms, pred["recommended"])
    best = mu.mean(axis=0).min()
    return (best - mu[np.arange(len(rec)), rec].mean()) / (best - mu.min(axis=1).mean())


def test_screening_scores_are_within_arm_partial_correlations():
    rng = np.random.default_rng(0)
    n, p = 80, 30
    t = np.repeat([0, 1], n // 2)
    Z = rng.normal(size=(n, p))
    C = rng.normal(size=(n, 2))
    Y = rng.normal(size=(n, 3)) + Z[:, :1] * (t == 0)[:, None]
    got = screening_scores(Z, C, t, 2, Y)
    ref = np.zeros((p, 3))
    for a in (0, 1):
        rows = t == a
        A = np.column_stack([np.ones(rows.sum()), C[rows]])
        for j in range(p):
            zr = Z[rows, j] - A @ np.linalg.lstsq(A, Z[rows, j], rcond=None)[0]
            for c in range(3):
                yr = Y[rows, c] - A @ np.linalg.lstsq(A, Y[rows, c], rcond=None)[0]
                ref[j, c] += stats.pearsonr(zr, yr)[0] ** 2
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert np.argmax(got[:, 0]) == 0  # the interacting feature scores highest


def _gcv_ridge_reference(Phi, D, y, Phi_test, D_test):
    """Brute-force ridge on explicit matrices: penalty by GCV over the relative grid."""
    n = len(y)
    M = np.eye(n) - D @ np.linalg.pinv(D)
    PM = M @ Phi
    s = np.linalg.eigvalsh(PM.T @ PM).clip(0)
    scale = s.sum() / (n - np.linalg.matrix_rank(D))
    best = None
    for lam in LAMBDA_GRID * scale:
        w = np.linalg.solve(PM.T @ PM + lam * np.eye(Phi.shape[1]), PM.T @ y)
        H = D @ np.linalg.pinv(D) + PM @ np.linalg.solve(
            PM.T @ PM + lam * np.eye(Phi.shape[1]), PM.T
        )
        rss = ((y - H @ y) ** 2).sum()
        gcv = n * rss / (n - np.trace(H)) ** 2
        if best is None or gcv < best[0]:
            alpha = np.linalg.pinv(D) @ (y - Phi @ w)
            best = (gcv, Phi_test @ w + D_test @ alpha)
    return best[1]


@pytest.mark.parametrize("model", ["interaction", "per-arm"])
def test_screened_model_equals_ridge_on_selected_features(model):
    """Fixed k: the moment-based batched solver is the ridge on each column's kept
    features (the design of ArmModels: arm intercepts and covariates unpenalised, the
    interaction factor ``[Z, Z * 1(arm = a)] / sqrt(k)`` penalised), with the penalty chosen
    by GCV: equal to a brute-force fit on explicit matrices; every target column is
    screened on its own (a permuted column is not the real one's)."""
    rng = np.random.default_rng(1)
    n, p = 70, 60
    t = rng.permutation(np.repeat([0, 1], n // 2))
    Z = rng.normal(size=(n, p))
    Z = (Z - Z.mean(0)) / Z.std(0)
    C = rng.normal(size=(n, 2))
    y = Z[:, 3] * (2 * t - 1) + rng.normal(size=n)
    Y = np.column_stack([y, y[rng.permutation(n)], rng.normal(size=n)])
    Zt, Ct = rng.normal(size=(9, p)), rng.normal(size=(9, 2))
    onehot = np.eye(2)[t]
    for kk in (5, 20, 40):
        sm = ScreenedArmModels(model, kk).fit(Z, C, t, 2, Y)
        assert sm.selected(0)[0] == 3
        assert len({tuple(sorted(sm.selected(c))) for c in range(3)}) == 3
        got = sm.predict(Zt, Ct)
        for c in range(3):
            S = sm.selected(c)
            Zs, Zts = Z[:, S] / np.sqrt(kk), Zt[:, S] / np.sqrt(kk)
            for a in range(2):
                if model == "per-arm":
                    rows = t == a
                    D = np.column_stack([np.ones(rows.sum()), C[rows]])
                    ref = _gcv_ridge_reference(
                        Zs[rows], D, Y[rows, c], Zts, np.column_stack([np.ones(9), Ct])
                    )
                else:
                    Phi = np.hstack([Zs, Zs * onehot[:, [0]], Zs * onehot[:, [1]]])
                    e = np.zeros((9, 2))
                    e[:, a] = 1
                    Phi_t = np.hstack([Zts, Zts * e[:, [0]], Zts * e[:, [1]]])
                    ref = _gcv_ridge_reference(
                        Phi, np.column_stack([onehot, C]), Y[:, c], Phi_t, np.column_stack([e, Ct])
                    )
                np.testing.assert_allclose(got[:, a, c], ref, atol=1e-8)
            alone = ScreenedArmModels(model, kk).fit(Z, C, t, 2, Y[:, c : c + 1])
            np.testing.assert_allclose(alone.predict(Zt, Ct)[:, :, 0], got[:, :, c], atol=1e-10)
            coef = sm.primal(c)["coef"]
            assert np.count_nonzero(np.abs(coef).sum(axis=0)) <= kk


def test_all_features_candidate_is_scored_by_exact_leave_one_out():
    """select="auto": the all-features candidate's criterion is ArmModels' exact LOO
    error (brute force: refit without each row), so a dense signal keeps all features."""
    rng = np.random.default_rng(3)
    n, p = 60, 8
    t = rng.permutation(np.repeat([0, 1], n // 2))
    Z = rng.normal(size=(n, p))
    C = np.zeros((n, 0))
    y = Z @ rng.normal(size=p) * (2 * t - 1) + 0.3 * rng.normal(size=n)
    full = ArmModels("interaction").fit(Z, C, t, 2, y[:, None])
    lam = full.solvers_[0].lambdas[full.solvers_[0].choice[0]]
    loo = 0.0
    for i in range(n):
        keep = np.arange(n) != i
        m = ArmModels("interaction").fit(Z[keep], C[keep], t[keep], 2, y[keep, None])
        # refitted without row i at the full fit's (absolute) penalty
        s = m.solvers_[0]
        inv = 1.0 / (s.s[:, None] + lam)
        B = s.U.T @ s._m(y[keep, None])
        w = s.V @ (np.sqrt(s.s)[:, None] * inv * B)
        alpha = s.D_pinv @ y[keep, None] - s.DpF @ w
        s.w, s.alpha = w, alpha
        loo += (y[i] - m.predict(Z[i : i + 1], C[i : i + 1])[0, t[i], 0]) ** 2
    assert full.loo_sse()[0] == pytest.approx(loo, rel=1e-8)
    sm = ScreenedArmModels("interaction", "auto").fit(Z, C, t, 2, y[:, None])
    assert sm.k_[0] == p  # dense effects: all features win


def test_select_option_errors():
    assert parse_select("AUTO") == "auto" and parse_select("12") == 12
    with pytest.raises(BrainmatchInputError, match="expected auto, none or a number"):
        parse_select("some")
    with pytest.raises(BrainmatchInputError, match="at least 1"):
        parse_select(0)


@pytest.mark.slow
def test_sparse_signal_recovered_only_with_screening(tmp_path):
    """2 interacting features among 2000 distractors (n = 200): the unscreened ridge finds
    nothing; screening inside CV recovers a clear share of the oracle's gain, p < 0.05."""
    trial, f, o = _trial(n=200, effect=2.0, n_noise=2000, seed=3)
    # 39 permutations: the smallest attainable p is 0.025 (only the screened model's p is
    # tested; the others need no permutations)
    common = {**KW, "n_repeats": 1, "n_permutations": 39}
    auto = train(f, o, out_dir=tmp_path / "auto", select="auto", **common)
    quiet = {**common, "n_permutations": 0}
    none = train(f, o, out_dir=tmp_path / "none", select="none", **quiet)
    lasso = validate(f, o, model="t-linear", **quiet)
    s_auto, s_none, s_lasso = _share(trial, auto), _share(trial, none), _share(trial, lasso)
    assert auto.metrics["selection"]["permutation_p"] < 0.05
    # measured at seed 3: screening 0.81, none -0.09, lasso T-learner 0.425 (the share varies
    # by 0.4 between seeds, so the reference is the lasso T-learner on the same data)
    assert s_auto > s_none + 0.2, (s_auto, s_none)
    assert s_auto > s_lasso - 0.1, (s_auto, s_lasso)
    fs = auto.metrics["feature_selection"]
    assert len(fs["k_per_fold"]) == 5 and fs["permutation_cv_repeats"] == 1
    assert "activity__ctx-rh-insula" in fs["final_features"]
    assert none.metrics["feature_selection"]["final_features"] == "all"


def test_leakage_canary_with_screening(tmp_path):
    """Screening on all rows before CV finds signal in noise; screening inside CV does not."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng(0)
    n, p = 100, 2000
    X = rng.normal(size=(n, p))
    y = rng.normal(size=n)
    arm = np.repeat(["A", "B"], n // 2)
    r = np.abs((X - X.mean(0)).T @ (y - y.mean())) / n
    top = np.argsort(-r)[:10]
    leaky = cross_val_predict(RidgeCV(), X[:, top], y, cv=5)
    assert 1 - np.sum((y - leaky) ** 2) / np.sum((y - y.mean()) ** 2) > 0.2
    f = pd.DataFrame(X, columns=[f"f{j}" for j in range(p)])
    f.insert(0, "participant_id", [f"sub-{i:03d}" for i in range(n)])
    o = pd.DataFrame({"participant_id": f["participant_id"], "arm": arm, "y": y})
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="y",
        out_dir=tmp_path,
        select=10,
        n_repeats=1,
        n_permutations=99,
        n_boot=200,
        learning_curve=False,
    )
    for m in res.metrics["per_arm"].values():
        assert m["r2"] < 0.05
    assert res.metrics["selection"]["permutation_p"] > 0.05
    assert res.metrics["feature_selection"]["k_per_fold"] == [10] * 5


@pytest.mark.bench
def test_null_trials_calibrated_with_screening(tmp_path):
    """No interaction: with screening redone per permuted outcome the p-values stay uniform."""
    ps = []
    for s in range(20):
        _, f, o = _trial(n=70, effect=0.0, n_noise=30, seed=700 + s, sites=2)
        res = train(
            f,
            o,
            out_dir=tmp_path / str(s),
            select="auto",
            n_repeats=1,
            n_permutations=99,
            permutation_null="freedman-lane",  # the re-randomised null: test_train.py
            seed=s,
            **{**KW, "n_boot": 100},
        )
        ps.append(res.metrics["selection"]["permutation_p"])
    ps = np.array(ps)
    # one-sided binomial test at 1 %: 5 false positives of 20 (25 %) fail
    k = int((ps <= 0.05).sum())
    assert stats.binomtest(k, ps.size, 0.05, alternative="greater").pvalue > 0.01, k
    assert stats.kstest(ps, "uniform").pvalue > 0.01


def test_recommend_uses_the_selected_features(tmp_path):
    _, f, o = _trial(n=160, effect=2.0, n_noise=40, seed=5)
    res = train(f, o, out_dir=tmp_path / "m", select=5, n_repeats=1, n_permutations=20, **KW)
    arrays, meta = load_model(res.model_path)
    sel = arrays["selected"]
    names = [meta["feature_names"][j] for j in sel]
    assert meta["feature_selection"]["final_features"] == names and len(names) == 5
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["feature_selection"]["final_features"] == names
    assert np.count_nonzero(np.abs(arrays["coef"]).sum(axis=0)) <= 5
    new = f.merge(o[["participant_id", "site", "hamd_baseline"]]).head(6)
    base = recommend(res.model_path, new, None).patients
    other = [c for c in f.columns[1:] if c not in names]
    changed = new.copy()
    changed[other] = changed[other] + 1.5
    same = recommend(res.model_path, changed, None).patients
    for a, b in zip(base, same, strict=True):
        assert a["predicted"] == b["predicted"]
        assert {d["feature"] for d in a["drivers"] if d["contribution"] != 0} <= set(names)
    moved = new.copy()
    moved[names[0]] = moved[names[0]] + 1.5
    diff = recommend(res.model_path, moved, None).patients
    assert any(a["predicted"] != b["predicted"] for a, b in zip(base, diff, strict=True))


def test_default_recovers_sparse_effects_among_many_features():
    """The default (no select=) screens inside every fold: 3 interacting features among
    400 (n = 300) are recovered where the plain ridge over all features is not, and the
    permutation test (re-randomisation: a wide design) finds the effect."""
    from brainmatch.validation.regimes import draw_regime, oracle_share

    r = draw_regime(300, 400, "sparse", 2, seed=5)
    kw = dict(treatment_column="arm", outcome_column="y", better="higher", n_repeats=2,
              n_permutations=49, learning_curve=False)  # fmt: skip
    default = validate(r.features, r.outcomes, **kw)
    # only the default's p-value is tested: the plain ridge needs no permutations
    plain = validate(r.features, r.outcomes, select="none", **{**kw, "n_permutations": 0})

    def share(res):
        rec = np.searchsorted(r.arms, res.predictions["recommended"].to_numpy())
        return oracle_share(r.mu, rec)

    fs = default.metrics["feature_selection"]
    assert fs["select"] == "auto" and plain.metrics["feature_selection"]["select"] == "none"
    assert share(default) > 0.7 and share(default) > share(plain) + 0.3
    assert default.metrics["selection"]["permutation_p"] < 0.05
    # 400 features for 300 patients: the default test re-randomises (one CV repeat each)
    assert default.metrics["selection"]["permutation_null_method"] == "rerandomise"
    assert default.metrics["selection"]["permutation_cv_repeats"] == 1
    assert "all" not in fs["k_per_fold_counts"]  # a screened set won in every fold
    # what metrics.json says is what ran: the inner CV's folds, the default's criterion
    from brainmatch.selection.screen import INNER_FOLDS

    assert f"a {INNER_FOLDS}-fold CV inside the training fold" in default.metrics["cv"]["inner"]
    assert f"an inner {INNER_FOLDS}-fold CV" in fs["method"]
    assert "doubly robust error of the predicted treatment effects" in fs["method"]


def test_default_select_by_outcome_and_learner():
    from brainmatch.selection.screen import default_select

    assert default_select(None, "interaction", binary=False) == "auto"
    assert default_select(None, "per-arm", binary=False) == "auto"
    assert default_select(None, "interaction", binary=True) == "none"  # ridge-logistic
    assert default_select(None, "t-linear", binary=False) == "none"
    assert default_select("12", "interaction", binary=True) == 12
    r = _trial(n=60, effect=1.0, n_noise=3, seed=2)[1:]
    with pytest.raises(BrainmatchInputError, match="select= applies to the ridge models"):
        validate(*r, model="t-linear", select="auto", **{**KW, "n_permutations": 0})


def test_treatment_selector_select_parameter():
    """TreatmentSelector screens by default for a score and keeps the logit for 0/1."""
    from brainmatch import TreatmentSelector
    from brainmatch.validation.regimes import draw_regime

    r = draw_regime(200, 300, "sparse", 2, seed=1)
    X, arm, y = r.features.iloc[:, 1:], r.outcomes["arm"], r.outcomes["y"]
    sel = TreatmentSelector(better="higher").fit(X, arm, y)
    assert sel.learner_.select_ == "auto"
    assert np.count_nonzero(np.abs(sel.learner_.primal()["coef"]).sum(axis=0)) < 300
    plain = TreatmentSelector(better="higher", select="none").fit(X, arm, y)
    assert np.count_nonzero(np.abs(plain.learner_.primal()["coef"]).sum(axis=0)) == 300
    yb = (y > np.median(y)).astype(int)
    binary = TreatmentSelector().fit(X.iloc[:, :10], arm, yb)
    assert binary.learner_.select_ == "none" and binary.learner_.primal()["link"] == "logit"
    with pytest.raises(BrainmatchInputError, match="applies to the ridge learners"):
        TreatmentSelector("t-linear", select="auto").fit(X, arm, y)
