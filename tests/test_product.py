"""The default's joint non-linear candidate: screened ridges on pairwise products.

Checks: the basis equals the products computed directly; the square components of the
model file reproduce the fitted model exactly; equal components of the final model and
its refits are stored once without changing any model; refits of a product choice refit
the same model; every target column is fitted as if alone (the batched permutations stay
valid); on known truth the default picks the products where two features modify the arm
effect together (and recovers far more of the oracle's gain than without them) and keeps a
linear model where effects are linear; the candidate is offered only within its limits;
``brainmatch train`` and ``brainmatch recommend`` carry it end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _basis_models import assert_recommend_reproduces, train_cli
from brainmatch.selection import screen, validate
from brainmatch.selection.learners import export_arrays, predict_exported, spec_from_arrays
from brainmatch.selection.modelfile import load_model
from brainmatch.selection.product import ProductBasis, feature_pairs, n_columns, pairs
from brainmatch.selection.screen import ScreenedArmModels, make_arm_models
from brainmatch.selection.train import N_BOOTSTRAP_MODELS
from brainmatch.selection.trees import OUTPUT_SQUARE, Components, export_hgb, export_products
from brainmatch.validation.regimes import draw_regime

KW = dict(
    treatment_column="arm",
    outcome_column="y",
    better="higher",
    n_repeats=1,
    n_permutations=0,
    learning_curve=False,
)


def _joint(n: int = 600, p: int = 30, q: int = 2, seed: int = 0):
    """The arm effect is ``1.5 z_0 z_1``: invisible to either feature alone; feature 2 and
    the first covariate are prognostic."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, p))
    Z = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    C = rng.normal(size=(n, q))
    t = np.arange(n) % 2
    y = Z[:, 2] + C[:, 0] + t * 1.5 * Z[:, 0] * Z[:, 1] + rng.normal(0, 1.0, n)
    return Z, C, t, y


def _share(r, res):
    rec = np.searchsorted(r.arms, res.predictions["recommended"].to_numpy())
    mu = r.mu
    best = mu.mean(axis=0).max()
    return (mu[np.arange(len(rec)), rec].mean() - best) / (mu.max(axis=1).mean() - best)


def test_basis_is_the_standardised_products():
    """Columns ``p + c`` are ``z_i z_j`` (pair ``c`` of ``i < j``) standardised with the
    training rows' mean and SD, which the moments give exactly."""
    Z, _, _, _ = _joint(n=80, p=7)
    basis = ProductBasis().fit(Z[:50])
    i, j = pairs(7)
    raw = Z[:, i] * Z[:, j]
    np.testing.assert_allclose(basis.mean_, raw[:50].mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(basis.sd_, raw[:50].std(axis=0), atol=1e-12)
    X = basis.transform(Z[50:])
    assert X.shape == (30, n_columns(7)) == (30, 7 + 21)
    np.testing.assert_array_equal(X[:, :7], Z[50:])
    np.testing.assert_allclose(X[:, 7:], (raw[50:] - basis.mean_) / basis.sd_, atol=1e-12)
    assert (i[3], j[3]) == (0, 4)
    assert feature_pairs(np.array([2, 7, 10, 27]), 7) == [(2,), (0, 1), (0, 4), (5, 6)]


def test_product_components_reproduce_the_fitted_model():
    """The model file's form (the features' coefficients plus two squares per product the
    model uses, standardisation folded into the weights and intercepts) equals the fitted
    model's predictions; a pair of squares over 4 is the product."""
    Z, C, t, y = _joint()
    m = ScreenedArmModels().fit(Z, C, t, 2, y[:, None])
    assert m.product_cols_[0], m.label(0)
    assert m.chosen("interaction") == "interaction (product basis)"
    assert str(m.label(0)).startswith("product:")
    assert {0, 1} <= set(m.selected(0).tolist())
    Zt, Ct, _, _ = _joint(n=50, seed=1)
    spec = {**m.primal(0), "link": "identity"}
    comps = spec["components"]
    assert (comps.output == OUTPUT_SQUARE).all() and comps.n_components % 2 == 0
    np.testing.assert_allclose(
        predict_exported(Zt, Ct, spec), m.predict(Zt, Ct)[:, :, 0], rtol=0, atol=1e-10
    )
    sq = export_products(np.array([0, 3]), np.array([1, 5]), 32).evaluate(np.column_stack([Zt, Ct]))
    np.testing.assert_allclose((sq[:, 0] - sq[:, 1]) / 4, Zt[:, 0] * Zt[:, 1], atol=1e-12)
    np.testing.assert_allclose((sq[:, 2] - sq[:, 3]) / 4, Zt[:, 3] * Zt[:, 5], atol=1e-12)
    # the covariates are never inputs of the squares
    assert comps.used_inputs().max() < Z.shape[1]


def test_product_refits_are_the_same_model():
    """``select="product:<n>"`` (the bootstrap refits of a final model that chose the
    products) refits the same model on the same rows; all columns means the ridge on all."""
    Z, C, t, y = _joint()
    m = ScreenedArmModels().fit(Z, C, t, 2, y[:, None])
    again = make_arm_models("interaction", m.refit_select(0)).fit(Z, C, t, 2, y[:, None])
    assert again.label(0) == m.label(0)
    np.testing.assert_allclose(again.predict(Z, C), m.predict(Z, C), atol=1e-10)
    Z, C = Z[:, :6], C
    every = make_arm_models("interaction", f"product:{n_columns(6)}").fit(Z, C, t, 2, y[:, None])
    X = ProductBasis().fit(Z).transform(Z)
    ref = ScreenedArmModels(select="none", kernel="off").fit(X, C, t, 2, y[:, None])
    np.testing.assert_allclose(every.predict(Z, C), ref.predict(X, C), atol=1e-10)


def test_every_target_column_is_fitted_as_if_alone():
    """The permuted outcomes are fitted as extra columns of one fit: each column's choice
    (linear, hinge or product candidates) and model equal those of a fit of it alone."""
    Z, C, t, y = _joint(n=400, p=60)
    rng = np.random.default_rng(5)
    Y = np.column_stack([y, y[rng.permutation(y.size)], Z[:, 3] * (2 * t - 1) + y])
    batched = ScreenedArmModels().fit(Z, C, t, 2, Y)
    labels = [batched.label(c) for c in range(3)]
    assert str(labels[0]).startswith("product:"), labels
    for c in range(3):
        alone = ScreenedArmModels().fit(Z, C, t, 2, Y[:, c : c + 1])
        assert alone.label(0) == labels[c]
        np.testing.assert_allclose(
            alone.predict(Z, C)[:, :, 0], batched.predict(Z, C)[:, :, c], atol=1e-8
        )


def test_default_learns_a_product_and_keeps_linear_ones(monkeypatch):
    """Known truth (the benchmark's generator): a threshold and a product of two features
    modify the arm effect among 30 (n = 500); the default chooses the product basis in
    most folds and recovers far more of the oracle's gain than without it (measured at
    seeds 0, 1, 3: 0.77, 0.74, 0.77 against 0.25, 0.21, 0.20).  Sparse linear effects:
    the products are never chosen."""
    r = draw_regime(500, 30, "nonlinear", 2, seed=1, effect=1.5)
    res = validate(r.features, r.outcomes, **KW)
    counts = res.metrics["feature_selection"]["k_per_fold_counts"]
    assert sum(c for k, c in counts.items() if str(k).startswith("product:")) >= 4, counts
    assert "pairwise product" in res.metrics["feature_selection"]["method"]
    with_products = _share(r, res)
    monkeypatch.setattr(screen, "PRODUCT_MAX_P", 0)
    without = _share(r, validate(r.features, r.outcomes, **KW))
    assert with_products > 0.6 and with_products > without + 0.3, (with_products, without)
    monkeypatch.undo()
    lin = draw_regime(400, 30, "sparse", 2, seed=1)
    res = validate(lin.features, lin.outcomes, **KW)
    counts = res.metrics["feature_selection"]["k_per_fold_counts"]
    assert not any(str(k).startswith("product:") for k in counts), counts
    assert _share(lin, res) > 0.9


@pytest.mark.parametrize(
    ("n", "p"),
    [
        (400, 1),
        (400, screen.PRODUCT_MAX_P + 1),
        (2 * screen.PRODUCT_MIN_ARM - 2, 30),  # an arm with fewer rows than PRODUCT_MIN_ARM
        (400, -1),  # a basis of more cells than PRODUCT_MAX_CELLS
    ],
)
def test_no_products_outside_the_limits(n, p, monkeypatch):
    if p == -1:
        p = 30
        monkeypatch.setattr(screen, "PRODUCT_MAX_CELLS", 400 * (30 + 435) - 1)
    Z, C, t, y = _joint(n=n, p=max(p, 3))
    Z = Z[:, :p]
    m = ScreenedArmModels().fit(Z, C, t, 2, y[:, None])
    assert m.product_ is None and not m.product_cols_.any()
    # the same trial with enough rows per arm and features in range does offer them
    monkeypatch.undo()
    Z, C, t, y = _joint(n=400, p=30)
    assert ScreenedArmModels().fit(Z, C, t, 2, y[:, None]).product_cols_[0]


def test_equal_components_are_stored_once():
    """Refits that choose the same products share their squares in the model file; every
    model's predictions are unchanged by the merge (to float32 storage of the refits'
    linear coefficients).  :meth:`Components.take` keeps trees intact."""
    Z, C, t, y = _joint(n=400, p=12)
    m = ScreenedArmModels().fit(Z, C, t, 2, y[:, None])
    spec = {**m.primal(0), "link": "identity"}
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(6):
        idx = rng.choice(t.size, t.size)
        refit = make_arm_models("interaction", m.refit_select(0))
        boots.append(
            {**refit.fit(Z[idx], C[idx], t[idx], 2, y[idx, None]).primal(0), "link": "identity"}
        )
    total = sum(b["components"].n_components for b in [spec, *boots])
    arrays = export_arrays(spec, boots)
    assert arrays["comp_baseline"].size < total
    assert arrays["comp_weight"].shape == (2, arrays["comp_baseline"].size)
    back, back_boots = spec_from_arrays(arrays, "identity", ValueError)
    Zt, Ct, _, _ = _joint(n=30, p=12, seed=2)
    np.testing.assert_allclose(
        predict_exported(Zt, Ct, back), m.predict(Zt, Ct)[:, :, 0], atol=1e-10
    )
    for got, want in zip(back_boots, boots, strict=True):
        np.testing.assert_allclose(
            predict_exported(Zt, Ct, got), predict_exported(Zt, Ct, want), atol=1e-5
        )
    # a pool with trees: take() of some components equals those columns of the whole
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = np.column_stack([Z, C])
    parts = [
        export_hgb(HistGradientBoostingRegressor(max_iter=5 + s, random_state=s).fit(X, y))
        for s in range(3)
    ]
    pool = Components.concat([parts[0], export_products([0], [1], X.shape[1]), parts[2]], 14)
    keep = np.array([3, 0, 2])
    np.testing.assert_allclose(pool.take(keep).evaluate(X[:40]), pool.evaluate(X[:40])[:, keep])
    assert pool.equal_components().tolist() == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def product_model(tmp_path_factory):
    """``brainmatch train`` (the CLI) on a trial whose final model is the product basis."""
    d = tmp_path_factory.mktemp("product")
    r = draw_regime(500, 30, "nonlinear", 2, seed=1, effect=1.5)
    return d, r, train_cli(d, r)


def test_train_stores_the_product_model_and_recommend_reproduces_it(product_model, tmp_path):
    d, r, output = product_model
    assert "product basis" in output
    arrays, meta = load_model(d / "model" / "model.npz")
    assert meta["model_chosen"] == "interaction (product basis)"
    # squares only, fewer than two per product of every model (the refits share theirs)
    e = arrays["comp_baseline"].size
    assert (arrays["comp_output"] == OUTPUT_SQUARE).all() and 2 <= e
    assert arrays["boot_comp_weight"].shape == (N_BOOTSTRAP_MODELS, 2, e)
    per_model = (np.abs(arrays["boot_comp_weight"]).sum(axis=1) > 0).sum(axis=1)
    assert e < per_model.sum()
    metrics = json.loads((d / "model" / "metrics.json").read_text())
    counts = metrics["feature_selection"]["k_per_fold_counts"]
    assert any(k.startswith("product:") for k in counts), counts
    report = (d / "model" / "report.html").read_text()
    assert "columns of the product basis (" in report and "No coefficient map" in report
    # recommend (CLI) reproduces the same model fitted in Python
    assert_recommend_reproduces(d, r, tmp_path, "interaction (product basis)")


def test_null_trials_with_products_fast():
    """Null trials where the products are offered (150 x 20: 60 training patients per arm,
    190 products beside the RBF ridge): no more false claims of a policy gain or small
    permutation p-values than chance allows (binomial 1 % bounds for 20 trials; the
    200-trial calibration is in ``docs/train.md``: CI covers 0 in 0.995, p <= 0.05 in
    0.035, KS p = 0.27)."""
    ps, cover, claims = [], [], []
    for s in range(20):
        r = draw_regime(150, 20, "none", 2, seed=700 + s)
        res = validate(r.features, r.outcomes, **{**KW, "n_permutations": 19}, seed=s)
        assert "pairwise product" in res.metrics["feature_selection"]["method"]
        sel = res.metrics["selection"]
        lo, hi = sel["policy_gain_ci"]
        ps.append(sel["permutation_p"])
        cover.append(lo <= 0 <= hi)
        claims.append(lo > 0)
    assert sum(cover) >= 16 and sum(claims) <= 2, (cover, claims)
    assert sum(p <= 0.05 for p in ps) <= 4, ps


@pytest.mark.parametrize("q", [0, 2])
def test_moments_from_gathered_features_equal_the_shared_gram(monkeypatch, q):
    """The screened ridges' moments, from one Gram matrix of the union of every column's
    features (small unions) or from each column's gathered features (a product basis,
    where permuted outcomes screen thousands of different columns), give the same fits
    and choices, in small memory steps too."""
    Z, C, t, y = _joint(n=300, p=25, q=max(q, 1))
    C = C[:, :q]
    rng = np.random.default_rng(1)
    Y = np.column_stack([y] + [y[rng.permutation(y.size)] for _ in range(40)])
    monkeypatch.setattr(screen, "GATHER_FACTOR", 10**9)
    shared = ScreenedArmModels().fit(Z, C, t, 2, Y)
    monkeypatch.setattr(screen, "GATHER_FACTOR", 0)
    monkeypatch.setattr(screen, "GATHER_CELLS", 5000)  # a few columns per step
    gathered = ScreenedArmModels().fit(Z, C, t, 2, Y)
    assert [gathered.label(c) for c in range(41)] == [shared.label(c) for c in range(41)]
    np.testing.assert_allclose(gathered.predict(Z, C), shared.predict(Z, C), atol=1e-9)
