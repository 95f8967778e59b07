"""Durability: the Cox fit against lifelines on Rossi, and how much of the oracle's RMST gain
selection by predicted relapse-free survival recovers on simulated follow-up.

1. Rossi recidivism data (shipped with lifelines): brainmatch's ``CoxModel`` against
   lifelines' ``CoxPHFitter`` in the same process (coefficients, concordance).
2. Simulated follow-up (``simulate/followup.py``), 400 patients, CBT vs SSRI, brain
   moderator of durability 1.0 log-HR per SD (and the null, 0), ``N_SEEDS`` seeds: the
   true RMST (to 52 weeks) gain of the out-of-fold policy over the best single arm, as a
   share of the oracle's gain; the estimated gain with its bootstrap CI; one permutation
   test.

Run: ``.venv/bin/python benchmarks/bench_durability.py`` (on the shared, loaded 2-core
development machine).
"""

from __future__ import annotations

import time

import numpy as np

from brainmatch.durability import CoxModel, validate_durability
from brainmatch.durability.metrics import harrell_c
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.simulate.followup import draw_followup
from brainmatch.validation.synthetic import measured_features

N_SEEDS = 10
ROSSI = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]


def rossi() -> None:
    from lifelines import CoxPHFitter
    from lifelines.datasets import load_rossi

    r = load_rossi()
    m = CoxModel().fit(r[ROSSI], r["week"], r["arrest"])
    ref = CoxPHFitter().fit(r, "week", "arrest")
    diff = np.abs(m.coef_ - ref.params_[ROSSI].to_numpy()).max()
    print("1. Rossi (lifelines.datasets.load_rossi)")
    print(
        "   coefficients:", ", ".join(f"{c} {v:.4f}" for c, v in zip(ROSSI, m.coef_, strict=True))
    )
    c = harrell_c(r["week"], r["arrest"], m.predict_risk(r[ROSSI]))
    print(
        f"   largest |difference| from lifelines: {diff:.1e}; concordance {c:.4f} "
        f"(lifelines {ref.concordance_index_:.4f})"
    )


def simulated(effect: float, seed: int, n_permutations: int = 0) -> dict[str, float]:
    trial = draw_trial(TrialSpec(n_subjects=400, n_sites=3, seed=seed))
    fu, truth, _ = draw_followup(trial, durability_effect=effect)
    f = measured_features(trial, n_noise=20, reliability=0.9, seed=seed)
    keep = fu["relapse"].notna().to_numpy()
    X = f.drop(columns="participant_id").to_numpy()[keep]
    res = validate_durability(
        X,
        fu["relapse_weeks"].to_numpy()[keep],
        fu["relapse"].to_numpy(float)[keep],
        trial.truth["arm"].to_numpy()[keep],
        n_bootstrap=300,
        n_permutations=n_permutations,
        seed=seed,
    )
    tr = truth[keep].reset_index(drop=True)
    arms = res.params["arms"]
    R = tr[[f"rmst52__{a}" for a in arms]].to_numpy()
    rec = res.predictions["recommended"].to_numpy()
    policy = R[np.arange(len(rec)), [arms.index(a) for a in rec]].mean()
    best, oracle = R.mean(axis=0).max(), R.max(axis=1).mean()
    g = res.metrics["policy_rmst_gain"]
    out = {
        "true_gain": policy - best,
        "oracle_gain": oracle - best,
        "estimate": g["estimate"],
        "ci_low": g["ci_low"],
        "ci_high": g["ci_high"],
        "uno_c": res.metrics["uno_c"],
        "events": res.params["n_events"],
    }
    if n_permutations:
        out["permutation_p"] = res.metrics["permutation_p"]
    return out


def main() -> None:
    """Print the Rossi comparison and the simulated recovery."""
    rossi()
    for effect in (1.0, 0.0):
        t0 = time.perf_counter()
        rows = [simulated(effect, 100 + s) for s in range(N_SEEDS)]
        share = [r["true_gain"] / r["oracle_gain"] for r in rows if r["oracle_gain"] > 0]
        print(
            f"\n2. durability effect {effect}: {N_SEEDS} seeds, 400 patients each "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        print(
            "   oracle gain (weeks of RMST to 52): mean "
            f"{np.mean([r['oracle_gain'] for r in rows]):.2f}"
        )
        print(
            "   true gain of the learned policy:  mean "
            f"{np.mean([r['true_gain'] for r in rows]):.2f}"
        )
        if share:
            print(
                f"   share of the oracle's gain recovered: median {np.median(share):.0%} "
                f"(range {min(share):.0%} to {max(share):.0%})"
            )
        print(
            "   estimated gain with CI above 0 in "
            f"{sum(r['ci_low'] > 0 for r in rows)} of {N_SEEDS} seeds"
        )
        print(f"   Uno's C: mean {np.mean([r['uno_c'] for r in rows]):.3f}")
    t0 = time.perf_counter()
    one = simulated(1.0, 100, n_permutations=49)
    print(
        f"\n3. permutation test (seed 100, 49 permutations, {time.perf_counter() - t0:.0f} s): "
        f"gain {one['estimate']:.2f} [{one['ci_low']:.2f}, {one['ci_high']:.2f}], "
        f"p = {one['permutation_p']:.3f}"
    )
    zero = simulated(0.0, 100, n_permutations=49)
    print(
        f"   null (effect 0): gain {zero['estimate']:.2f} [{zero['ci_low']:.2f}, "
        f"{zero['ci_high']:.2f}], p = {zero['permutation_p']:.3f}"
    )


if __name__ == "__main__":
    main()
