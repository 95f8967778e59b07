"""The default's non-linear candidate over many features: screened ridges on hinges.

Checks: the hinge components of the model file reproduce the fitted model exactly; the
refits of a hinge choice refit the same model; on known truth the default picks the hinge
basis where a threshold modifies the arm effect among 60 features (and recovers more of
the oracle's gain than without it) and keeps a linear model where effects are linear; the
candidate is offered only between the two feature limits; ``brainmatch train`` and
``brainmatch recommend`` carry it end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _basis_models import assert_recommend_reproduces, train_cli
from brainmatch.selection import screen, validate
from brainmatch.selection.hinge import KNOTS, HingeBasis, feature_of, hinge_columns
from brainmatch.selection.learners import predict_exported
from brainmatch.selection.modelfile import load_model
from brainmatch.selection.screen import ScreenedArmModels, make_arm_models
from brainmatch.selection.train import N_BOOTSTRAP_MODELS
from brainmatch.selection.trees import export_hinges
from brainmatch.validation.regimes import draw_regime

KW = dict(
    treatment_column="arm",
    outcome_column="y",
    better="higher",
    n_repeats=1,
    n_permutations=0,
    learning_curve=False,
)


pytestmark = pytest.mark.usefixtures("no_product_basis")


def _threshold(n: int = 400, p: int = 60, q: int = 2, seed: int = 0):
    """A threshold on feature 0 reverses the arm effect; feature 2 is prognostic."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, p))
    Z = (Z - Z.mean(axis=0)) / Z.std(axis=0)
    C = rng.normal(size=(n, q))
    t = np.arange(n) % 2
    effect = np.where(Z[:, 0] > 0.5, 1.5, -1.0)
    y = Z[:, 2] + C[:, 0] + t * effect + rng.normal(0, 1.0, n)
    return Z, C, t, y


def _share(r, res):
    rec = np.searchsorted(r.arms, res.predictions["recommended"].to_numpy())
    mu = r.mu
    best = mu.mean(axis=0).max()
    return (mu[np.arange(len(rec)), rec].mean() - best) / (mu.max(axis=1).mean() - best)


def test_hinge_components_reproduce_the_fitted_model():
    """The model file's form (the features' coefficients plus ``3 p`` hinge components,
    standardisation folded into the weights) equals the fitted model's predictions; the
    components are ``max(0, z_j - knot)``."""
    Z, C, t, y = _threshold()
    m = ScreenedArmModels().fit(Z, C, t, 2, y[:, None])
    assert m.hinge_cols_[0], m.label(0)
    assert m.chosen("interaction") == "interaction (hinge basis)"
    assert str(m.label(0)).startswith("hinge:")
    Zt, Ct, _, _ = _threshold(n=50, seed=1)
    spec = {**m.primal(0), "link": "identity"}
    assert spec["components"].n_components == 3 * Z.shape[1]
    np.testing.assert_allclose(
        predict_exported(Zt, Ct, spec), m.predict(Zt, Ct)[:, :, 0], rtol=0, atol=1e-10
    )
    comps = export_hinges(Z.shape[1], np.asarray(KNOTS), Z.shape[1] + C.shape[1])
    np.testing.assert_allclose(
        comps.evaluate(np.column_stack([Zt, Ct])), hinge_columns(Zt), atol=1e-12
    )
    want = np.maximum(0.0, Zt[:, 4] - KNOTS[2])
    np.testing.assert_allclose(hinge_columns(Zt)[:, 3 * 4 + 2], want)
    # the threshold's feature is among the selected ones; covariates never are inputs
    assert 0 in m.selected(0)
    assert comps.used_inputs().tolist() == list(range(Z.shape[1]))
    assert feature_of(np.array([3, 60, 62, 63, 239]), 60).tolist() == [3, 0, 0, 1, 59]


def test_hinge_refits_are_the_same_model():
    """``select="hinge:<n>"`` (the bootstrap refits of a final model that chose the hinge
    basis) refits the same model on the same rows; all columns means the ridge on all."""
    Z, C, t, y = _threshold()
    m = ScreenedArmModels().fit(Z, C, t, 2, y[:, None])
    again = make_arm_models("interaction", m.refit_select(0)).fit(Z, C, t, 2, y[:, None])
    assert again.label(0) == m.label(0)
    np.testing.assert_allclose(again.predict(Z, C), m.predict(Z, C), atol=1e-10)
    every = make_arm_models("interaction", f"hinge:{4 * Z.shape[1]}").fit(Z, C, t, 2, y[:, None])
    assert isinstance(every, ScreenedArmModels) and every.hinge_ is not None
    assert every.hinge_.full_ is not None and len(every.selected(0)) == Z.shape[1]
    H = HingeBasis().fit(Z).transform(Z)
    ref = ScreenedArmModels(select="none", kernel="off").fit(H, C, t, 2, y[:, None])
    np.testing.assert_allclose(every.predict(Z, C), ref.predict(H, C), atol=1e-10)


def test_default_learns_a_threshold_among_many_features_and_keeps_linear_ones(monkeypatch):
    """Known truth: a threshold and a product modify the arm effect among 60 features
    (n = 600); the default chooses the hinge basis in most folds and recovers clearly more
    of the oracle's gain than without it.  Sparse linear effects: it is never chosen."""
    r = draw_regime(600, 60, "nonlinear", 2, seed=3, effect=1.5)
    res = validate(r.features, r.outcomes, **KW)
    counts = res.metrics["feature_selection"]["k_per_fold_counts"]
    assert sum(c for k, c in counts.items() if str(k).startswith("hinge:")) >= 4, counts
    with_hinges = _share(r, res)
    monkeypatch.setattr(screen, "HINGE_MAX_P", 0)
    without = _share(r, validate(r.features, r.outcomes, **KW))
    assert with_hinges > without + 0.1, (with_hinges, without)
    monkeypatch.undo()
    lin = draw_regime(400, 60, "sparse", 2, seed=3)
    res = validate(lin.features, lin.outcomes, **KW)
    counts = res.metrics["feature_selection"]["k_per_fold_counts"]
    assert not any(str(k).startswith("hinge:") for k in counts), counts
    assert _share(lin, res) > 0.9


@pytest.mark.parametrize(
    ("n", "p"),
    [
        (400, screen.HINGE_MIN_P),
        (400, screen.HINGE_MAX_P + 1),
        (2 * screen.HINGE_MIN_ARM - 2, 60),  # an arm with fewer rows than HINGE_MIN_ARM
    ],
)
def test_no_hinges_outside_the_limits(n, p):
    Z, C, t, y = _threshold(n=n, p=p)
    m = ScreenedArmModels().fit(Z, C, t, 2, y[:, None])
    assert m.hinge_ is None and not m.hinge_cols_.any()
    # the same trial with enough rows per arm and features in range does offer it
    Z, C, t, y = _threshold(n=400, p=60)
    assert ScreenedArmModels().fit(Z, C, t, 2, y[:, None]).hinge_cols_[0]


@pytest.fixture(scope="module")
def hinge_model(tmp_path_factory):
    """``brainmatch train`` (the CLI) on a trial whose final model is the hinge basis."""
    d = tmp_path_factory.mktemp("hinge")
    r = draw_regime(600, 60, "nonlinear", 2, seed=3, effect=1.5)
    return d, r, train_cli(d, r)


def test_train_stores_the_hinge_model_and_recommend_reproduces_it(hinge_model, tmp_path):

    d, r, output = hinge_model
    assert "hinge basis" in output
    arrays, meta = load_model(d / "model" / "model.npz")
    assert meta["model_chosen"] == "interaction (hinge basis)"
    # one pool of 3 p hinge components shared by the final model and its bootstrap refits
    assert arrays["comp_output"].tolist() == [3] * 180
    assert arrays["comp_weight"].shape == (2, 180)
    assert arrays["boot_comp_weight"].shape == (N_BOOTSTRAP_MODELS, 2, 180)
    metrics = json.loads((d / "model" / "metrics.json").read_text())
    counts = metrics["feature_selection"]["k_per_fold_counts"]
    assert any(k.startswith("hinge:") for k in counts), counts
    assert "hinges max(0, z - c)" in metrics["feature_selection"]["method"]
    report = (d / "model" / "report.html").read_text()
    assert "columns of the hinge basis (" in report and "No coefficient map" in report
    # recommend (CLI) reproduces the same model fitted in Python
    assert_recommend_reproduces(d, r, tmp_path, "interaction (hinge basis)")
