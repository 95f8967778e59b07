"""The leakage canary over many seeds: pure-noise trials with p >> n, default validation.

``tests/test_train.py::test_leakage_canary`` runs seed 0 (n = 100, p = 2000, no signal at
all, 99 permutations); this runs any range of seeds with either screening criterion and
prints each seed's permutation p-values, so a criterion or null that calls noise
significant too often shows up (a valid test gives p <= 0.05 in about 5 % of seeds).

    python benchmarks/leakage_canary_seeds.py --criterion dr --seeds 0:10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from brainmatch.selection import screen, validate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion", choices=("mse", "dr"), default=screen.CRITERION)
    ap.add_argument("--seeds", default="0:10", help="range start:stop")
    ap.add_argument("--permutation-null", default="auto")
    args = ap.parse_args()
    screen.CRITERION = args.criterion
    lo, hi = (int(v) for v in args.seeds.split(":"))
    n, p = 100, 2000
    print("criterion null seed method permutation_p policy_gain_p policy_gain_ci seconds")
    for seed in range(lo, hi):
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, p))
        y = rng.normal(size=n)
        f = pd.DataFrame(X, columns=[f"f{j}" for j in range(p)])
        f.insert(0, "participant_id", [f"sub-{i:03d}" for i in range(n)])
        o = pd.DataFrame(
            {"participant_id": f["participant_id"], "arm": np.repeat(["A", "B"], n // 2), "y": y}
        )
        start = time.perf_counter()
        res = validate(
            f, o, treatment_column="arm", outcome_column="y", n_repeats=2, n_permutations=99,
            n_boot=200, learning_curve=False, permutation_null=args.permutation_null,
        )  # fmt: skip
        s = res.metrics["selection"]
        lo_ci, hi_ci = s["policy_gain_ci"]
        print(
            args.criterion, args.permutation_null, seed, s["permutation_null_method"],
            f"{s['permutation_p']:.3f}", f"{s['policy_gain_permutation_p']:.3f}",
            f"[{lo_ci:.3f}, {hi_ci:.3f}]", f"{time.perf_counter() - start:.0f}", flush=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
