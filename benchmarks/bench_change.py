"""``brainmatch change``: the vectorised mixed-model solver against statsmodels, and the
family-wise error rate of the permutation test on null simulations.

1. dietox (shipped with statsmodels): brainmatch's solver against lme4's values that
   statsmodels' own tests pin (REML).
2. Speed and accuracy: 60 participants x 2 sessions (3 sites, 15 % without a follow-up
   scan), the change design (arm x session cell means + site); brainmatch's solver on
   every feature at once against a loop of statsmodels ``MixedLM(...).fit(reml=True)``,
   one feature at a time, in the same process: the speed ratio and the largest
   differences in log-likelihood and fixed effects.
3. Null calibration of the interaction: ``N_SEEDS`` null trials (no arm-by-time effect
   anywhere; a common drift in every arm), 500 correlated features each, 199 permutations:
   the share of
   trials with any feature at permutation-FWE p < 0.05 should be about 5 %.
4. Null calibration of each arm's own change (sign-flip FWE), trials without any change.

Run: ``.venv/bin/python benchmarks/bench_change.py`` (timings are from whatever machine
runs it; on the shared 2-core development machine they were measured under load).
"""

from __future__ import annotations

import time
import warnings
from importlib.resources import files

import numpy as np
import pandas as pd
from scipy import stats

from brainmatch.change import analyse_change, fit_random_intercept, load_change_data
from brainmatch.change.analysis import build_design
from brainmatch.change.synthetic import synthetic_change_data

N_SM = 400  # features for the statsmodels loop
N_FAST = 6400  # features for brainmatch's solver (a Desikan-Killiany table's size)
N_SEEDS = 200


def dietox() -> None:
    from statsmodels.regression.mixed_linear_model import MixedLM

    d = pd.read_csv(str(files("statsmodels") / "regression/tests/results/dietox.csv"))
    X = np.column_stack([np.ones(len(d)), d["Time"]])
    fit = fit_random_intercept(X, d["Weight"].to_numpy(), d["Pig"].to_numpy())
    res = MixedLM(d["Weight"], X, d["Pig"]).fit()
    print("1. dietox, REML (lme4 values pinned in statsmodels' tests)")
    rows = [
        ("intercept", fit.params[0, 0], 15.723523, res.fe_params.iloc[0]),
        ("Time", fit.params[0, 1], 6.942505, res.fe_params.iloc[1]),
        ("scale", fit.scale[0], 11.36692, res.scale),
        ("group variance", fit.cov_re[0], 40.39395, float(res.cov_re.iloc[0, 0])),
        ("log-likelihood", fit.llf[0], -2404.775, res.llf),
        ("SE intercept", fit.bse[0, 0], 0.78805374, res.bse_fe.iloc[0]),
        ("SE Time", fit.bse[0, 1], 0.03338727, res.bse_fe.iloc[1]),
    ]
    print(f"   {'':16s} {'brainmatch':>14s} {'lme4':>14s} {'statsmodels':>14s}")
    for name, ours, lme4, sm in rows:
        print(f"   {name:16s} {ours:14.7f} {lme4:14.7f} {sm:14.7f}")


def speed() -> None:
    from statsmodels.regression.mixed_linear_model import MixedLM

    f, p = synthetic_change_data(n_subjects=60, n_features=N_FAST, n_sites=3, seed=11)
    data = load_change_data(f, p, site_column="site")
    design = build_design(data)
    groups = pd.factorize(data.rows["participant_id"])[0]
    t0 = time.perf_counter()
    fit = fit_random_intercept(design.X, data.Y, groups)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    llf, params = [], []
    for j in range(N_SM):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = MixedLM(data.Y[:, j], design.X, groups).fit(reml=True)
        llf.append(res.llf)
        params.append(res.fe_params)
    t_sm = time.perf_counter() - t0
    d_llf = fit.llf[:N_SM] - np.array(llf)
    d_par = np.abs(fit.params[:N_SM] - np.array(params)).max()
    per_fast = t_fast / N_FAST
    per_sm = t_sm / N_SM
    print(
        f"\n2. {len(data.rows)} scans of 60 participants, design with {design.X.shape[1]} columns"
    )
    print(
        f"   brainmatch solver: {N_FAST} features in {t_fast:.2f} s ({1e3 * per_fast:.3f} ms each)"
    )
    print(
        f"   statsmodels MixedLM loop: {N_SM} features in {t_sm:.1f} s ({1e3 * per_sm:.1f} ms each)"
    )
    print(f"   speed vs statsmodels MixedLM: {per_sm / per_fast:.0f}x per feature")
    print(
        f"   llf(brainmatch) - llf(statsmodels): min {d_llf.min():.2e}, max {d_llf.max():.2e} "
        "(>= 0: brainmatch's optimum is never worse)"
    )
    print(f"   largest |fixed-effect difference|: {d_par:.2e}")


def null_rate() -> None:
    hits = 0
    t0 = time.perf_counter()
    for seed in range(N_SEEDS):
        f, p = synthetic_change_data(
            n_subjects=60, n_features=500, n_sites=3, seed=5000 + seed, time_effect=0.3
        )
        res = analyse_change(
            f, p, treatment_column="arm", site_column="site", n_permutations=199, seed=seed
        )
        inter = res.table[res.table["effect"] == "interaction"]
        hits += int((inter["p_fwe"] < 0.05).any())
    rate = hits / N_SEEDS
    lo, hi = stats.binomtest(hits, N_SEEDS).proportion_ci(0.95)
    print(
        f"\n3. null trials: {hits} of {N_SEEDS} with any FWE-significant feature = {rate:.1%} "
        f"[{lo:.1%}, {hi:.1%}] (nominal 5 %; {time.perf_counter() - t0:.0f} s)"
    )


def within_arm_null_rate(n_seeds: int = 100) -> None:
    """Null trials with no change at all: within-arm sign-flip FWE false positives."""
    hits = 0
    t0 = time.perf_counter()
    for seed in range(n_seeds):
        f, p = synthetic_change_data(
            n_subjects=60, n_features=200, n_sites=3, seed=9000 + seed, time_effect=0.0
        )
        res = analyse_change(
            f, p, treatment_column="arm", site_column="site", n_permutations=199, seed=seed
        )
        ch = res.table[res.table["effect"] == "change"]
        hits += int((ch["p_fwe"] < 0.05).any())
    lo, hi = stats.binomtest(hits, n_seeds).proportion_ci(0.95)
    print(
        f"\n4. no change anywhere: {hits} of {n_seeds} trials with any within-arm change at "
        f"sign-flip FWE p < 0.05 = {hits / n_seeds:.1%} [{lo:.1%}, {hi:.1%}] (two arms, i.e. "
        f"two families: about 9.8 % expected; {time.perf_counter() - t0:.0f} s)"
    )


def main() -> None:
    """Run the three parts and print their figures."""
    print(
        "(timings measured on whatever machine runs this; the development machine is a "
        "shared, loaded 2-core box)"
    )
    dietox()
    speed()
    null_rate()
    within_arm_null_rate()


if __name__ == "__main__":
    main()
