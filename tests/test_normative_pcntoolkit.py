"""brainmatch's BLR against PCNtoolkit's BLR on the same design (the ``normative`` extra).

PCNtoolkit (GPL) is imported here only, for comparison; brainmatch never imports it.
Both fit the same design matrix (intercept, B-spline of age, sex, site dummies) on the
same standardised data; PCNtoolkit maximises the type-II likelihood with its optimiser,
brainmatch with evidence fixed points and EM.  Measured agreement of held-out z
(this test's data): homoskedastic max |dz| 7e-6 (CG optimiser); heteroskedastic,
unpenalised on both sides, max |dz| 0.007 (L-BFGS-B).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from brainmatch.normative import NormativeModel
from brainmatch.normative._design import build_design

pcn_blr = pytest.importorskip(
    "pcntoolkit.regression_model.blr", reason="PCNtoolkit (the `normative` extra) not installed"
)
xr = pytest.importorskip("xarray")


def _data(n: int = 1000, f: int = 4, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 80, n)
    sex = rng.choice(["F", "M"], n)
    site = rng.choice(["a", "b", "c"], n)
    loc = {"a": 0.0, "b": 0.5, "c": -0.3}
    scale = {"a": 1.0, "b": 1.5, "c": 0.8}
    mu = np.sin(age / 20)[:, None] + 0.3 * (sex == "M")[:, None]
    mu = mu + np.array([loc[s] for s in site])[:, None]
    sd = (0.5 + 0.01 * age)[:, None] * np.array([scale[s] for s in site])[:, None]
    return pd.DataFrame({"age": age, "sex": sex, "site": site}), mu + sd * rng.standard_normal(
        (n, f)
    )


def _pcn_z(design: np.ndarray, ys: np.ndarray, train: np.ndarray, het: bool) -> np.ndarray:
    from pcntoolkit.math_functions.basis_function import LinearBasisFunction

    opts = (
        {"optimizer": "cg"}
        if not het
        else {"optimizer": "l-bfgs-b", "l_bfgs_b_l": 0.0, "l_bfgs_b_epsilon": 1e-4}
    )
    blr = pcn_blr.BLR(
        "cmp",
        basis_function_mean=LinearBasisFunction(),
        basis_function_var=LinearBasisFunction(),
        heteroskedastic=het,
        **opts,
    )

    def arr(x: np.ndarray) -> object:
        return xr.DataArray(x, dims=("observations", "covariates"))

    def be(k: int) -> object:
        return xr.DataArray(np.zeros((k, 1), int), dims=("observations", "batch_effect_dims"))

    blr.fit(
        arr(design[train]), be(train.sum()), {}, xr.DataArray(ys[train], dims=("observations",))
    )
    test = ~train
    out = blr.forward(
        arr(design[test]), be(test.sum()), xr.DataArray(ys[test], dims=("observations",))
    )
    return np.asarray(out.values)


@pytest.mark.parametrize(
    ("het", "tol"), [(False, 1e-3), pytest.param(True, 0.05, marks=pytest.mark.slow)]
)
def test_zscores_agree_with_pcntoolkit_blr(het: bool, tol: float) -> None:
    logging.getLogger("pcntoolkit").setLevel(logging.ERROR)
    X, y = _data(800, 2)
    train = np.arange(len(X)) < 600
    model = NormativeModel(
        covariates=("age", "sex"),
        site_column="site",
        heteroskedastic=het,
        var_ridge=0.0,
        max_iter=300,
    )
    model.fit(X[train], y[train])
    z, _ = model.zscores(X[~train].reset_index(drop=True), y[~train])
    design, _ = build_design(model.design_, X, X["site"].to_numpy())
    # PCNtoolkit adds its own intercept column
    design = design[:, 1:]
    for j in range(y.shape[1]):
        ys = (y[:, j] - model.y_mean_[j]) / model.y_scale_[j]
        zp = _pcn_z(design, ys, train, het)
        print(f"heteroskedastic={het} feature {j}: max |dz| = {np.max(np.abs(z[:, j] - zp)):.2g}")
        assert np.max(np.abs(z[:, j] - zp)) < tol
        assert np.corrcoef(z[:, j], zp)[0, 1] > 0.9999
