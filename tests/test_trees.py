"""Boosted trees in the safe model file: our traversal against scikit-learn, hostile files.

Reference: scikit-learn's own ``HistGradientBoostingRegressor.predict`` and
``HistGradientBoostingClassifier.predict_proba`` (equal to 1e-10, missing values
included); the model file's threat model (a signed file whose tree arrays were crafted
is refused before any traversal).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection import modelfile as mf
from brainmatch.selection import recommend
from brainmatch.selection.estimator import TreatmentSelector
from brainmatch.selection.learners import make_learner
from brainmatch.selection.trees import Components, export_hgb, export_linear
from brainmatch.validation.regimes import draw_regime


def _data(
    seed: int = 0, n: int = 400, p: int = 12, missing: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = 2 * X[:, 0] + np.sin(3 * X[:, 1]) * (X[:, 2] > 0) + rng.normal(size=n)
    X[rng.random(X.shape) < missing] = np.nan
    return X, y


def _bad(msg: str) -> ValueError:
    return ValueError(msg)


def test_regressor_and_classifier_equal_sklearn_with_missing_values():
    X, y = _data()
    Xt, _ = _data(1, n=300, missing=0.25)
    reg = HistGradientBoostingRegressor(max_iter=120, learning_rate=0.1, random_state=0).fit(X, y)
    clf = HistGradientBoostingClassifier(max_iter=80, random_state=0).fit(X, y > 0)
    pool = Components.concat(
        [export_hgb(reg), export_hgb(clf), export_linear(np.arange(12.0), 0.5)], 12
    )
    G = pool.evaluate(Xt)
    np.testing.assert_allclose(G[:, 0], reg.predict(Xt), rtol=0, atol=1e-10)
    np.testing.assert_allclose(G[:, 1], clf.predict_proba(Xt)[:, 1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(G[:, 2], np.nan_to_num(Xt) @ np.arange(12.0) + 0.5, atol=1e-10)
    # a NaN must reach a leaf through the learned missing-value branch, not a comparison
    assert np.isnan(Xt).any() and pool.missing_left.any() and not pool.missing_left.all()
    # round trip through the arrays (validated) changes nothing; the first component alone
    back = Components.from_arrays(pool.to_arrays(), 12, _bad)
    np.testing.assert_array_equal(back.evaluate(Xt), G)
    np.testing.assert_array_equal(pool.head(1).evaluate(Xt)[:, 0], G[:, 0])
    assert set(pool.used_inputs(np.array([0]))) >= {0, 1, 2}


def test_unstorable_models_are_refused():
    X, y = _data(missing=0.0)
    with pytest.raises(BrainmatchInputError, match="squared-error"):
        export_hgb(HistGradientBoostingRegressor(loss="poisson", max_iter=5).fit(X, np.exp(y)))
    with pytest.raises(BrainmatchInputError, match="binary"):
        export_hgb(HistGradientBoostingClassifier(max_iter=5).fit(X, np.digitize(y, [-1, 1])))


@pytest.mark.parametrize("learner", ["t-hgb", "x-hgb", "dr-hgb", "r-hgb", "x-linear"])
def test_meta_learners_round_trip_the_model_file(learner, tmp_path, _model_key):
    r = draw_regime(200, 6, "nonlinear", 2, seed=3)
    X, o = r.features.iloc[:, 1:].copy(), r.outcomes
    X.iloc[:7, 0] = np.nan
    sel = TreatmentSelector(learner, better="higher").fit(X, o["arm"], o["y"])
    back = TreatmentSelector.load(sel.save(tmp_path / "m.npz"))
    np.testing.assert_allclose(
        back.predict_outcomes(X).to_numpy(), sel.predict_outcomes(X).to_numpy(), atol=1e-10
    )
    assert back.chosen_learner_ == learner


def test_binary_t_hgb_round_trip(tmp_path, _model_key):
    r = draw_regime(200, 6, "nonlinear", 2, seed=4)
    X, o = r.features.iloc[:, 1:], r.outcomes
    yb = (o["y"] > o["y"].median()).astype(int)
    sel = TreatmentSelector("t-hgb").fit(X, o["arm"], yb)
    pred = sel.predict_outcomes(X).to_numpy()
    assert ((pred > 0) & (pred < 1)).all()
    back = TreatmentSelector.load(sel.save(tmp_path / "b.npz"))
    np.testing.assert_allclose(back.predict_outcomes(X).to_numpy(), pred, atol=1e-10)


@pytest.fixture(scope="module")
def tree_model(tmp_path_factory):
    """A trained, validated x-hgb model file (with bootstrap refits)."""
    from brainmatch.selection import train

    out = tmp_path_factory.mktemp("trees")
    r = draw_regime(160, 5, "nonlinear", 2, seed=11, effect=2.0)
    res = train(
        r.features,
        r.outcomes,
        treatment_column="arm",
        outcome_column="y",
        better="higher",
        model="x-hgb",
        out_dir=out / "m",
        n_repeats=1,
        n_permutations=3,
        learning_curve=False,
    )
    return res, r


def test_train_stores_boosted_model_and_recommend_reproduces_it(tree_model):
    res, r = tree_model
    arrays, meta = mf.load_model(res.model_path)
    assert meta["model_chosen"] == "x-hgb"
    # the final model and 20 bootstrap refits, 4 boosted components each (mu_0, mu_1, tau pair)
    assert arrays["comp_weight"].shape == (2, 84)
    assert arrays["boot_comp_weight"].shape == (20, 2, 84)
    rec = recommend(res.model_path, r.features.head(5), None)
    # same preprocessing + learner refitted in-process gives the same predictions
    Xf = r.features.iloc[:, 1:]
    sel = TreatmentSelector("x-hgb", better="higher").fit(Xf, r.outcomes["arm"], r.outcomes["y"])
    want = sel.predict_outcomes(Xf.head(5)).to_numpy()
    lo, hi = meta["outcome_range"]
    got = np.array([[p["predicted"][a]["value"] for a in meta["arms"]] for p in rec.patients])
    np.testing.assert_allclose(got, np.clip(want, lo, hi), atol=1e-10)
    p = rec.patients[0]
    assert "non-linear model" in p["drivers_note"]
    assert p["advantage_interval"][0] <= p["advantage_interval"][1]
    # occlusion drivers: contributions of features the model uses, in outcome units
    assert all(abs(d["contribution"]) > 0 for d in p["drivers"])


def _forge_signed(src, dst, key, change):
    import io

    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    change(arrays)
    meta["signature"] = {
        "scheme": "HMAC-SHA256",
        "key_id": mf.key_id(key),
        "mac": mf._mac(key, arrays, meta),
    }
    meta["content_sha256"] = mf._content_hash(arrays, meta)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    dst.write_bytes(buf.getvalue())
    return dst


def _set(name, fn):
    def change(a):
        a[name] = fn(a[name].copy())

    return change


def _cycle(left):
    split = np.flatnonzero(left > 0)
    left[split[3]] = split[3]  # a node pointing to itself: an endless traversal
    return left


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("tree_left", _cycle), "'tree_left' points outside its tree or backwards"),
        (_set("tree_right", lambda v: v + 10**6), "'tree_right' points outside"),
        (_set("tree_feature", lambda v: v + 1000), "split features outside"),
        (_set("tree_threshold", lambda v: np.where(v > 0, np.nan, v)), "'tree_threshold'"),
        (_set("tree_value", lambda v: np.full_like(v, np.inf)), "'tree_value' holds NaN"),
        (_set("tree_is_leaf", lambda v: v * 7), "values other than 0 and 1"),
        (_set("tree_node_offsets", lambda v: v[::-1].copy()), "'tree_node_offsets'"),
        (_set("comp_tree_offsets", lambda v: v[:-1].copy()), "'comp_tree_offsets'"),
        (_set("comp_weight", lambda v: v[:, :-1].copy()), "'comp_weight'"),
        (_set("boot_comp_weight", lambda v: v * np.nan), "'comp_weight' holds NaN"),
        (_set("comp_linear", lambda v: v[:, :-1].copy()), "'comp_linear'"),
        (_set("tree_value", lambda v: v.astype(np.int64)), "not a floating-point"),
        (lambda a: a.pop("tree_left"), "'tree_left' is missing"),
    ],
)
def test_crafted_tree_arrays_are_refused_even_when_signed(
    tree_model, tmp_path, _model_key, change, message
):
    res, _ = tree_model
    bad = _forge_signed(
        res.model_path, tmp_path / "bad.npz", _model_key.read_bytes().strip(), change
    )
    with pytest.raises(BrainmatchInputError, match=message):
        mf.load_model(bad)


def test_s_learner_and_exported_specs():
    r = draw_regime(120, 4, "sparse", 2, seed=2)
    Z = r.features.iloc[:, 1:].to_numpy()
    t = np.searchsorted(r.arms, r.outcomes["arm"].to_numpy())
    m = make_learner("s-hgb").fit(Z, np.zeros((120, 0)), t, 2, r.outcomes["y"].to_numpy())
    assert not m.storable
    with pytest.raises(BrainmatchInputError, match="cannot be stored"):
        m.export()


def test_cli_recommend_on_a_boosted_model(tree_model, tmp_path):
    """``brainmatch recommend`` on an x-hgb model file: exit 0, and the predicted outcome
    in recommend.json equals the Python API's."""
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    res, r = tree_model
    r.features.head(3).to_csv(tmp_path / "new.csv", index=False)
    out = CliRunner().invoke(
        app,
        ["recommend", str(res.model_path), str(tmp_path / "new.csv"), "--out", str(tmp_path / "r")],
    )
    assert out.exit_code == 0, out.output
    rj = json.loads((tmp_path / "r" / "recommend.json").read_text())
    api = recommend(res.model_path, r.features.head(3), None)
    arm = rj["model"]["arms"][1]
    assert rj["patients"][2]["predicted"][arm]["value"] == pytest.approx(
        api.patients[2]["predicted"][arm]["value"], abs=1e-12
    )
    assert rj["model"]["model_chosen"] == "x-hgb"


def test_stack_weights_recover_a_known_mixture():
    """Pseudo-outcomes built from 0.3 a + 0.7 b (plus noise-free DR terms): the convex DR
    weights recover 0.3 / 0.7 and drop a useless candidate."""
    from brainmatch.selection.learners import stack_weights

    rng = np.random.default_rng(0)
    n = 4000
    t = rng.integers(0, 2, n)
    a = rng.normal(size=(n, 2))
    b = rng.normal(size=(n, 2))
    junk = rng.normal(size=(n, 2))
    truth = 0.3 * a + 0.7 * b
    y = truth[np.arange(n), t] + 0.1 * rng.normal(size=n)
    w = stack_weights({"a": a, "b": b, "junk": junk}, t, y, np.array([0.5, 0.5]))
    assert w["a"] == pytest.approx(0.3, abs=0.05) and w["b"] == pytest.approx(0.7, abs=0.05)
    assert w["junk"] < 0.05 and sum(w.values()) == pytest.approx(1.0)


def test_auto_stack_is_stored_and_bootstrap_keeps_the_choice(tmp_path, _model_key):
    """When auto stacks, the saved file reproduces the stack's predictions, and a refit of
    the same choice keeps the learners and weights."""
    from brainmatch.selection.learners import AutoLearner, StackedLearner

    r = draw_regime(300, 8, "dense", 2, seed=0)
    X, o = r.features.iloc[:, 1:], r.outcomes
    sel = TreatmentSelector(
        "auto", better="higher", candidates=("interaction", "t-linear", "x-hgb")
    ).fit(X, o["arm"], o["y"])
    auto = sel.learner_
    assert isinstance(auto, AutoLearner) and "stack" in auto.scores_
    # force a stack to test storage whatever the inner CV chose
    auto.weights_ = {"interaction": 0.5, "x-hgb": 0.5}
    Z = np.asarray(X, dtype=float)
    Zs, Cs = sel.preprocessor_.transform(Z, pd.DataFrame(index=range(len(Z))), None)
    t = np.searchsorted(sel.arms_, o["arm"].to_numpy())
    auto.model_ = auto.refit_chosen(Zs, Cs, t, 2, o["y"].to_numpy())
    assert isinstance(auto.model_, StackedLearner) and auto.model_.names == ["interaction", "x-hgb"]
    back = TreatmentSelector.load(sel.save(tmp_path / "s.npz"))
    np.testing.assert_allclose(
        back.predict_outcomes(X).to_numpy(), sel.predict_outcomes(X).to_numpy(), atol=1e-10
    )
    parts = [m.predict(Zs, Cs) for m in auto.model_.models_]
    np.testing.assert_allclose(
        sel.predict_outcomes(X).to_numpy(), 0.5 * parts[0] + 0.5 * parts[1], atol=1e-12
    )


def test_tree_pool_above_the_node_limit_is_refused(monkeypatch):
    """The node limit is checked before any per-node validation or traversal."""
    from brainmatch.selection import trees

    X, y = _data(missing=0.0)
    pool = export_hgb(HistGradientBoostingRegressor(max_iter=5).fit(X, y))
    arrays = pool.to_arrays()
    Components.from_arrays(arrays, 12, _bad)
    with pytest.raises(ValueError, match="expected 2"):
        Components.from_arrays({**arrays, "comp_linear": arrays["comp_linear"][0]}, 12, _bad)
    monkeypatch.setattr(trees, "MAX_NODES", pool.value.size - 1)
    with pytest.raises(ValueError, match="at most"):
        Components.from_arrays(arrays, 12, _bad)


def test_ridge_with_more_features_than_patients_points_to_auto():
    from brainmatch.selection import validate

    r = draw_regime(40, 60, "sparse", 2, seed=0)
    kw = dict(treatment_column="arm", outcome_column="y", better="higher", n_repeats=1)
    res = validate(
        r.features, r.outcomes, n_permutations=0, learning_curve=False, select="none", **kw
    )
    assert any("consider select='auto'" in w for w in res.metrics["warnings"])
    # the default screens features, so it does not warn
    screened = validate(r.features, r.outcomes, n_permutations=0, learning_curve=False, **kw)
    assert screened.metrics["feature_selection"]["select"] == "auto"
    assert not any("consider select='auto'" in w for w in screened.metrics["warnings"])
    small = validate(
        r.features.iloc[:, :11],
        r.outcomes,
        n_permutations=0,
        learning_curve=False,
        select="none",
        **kw,
    )
    assert not any("consider select='auto'" in w for w in small.metrics["warnings"])
