"""The default's non-linear candidate: the ridge on random Fourier features of an RBF kernel.

Checks: the cosine components of the model file reproduce the fitted ridge exactly; on
known truth the default picks the kernel where effects are non-linear (and recovers more of
the oracle's gain than without it) and keeps a linear model where they are linear; the
model file, ``brainmatch train`` and ``brainmatch recommend`` carry it end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _basis_models import assert_recommend_reproduces, train_cli
from brainmatch.selection import recommend, screen, validate
from brainmatch.selection.fourier import FourierArmModels, fourier_map
from brainmatch.selection.learners import predict_exported
from brainmatch.selection.modelfile import load_model
from brainmatch.selection.screen import ScreenedArmModels, make_arm_models
from brainmatch.selection.train import N_BOOTSTRAP_MODELS
from brainmatch.selection.trees import Components, export_fourier
from brainmatch.validation.regimes import draw_regime

pytestmark = pytest.mark.usefixtures("no_product_basis")


def _arrays(n: int = 120, p: int = 6, q: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, p))
    C = rng.normal(size=(n, q))
    t = np.arange(n) % 2
    y = np.sin(2 * Z[:, 0]) * (2 * t - 1) + C[:, 0] + rng.normal(0, 0.5, n)
    return Z, C, t, y


def _share(r, rec):
    mu = r.mu
    best = mu.mean(axis=0).max()
    return (mu[np.arange(len(rec)), rec].mean() - best) / (mu.max(axis=1).mean() - best)


def _oof_share(r, res):
    rec = np.searchsorted(r.arms, res.predictions["recommended"].to_numpy())
    return _share(r, rec)


def test_cosine_components_reproduce_the_fitted_ridge():
    """The model file's form (cosine components, standardisation folded into the weights)
    equals the fitted ridge's predictions; the components are ``cos(b + Z w)``."""
    Z, C, t, y = _arrays()
    fm = FourierArmModels().fit(Z, C, t, 2, y[:, None])
    spec = {**fm.export(0), "link": "identity"}
    Zt, Ct, _, _ = _arrays(n=40, seed=1)
    np.testing.assert_allclose(
        predict_exported(Zt, Ct, spec), fm.predict(Zt, Ct)[:, :, 0], rtol=0, atol=1e-10
    )
    w, b = fourier_map(Z.shape[1])
    comps = export_fourier(w, b, Z.shape[1] + C.shape[1])
    np.testing.assert_allclose(
        comps.evaluate(np.column_stack([Zt, Ct])), np.cos(Zt @ w + b), atol=1e-12
    )
    # the inputs the drivers use: the features, never the covariate columns
    assert comps.used_inputs().tolist() == list(range(Z.shape[1]))


def test_rbf_only_refits():
    """``select="rbf"`` (the bootstrap refits of a final model that chose the kernel) fits
    the kernel alone, as :class:`FourierArmModels` does (whose leave-one-out predictions
    are :class:`ArmModels`', checked against brute-force refits in
    ``test_screen_criterion.py``)."""
    Z, C, t, y = _arrays(n=60)
    m = make_arm_models("interaction", "rbf").fit(Z, C, t, 2, y[:, None])
    assert isinstance(m, ScreenedArmModels) and m.kernel_.all() and m.label(0) == "rbf"
    assert m.full_ is None and m.selected(0).tolist() == list(range(Z.shape[1]))
    ref = FourierArmModels().fit(Z, C, t, 2, y[:, None])
    np.testing.assert_allclose(m.predict(Z, C), ref.predict(Z, C), atol=1e-12)
    assert m.penalties() == ref.penalties()
    assert m.primal(0)["components"].n_components == 500


def test_default_learns_non_linear_effects_and_keeps_linear_ones(monkeypatch):
    """Known truth: a threshold and a product modify the arm effect (n = 600, p = 5); the
    default chooses the kernel in most folds and recovers clearly more of the oracle's gain
    than without the kernel candidate.  Sparse linear effects: the kernel is not chosen."""
    kw = dict(
        treatment_column="arm",
        outcome_column="y",
        better="higher",
        n_repeats=1,
        n_permutations=0,
        learning_curve=False,
    )
    r = draw_regime(600, 5, "nonlinear", 2, seed=3, effect=1.5)
    res = validate(r.features, r.outcomes, **kw)
    counts = res.metrics["feature_selection"]["k_per_fold_counts"]
    assert counts.get("rbf", 0) >= 4, counts
    with_kernel = _oof_share(r, res)
    monkeypatch.setattr(screen, "RBF_MAX_P", 0)
    without = _oof_share(r, validate(r.features, r.outcomes, **kw))
    assert with_kernel > 0.5 and with_kernel > without + 0.2, (with_kernel, without)
    monkeypatch.undo()
    lin = draw_regime(400, 10, "sparse", 2, seed=1)
    res = validate(lin.features, lin.outcomes, **kw)
    assert "rbf" not in res.metrics["feature_selection"]["k_per_fold_counts"]
    assert _oof_share(lin, res) > 0.9


def test_no_kernel_above_the_feature_limit():
    r = draw_regime(200, screen.RBF_MAX_P + 1, "nonlinear", 2, seed=0, effect=2.0)
    Z = r.features.iloc[:, 1:].to_numpy()
    t = np.searchsorted(r.arms, r.outcomes["arm"])
    m = ScreenedArmModels().fit(Z, np.zeros((200, 0)), t, 2, r.outcomes[["y"]].to_numpy())
    assert m.fourier_ is None and not m.kernel_.any()


@pytest.fixture(scope="module")
def kernel_model(tmp_path_factory):
    """``brainmatch train`` (the CLI) on a non-linear trial whose final model is the RBF
    ridge."""
    d = tmp_path_factory.mktemp("rbf")
    r = draw_regime(500, 5, "nonlinear", 2, seed=3, effect=1.5)
    return d, r, train_cli(d, r)


def test_train_stores_the_kernel_model_and_recommend_reproduces_it(kernel_model, tmp_path):
    d, r, output = kernel_model
    assert "RBF kernel ridge" in output
    arrays, meta = load_model(d / "model" / "model.npz")
    assert meta["model_chosen"] == "interaction (RBF kernel ridge)"
    # one pool of 500 cosine components shared by the final model and its bootstrap refits
    assert arrays["comp_output"].tolist() == [2] * 500
    assert arrays["comp_weight"].shape == (2, 500)
    assert arrays["boot_comp_weight"].shape == (N_BOOTSTRAP_MODELS, 2, 500)
    assert not np.allclose(arrays["boot_comp_weight"][0], arrays["comp_weight"])
    metrics = json.loads((d / "model" / "metrics.json").read_text())
    assert "rbf" in metrics["feature_selection"]["k_per_fold_counts"]
    report = (d / "model" / "report.html").read_text()
    assert "all, RBF kernel ridge (" in report and "No coefficient map" in report
    # recommend (CLI) reproduces the same model fitted in Python
    rj = assert_recommend_reproduces(d, r, tmp_path, "interaction (RBF kernel ridge)")
    # the Python API's recommend gives the same
    api = recommend(d / "model" / "model.npz", r.features.head(4), None)
    assert api.patients[3]["recommended"] == rj["patients"][3]["recommended"]


def test_crafted_cosine_output_is_refused():
    bad = {**export_fourier(np.ones((3, 4)), np.zeros(4), 3).to_arrays()}
    bad["comp_output"] = np.full(4, 7, dtype=np.uint8)
    with pytest.raises(ValueError, match="'comp_output' holds values other than 0, 1, 2, 3 and 4"):
        Components.from_arrays(bad, 3, ValueError)


def test_kernel_model_on_dask_equals_serial(tmp_path):
    """The final model's bootstrap refits of the kernel come back from worker processes as
    copies: the model file is the same as the serial run's, one pool of 500 components."""
    from distributed import LocalCluster

    from brainmatch.selection import train

    r = draw_regime(500, 5, "nonlinear", 2, seed=3, effect=1.5)
    kw = dict(treatment_column="arm", outcome_column="y", better="higher", n_repeats=1,
              n_permutations=9, learning_curve=False)  # fmt: skip
    a = train(r.features, r.outcomes, out_dir=tmp_path / "a", **kw)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        b = train(
            r.features,
            r.outcomes,
            out_dir=tmp_path / "b",
            scheduler=cluster.scheduler_address,
            **kw,
        )
    za, zb = np.load(a.model_path), np.load(b.model_path)
    assert za["comp_weight"].shape == (2, 500)
    for key in ("comp_linear", "comp_baseline", "comp_weight", "boot_comp_weight", "intercept"):
        np.testing.assert_array_equal(za[key], zb[key])
