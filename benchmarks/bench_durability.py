"""Durability: the Cox fit against lifelines on Rossi, and how much of the oracle's RMST gain
selection by predicted relapse-free survival recovers on simulated follow-up.

1. Rossi recidivism data (shipped with lifelines): brainmatch's ``CoxModel`` against
   lifelines' ``CoxPHFitter`` in the same process (coefficients, concordance).
2. Simulated follow-up (``simulate/followup.py``), 400 patients, CBT vs SSRI, brain
   moderator of durability 1.0 log-HR per SD (and the null, 0), ``N_SEEDS`` seeds, for
   every learner (ridge Cox per arm, lasso Cox per arm, the pseudo-observation lasso
   T-learner, and ``auto``, chosen among them by inner CV): the true RMST (to 52 weeks)
   gain of the out-of-fold policy over the best single arm, as a share of the oracle's
   gain (mean with its Monte-Carlo standard error over seeds, and median); the estimated
   gain with its bootstrap CI.
3. One permutation test (49 reruns of the whole cross-validation).
4. ``lasso-cox`` with the features harmonised by site (ComBat in every training fold).

Run: ``.venv/bin/python benchmarks/bench_durability.py`` (``... site``: only the last
section), on the shared, loaded 2-core development machine.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from brainmatch.durability import CoxModel, validate_durability
from brainmatch.durability.metrics import harrell_c
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.simulate.followup import draw_followup
from brainmatch.validation.synthetic import measured_features

N_SEEDS = 10
LEARNERS = ("per-arm", "lasso-cox", "pseudo", "auto")
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


def simulated(
    effect: float,
    seed: int,
    n_permutations: int = 0,
    model: str = "lasso-cox",
    harmonise: bool = False,
) -> dict[str, Any]:
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
        model=model,
        sites=trial.truth["site"].to_numpy()[keep] if harmonise else None,
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
        "chosen": res.metrics["model_chosen"],
    }
    if n_permutations:
        out["permutation_p"] = res.metrics["permutation_p"]
    return out


def summary(effect: float, model: str, harmonise: bool = False) -> None:
    """One learner over ``N_SEEDS`` seeds."""
    t0 = time.perf_counter()
    rows = [simulated(effect, 100 + s, model=model, harmonise=harmonise) for s in range(N_SEEDS)]
    secs = time.perf_counter() - t0
    share = np.array([r["true_gain"] / r["oracle_gain"] for r in rows if r["oracle_gain"] > 0])
    label = f"{model} + ComBat by site" if harmonise else model
    print(f"   {label:<10} ({secs:.0f} s)")
    print(
        f"      oracle gain {np.mean([r['oracle_gain'] for r in rows]):.2f} weeks; learned "
        f"policy's true gain {np.mean([r['true_gain'] for r in rows]):.2f} weeks"
    )
    if effect > 0 and share.size:
        se = share.std(ddof=1) / np.sqrt(share.size)
        print(
            f"      share of the oracle's gain: mean {share.mean():.0%} (Monte-Carlo SE "
            f"{se:.0%}), median {np.median(share):.0%}, range {share.min():.0%} to "
            f"{share.max():.0%}"
        )
    print(
        f"      estimated gain's CI above 0 in {sum(r['ci_low'] > 0 for r in rows)} of "
        f"{N_SEEDS} seeds; Uno's C {np.mean([r['uno_c'] for r in rows]):.3f}"
    )
    if model == "auto":
        chosen: dict[str, float] = {}
        for r in rows:
            for k, v in r["chosen"].items():
                chosen[k] = chosen.get(k, 0.0) + v / len(rows)
        print(
            "      chosen in the outer folds: "
            + ", ".join(f"{k} {v:.0%}" for k, v in sorted(chosen.items()))
        )


def site_section() -> None:
    """The default learner with the features harmonised by site (ComBat in every fold)."""
    print(
        f"\n4. lasso-cox with --site-column (ComBat fitted in every training fold), same "
        f"{N_SEEDS} seeds; the simulated features carry site shifts and scalings"
    )
    for effect in (1.0, 0.0):
        print(f"  durability effect {effect}:")
        summary(effect, "lasso-cox", harmonise=True)


def main() -> None:
    """Print the Rossi comparison and the simulated recovery."""
    import sys

    if sys.argv[1:] == ["site"]:  # only section 4
        site_section()
        return
    rossi()
    print(
        f"\n2. simulated follow-up, {N_SEEDS} seeds (100-{99 + N_SEEDS}), 400 patients each, "
        "23 features (3 measured markers + 20 noise); timings on a shared, loaded 2-core machine"
    )
    for effect in (1.0, 0.0):
        print(f"  durability effect {effect}:")
        for model in LEARNERS:
            summary(effect, model)
    t0 = time.perf_counter()
    one = simulated(1.0, 100, n_permutations=49)
    print(
        f"\n3. permutation test, lasso-cox (seed 100, 49 permutations, "
        f"{time.perf_counter() - t0:.0f} s): gain {one['estimate']:.2f} "
        f"[{one['ci_low']:.2f}, {one['ci_high']:.2f}], p = {one['permutation_p']:.3f}"
    )
    zero = simulated(0.0, 100, n_permutations=49)
    print(
        f"   null (effect 0): gain {zero['estimate']:.2f} [{zero['ci_low']:.2f}, "
        f"{zero['ci_high']:.2f}], p = {zero['permutation_p']:.3f}"
    )
    site_section()


if __name__ == "__main__":
    main()
