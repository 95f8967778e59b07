"""Normative models: brainmatch's BLR vs PCNtoolkit's BLR, speed and agreement.

Peer: PCNtoolkit 1.3 ``pcntoolkit.regression_model.blr.BLR`` (the ``normative`` extra,
GPL, imported here only), one model per feature on the same design matrix (intercept,
cubic B-spline of age, sex, site dummies), as PCNtoolkit fits them.

- Speed: 10,000 controls x 5,000 features with heteroskedastic noise (site scale, noise
  growing with age).  brainmatch fits every feature; PCNtoolkit is timed on
  ``N_PEER`` features and its time per feature scaled to 5,000 (features are fitted
  independently, so its cost is linear in their number).
- Agreement: 2,000 controls (1,600 fit / 400 held out) x ``N_AGREE`` features: max |dz|
  of held-out deviation z between the two (homoskedastic: PCNtoolkit's CG optimiser;
  heteroskedastic: PCNtoolkit's L-BFGS-B without its default penalty, brainmatch with
  ``var_ridge=0``) and each one's held-out calibration.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd

from brainmatch.normative import NormativeModel
from brainmatch.normative._design import build_design

N, F, N_PEER, N_AGREE, N_SCORE = 10_000, 5_000, 3, 8, 1_000


def cohort(n: int, f: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Controls with non-linear age effects, sex, 5 sites (location and scale)."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(8, 90, n)
    sex = rng.choice(["F", "M"], n)
    site = rng.integers(0, 5, n)
    loc = rng.normal(0, 0.4, (5, f))
    scale = np.exp(rng.normal(0, 0.2, (5, 1)))
    a = (age - 50) / 20
    mu = rng.normal(0, 0.5, f) * a[:, None] + rng.normal(0, 0.3, f) * (a**2)[:, None]
    mu = mu + rng.normal(0, 0.3, f) * (sex == "M")[:, None] + loc[site]
    sd = np.exp(rng.normal(0.15, 0.1, f) * a[:, None]) * scale[site]
    y = mu + sd * rng.standard_normal((n, f))
    X = pd.DataFrame({"age": age, "sex": sex, "site": [f"s{s}" for s in site]})
    return X, y


def pcn_fit_z(design: np.ndarray, y: np.ndarray, train: np.ndarray, het: bool) -> np.ndarray:
    """PCNtoolkit BLR on one feature; held-out z (or an empty array when only timing)."""
    import xarray as xr
    from pcntoolkit.math_functions.basis_function import LinearBasisFunction
    from pcntoolkit.regression_model.blr import BLR

    opts = (
        {"optimizer": "l-bfgs-b", "l_bfgs_b_l": 0.0, "l_bfgs_b_epsilon": 1e-4}
        if het
        else {"optimizer": "cg"}
    )
    blr = BLR(
        "bench",
        basis_function_mean=LinearBasisFunction(),
        basis_function_var=LinearBasisFunction(),
        heteroskedastic=het,
        **opts,
    )

    def arr(x: np.ndarray) -> xr.DataArray:
        return xr.DataArray(x, dims=("observations", "covariates"))

    def be(k: int) -> xr.DataArray:
        return xr.DataArray(np.zeros((k, 1), int), dims=("observations", "batch_effect_dims"))

    blr.fit(
        arr(design[train]), be(int(train.sum())), {}, xr.DataArray(y[train], dims="observations")
    )
    test = ~train
    if not test.any():
        return np.empty(0)
    z = blr.forward(
        arr(design[test]), be(int(test.sum())), xr.DataArray(y[test], dims="observations")
    )
    return np.asarray(z.values)


def main() -> None:
    """Run the benchmark and print timings, ratio and agreement."""
    logging.getLogger("pcntoolkit").setLevel(logging.ERROR)
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} cores, load average {load:.1f} when starting "
        "(timings on a shared, loaded machine are upper bounds)"
    )
    # --- agreement -------------------------------------------------------------------------
    X, y = cohort(2_000, N_AGREE, seed=1)
    train = np.arange(len(X)) < 1_600
    Xt = X[~train].reset_index(drop=True)
    for het in (False, True):
        model = NormativeModel(
            covariates=("age", "sex"),
            site_column="site",
            heteroskedastic=het,
            var_ridge=0.0,
            max_iter=300,
        ).fit(X[train], y[train])
        z, _ = model.zscores(Xt, y[~train])
        design = build_design(model.design_, X, X["site"].to_numpy())[0][:, 1:]
        zp = np.column_stack(
            [
                pcn_fit_z(design, (y[:, j] - model.y_mean_[j]) / model.y_scale_[j], train, het)
                for j in range(N_AGREE)
            ]
        )
        diff = np.abs(z - zp)
        name = "heteroskedastic" if het else "homoskedastic"
        print(
            f"agreement ({name}, 1600 fit / 400 held out x {N_AGREE} features): max |dz| = "
            f"{diff.max():.2g}, mean |dz| = {diff.mean():.2g}, corr = "
            f"{np.corrcoef(z.ravel(), zp.ravel())[0, 1]:.6f}; held-out share |z|<1.96: "
            f"brainmatch {np.mean(np.abs(z) < 1.96):.3f}, "
            f"PCNtoolkit {np.mean(np.abs(zp) < 1.96):.3f}"
        )

    # --- speed -------------------------------------------------------------------------------
    X, y = cohort(N, F, seed=2)
    t0 = time.perf_counter()
    model = NormativeModel(covariates=("age", "sex"), site_column="site").fit(X, y)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    z, _ = model.zscores(X.iloc[:N_SCORE].reset_index(drop=True), y[:N_SCORE])
    t_score = time.perf_counter() - t0
    print(
        f"brainmatch heteroskedastic BLR, {N} controls x {F} features "
        f"({model.design_.n_columns} design columns): fit {t_fit:.1f} s "
        f"({model.n_iter_} iterations at most), z-scores of {N_SCORE} people {t_score:.1f} s"
    )
    design = build_design(model.design_, X, X["site"].to_numpy())[0][:, 1:]
    everyone = np.ones(N, dtype=bool)
    t0 = time.perf_counter()
    for j in range(N_PEER):
        pcn_fit_z(design, (y[:, j] - model.y_mean_[j]) / model.y_scale_[j], everyone, True)
    per_feature = (time.perf_counter() - t0) / N_PEER
    print(
        f"PCNtoolkit heteroskedastic BLR: {per_feature:.1f} s per feature on {N} controls "
        f"(timed on {N_PEER}), {per_feature * F / 3600:.1f} h for {F} features"
    )
    print(f"speed vs PCNtoolkit: {per_feature * F / t_fit:.0f}x")


if __name__ == "__main__":
    main()
