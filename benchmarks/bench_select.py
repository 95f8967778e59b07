"""Cost of feature screening inside the CV loop of ``brainmatch train``.

Peer: the same ``train`` call without screening (``select="none"``: one shared kernel per
fold, all permutations as extra target columns).  brainmatch with ``select="auto"``
screens every permuted target again and chooses k by an inner 3-fold CV in every outer
fold; permuted targets are refitted in the first CV repeat only
(``NULL_REPEATS_SCREENED``).

Problem: 120 patients (2 arms, 3 sites), 6500 features (3 measured biomarkers + noise),
5-fold x 10 repeats, 1000 permutations.  Target: ``select="auto"`` under 60 s on 2 cores.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import pandas as pd

from brainmatch.selection import train
from brainmatch.simulate import TrialSpec, draw_trial
from brainmatch.validation.synthetic import measured_features, outcome_table

N, P, N_PERM = 120, 6500, 1000


def _run(select: str, f: pd.DataFrame, o: pd.DataFrame, out: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        covariates=("age", "sex"),
        out_dir=out,
        n_permutations=N_PERM,
        report=False,
        learning_curve=False,
        select=select,
    )
    return time.perf_counter() - start, res.metrics


def main() -> None:
    """Run the benchmark and print timings and the ratio to the unscreened run."""
    trial = draw_trial(TrialSpec(n_subjects=N, n_sites=3, effect_size=2.0, seed=3))
    f = measured_features(trial, n_noise=P - 3, reliability=0.9, seed=3)
    o = outcome_table(trial)
    with tempfile.TemporaryDirectory() as tmp:
        t_none, _ = _run("none", f, o, f"{tmp}/none")
        t_auto, m = _run("auto", f, o, f"{tmp}/auto")
    fs = m["feature_selection"]
    print(f"{N} patients x {P} features, 5-fold x 10 repeats, {N_PERM} permutations")
    print(f"  train(select='none'): {t_none:.1f} s")
    print(f"  train(select='auto'): {t_auto:.1f} s (k per fold {fs['k_per_fold_counts']})")
    print(f"cost of screening vs no screening: {t_auto / t_none:.1f}x")
    print("target (select='auto' < 60 s):", "met" if t_auto < 60 else "NOT met")


if __name__ == "__main__":
    main()
