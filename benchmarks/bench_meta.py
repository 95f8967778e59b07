"""Speed of ``brainmatch.evidence.meta.rma`` against PyMARE and statsmodels, same run.

For k = 20, 200, 1000 and 100,000 simulated studies, times one random-effects fit (tau²,
estimate, SE, CI; brainmatch also computes the Q-profile tau² CI and the prediction
interval, the peers do not; the "no tau2 CI" column times the fit without it) and
prints the ratio peer_time / brainmatch_time (> 1: brainmatch faster) and the
difference between the pooled estimates.

Peers: PyMARE 0.0.13 ``VarianceBasedLikelihoodEstimator(method="REML")`` and
``DerSimonianLaird``; statsmodels ``combine_effects(method_re="dl" / "pm")`` (at
k = 100,000 statsmodels only: PyMARE's estimators build k x k matrices).

A last row times the whole ``brainmatch meta`` analysis of a 100,000-row CSV
(read, REML fit with Q-profile CI, Egger test, trim-and-fill; then ``save``: tables,
figures, report) against one ``combine_effects`` call on the same data.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _bench(k: int, y: np.ndarray, v: np.ndarray, repeats: int) -> None:
    from pymare import Dataset
    from pymare.estimators import DerSimonianLaird, VarianceBasedLikelihoodEstimator
    from statsmodels.stats.meta_analysis import combine_effects

    from brainmatch.evidence.meta import rma

    def pm_reml() -> float:
        est = VarianceBasedLikelihoodEstimator(method="REML")
        est.fit_dataset(Dataset(y=y, v=v))
        return float(np.ravel(est.summary().get_fe_stats()["est"])[0])

    def pm_dl() -> float:
        est = DerSimonianLaird()
        est.fit_dataset(Dataset(y=y, v=v))
        return float(np.ravel(est.summary().get_fe_stats()["est"])[0])

    def sm_dl() -> float:
        return float(combine_effects(y, v, method_re="dl").mean_effect_re)

    def sm_pm() -> float:
        return float(combine_effects(y, v, method_re="pm").mean_effect_re)

    cases = [
        ("REML", "PyMARE", pm_reml),
        ("DL", "PyMARE", pm_dl),
        ("DL", "statsmodels", sm_dl),
        ("PM", "statsmodels", sm_pm),
    ]
    if k > 10_000:
        cases = [c for c in cases if c[1] == "statsmodels"]
    for method, peer, fn in cases:
        ours = _median_time(lambda m=method: rma(y, v, method=m), repeats)
        core = _median_time(lambda m=method: rma(y, v, method=m, tau2_ci=False), repeats)
        theirs = _median_time(fn, repeats)
        diff = abs(rma(y, v, method=method).estimate - fn())
        print(
            f"{k:>6} {method:>6} {peer:>12} {ours:>13.4f} {core:>13.4f} {theirs:>9.4f} "
            f"{theirs / ours:>6.2f}x {theirs / core:>10.2f}x {diff:>11.2e}"
        )


def _bench_command(rng: np.random.Generator, k: int = 100_000) -> None:
    """The whole analysis behind ``brainmatch meta`` on k rows vs one statsmodels fit."""
    import os
    import tempfile
    from pathlib import Path

    import pandas as pd
    from statsmodels.stats.meta_analysis import combine_effects

    from brainmatch.evidence.analysis import meta_analysis
    from brainmatch.reports import write_report

    v = rng.uniform(0.01, 0.3, k)
    y = 0.3 + rng.normal(0, np.sqrt(v + 0.05))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "studies.csv"
        pd.DataFrame({"study": [f"s{i}" for i in range(k)], "g": y, "se": np.sqrt(v)}).to_csv(
            src, index=False
        )
        t0 = time.perf_counter()
        result = meta_analysis(src, effect="g", se="se", study="study")
        fit = time.perf_counter() - t0
        t1 = time.perf_counter()
        result.save(Path(tmp) / "out")
        write_report(result, Path(tmp) / "out")
        save = time.perf_counter() - t1
        t2 = time.perf_counter()
        sm = combine_effects(y, v, method_re="pm")
        peer = time.perf_counter() - t2
    print(
        f"\nbrainmatch meta on {k:,} rows: analysis {fit:.2f} s (REML + Q-profile CI + Egger + "
        f"trim-and-fill, {result.trimfill['iterations'] if result.trimfill else 0} refits), "
        f"save {save:.2f} s (tables, figures, report); statsmodels combine_effects (PM, one "
        f"fit) {peer:.2f} s: ratio {peer / fit:.2f}x; |REML - statsmodels PM estimate| = "
        f"{abs(result.fit.estimate - float(sm.mean_effect_re)):.2e}"
    )
    print(
        f"(measured on a shared machine, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores: absolute times are inflated, ratios less so)"
    )


def main() -> None:
    """Print timings and ratios."""
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    print(
        f"{'k':>6} {'method':>6} {'peer':>12} {'brainmatch s':>13} {'(no tau2 CI)':>13} "
        f"{'peer s':>9} {'ratio':>7} {'ratio no CI':>11} {'|diff| est':>11}"
    )
    for k in (20, 200, 1000, 100_000):
        v = rng.uniform(0.01, 0.3, k)
        y = 0.3 + rng.normal(0, np.sqrt(v + 0.05))
        _bench(k, y, v, repeats=20 if k < 1000 else 5 if k < 10_000 else 3)
    _bench_command(rng)
    print(
        "\nratio = peer time / brainmatch time (> 1: brainmatch faster). A large |diff| for "
        "statsmodels DL means its tau^2 went negative: combine_effects does not truncate the "
        "DerSimonian-Laird tau^2 at 0 (metafor and brainmatch do)."
    )


if __name__ == "__main__":
    main()
