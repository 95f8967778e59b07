"""Benchmark brainmatch's Monte Carlo FWE engine against NiMARE's, on the same coordinates.

Cluster-level FWE ALE (cluster-forming p < 0.001) on

1. the shared antidepressant data (Saberi et al. 2025, ``Untreated<Treated``: 20
   experiments, 179 foci; ``../shared/data/antidepressant-ale``, skipped when absent);
2. NiMARE's packaged ``nidm_pain`` dataset (21 experiments, 267 foci).

Each run is its own process (so that peak memory is the run's own, after the same
imports): NiMARE's ``ALE`` + ``FWECorrector(method="montecarlo")`` versus brainmatch's
``CoordinateMetaAnalysis`` (the same NiMARE ``ALE`` fit for the observed maps, then
brainmatch's engine for the null; same seed, so the same null distributions value for
value, which the script checks).  Both on one core.  Reported: wall and CPU seconds of
the Monte Carlo step and of the whole analysis, peak resident memory, and the ratios.

Iterations: 1,000 for both engines and 5,000 for brainmatch by default; NiMARE at 5,000
takes ~10 min per dataset on a loaded machine, so it runs only with ``--full``
(``python benchmarks/bench_cbma.py --full``).

Usage: ``python benchmarks/bench_cbma.py [--full] [--iterations 1000 5000]``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "antidepressant-ale" / "Contrast" / "coordinates.xlsx"


def _table(dataset: str) -> object:
    from brainmatch.evidence.cbma_io import read_coordinates

    if dataset == "antidepressant":
        return read_coordinates(SHARED, select=["contrast=Untreated<Treated"])
    src = Path(str(importlib.resources.files("nimare") / "resources" / "nidm_pain_dset.json"))
    return read_coordinates(src)


def child(engine: str, dataset: str, iterations: int) -> None:
    """One run in this process; prints one JSON line."""
    import numpy as np

    warnings.simplefilter("ignore")
    from brainmatch.evidence.cbma import _dataset, _quiet

    table = _table(dataset)
    from nimare.correct import FWECorrector
    from nimare.meta.cbma import ALE

    wall0, cpu0 = time.perf_counter(), time.process_time()
    if engine == "nimare":
        with _quiet():  # warm-up: NiMARE's compiled functions load (or compile) here
            warm = ALE(null_method="approximate", random_state=0).fit(_dataset(table))
            FWECorrector(method="montecarlo", voxel_thresh=0.001, n_iters=1).transform(warm)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        with _quiet():
            est = ALE(null_method="approximate", random_state=0)
            res = est.fit(_dataset(table))
            wall1, cpu1 = time.perf_counter(), time.process_time()
            corrected = FWECorrector(
                method="montecarlo", voxel_thresh=0.001, n_iters=iterations, n_cores=1
            ).transform(res)
        nd = corrected.estimator.null_distributions_
        max_size = np.asarray(nd["values_desc-size_level-cluster_corr-fwe_method-montecarlo"])
        max_stat = np.asarray(nd["values_level-voxel_corr-fwe_method-montecarlo"])
    else:
        from brainmatch.evidence import ale_engine

        # load (or compile) the compiled loop outside the timing, as NiMARE's compiled
        # functions are loaded in its warm-up
        with _quiet():
            warm = ALE(null_method="approximate", random_state=0)
            warm.fit(_dataset(table))
            ale_engine.run_null(ale_engine.plan_from_estimator(warm, 0.01), 1, 0)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        with _quiet():
            est = ALE(null_method="approximate", random_state=0)
            est.fit(_dataset(table))
            ss = float(est._p_to_summarystat(0.001))
        wall1, cpu1 = time.perf_counter(), time.process_time()
        plan = ale_engine.plan_from_estimator(est, ss)
        null = ale_engine.run_null(plan, iterations, 0, n_jobs=1)
        max_size, max_stat = null.max_size, null.max_stat
    wall2, cpu2 = time.perf_counter(), time.process_time()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mc_wall": wall2 - wall1,
                "mc_cpu": cpu2 - cpu1,
                "total_wall": wall2 - wall0,
                "total_cpu": cpu2 - cpu0,
                "peak_mb": peak_mb,
                "max_size": [float(v) for v in max_size],
                "max_stat": [float(v) for v in max_stat],
            }
        )
    )


def run(engine: str, dataset: str, iterations: int) -> dict[str, object]:
    """Run :func:`child` in a fresh single-threaded process."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMBA_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, __file__, "--child", engine, dataset, str(iterations)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    """Run the comparisons and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="NiMARE at 5,000 iterations too")
    parser.add_argument("--iterations", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    datasets = ["antidepressant", "pain"] if SHARED.is_file() else ["pain"]
    if not SHARED.is_file():
        print(f"shared antidepressant data absent ({SHARED}): pain dataset only")
    load = os.getloadavg()
    print(
        f"cluster-FWE ALE, one core per engine, load average {load[0]:.1f} on "
        f"{os.cpu_count()} cores (timing measured on a shared, loaded machine when the "
        "load exceeds the core count: compare CPU seconds)"
    )
    rows = []
    for dataset in datasets:
        for iters in args.iterations:
            bm = run("brainmatch", dataset, iters)
            nm = run("nimare", dataset, iters) if (iters <= 1000 or args.full) else None
            rows.append((dataset, iters, bm, nm))
            line = (
                f"{dataset:>14} {iters:>5} it | brainmatch MC {bm['mc_wall']:6.1f} s wall "
                f"{bm['mc_cpu']:6.1f} s cpu, peak {bm['peak_mb']:5.0f} MB"
            )
            if nm is not None:
                same = nm["max_size"] == bm["max_size"] and nm["max_stat"] == bm["max_stat"]
                line += (
                    f" | NiMARE MC {nm['mc_wall']:6.1f} s wall {nm['mc_cpu']:6.1f} s cpu, peak "
                    f"{nm['peak_mb']:5.0f} MB | speed-up {nm['mc_wall'] / bm['mc_wall']:.1f}x "
                    f"wall, {nm['mc_cpu'] / bm['mc_cpu']:.1f}x cpu (whole analysis "
                    f"{nm['total_cpu'] / bm['total_cpu']:.1f}x cpu); memory "
                    f"{bm['peak_mb'] / nm['peak_mb']:.2f}x; null identical: {same}"
                )
            else:
                line += " | NiMARE not run at this size (pass --full)"
            print(line, flush=True)
    summary = [
        {
            "dataset": d,
            "iterations": i,
            "brainmatch_mc_wall_s": round(float(b["mc_wall"]), 2),  # type: ignore[arg-type]
            "brainmatch_mc_cpu_s": round(float(b["mc_cpu"]), 2),  # type: ignore[arg-type]
            "brainmatch_peak_mb": round(float(b["peak_mb"])),  # type: ignore[arg-type]
            "nimare_mc_wall_s": None if n is None else round(float(n["mc_wall"]), 2),  # type: ignore[arg-type]
            "nimare_mc_cpu_s": None if n is None else round(float(n["mc_cpu"]), 2),  # type: ignore[arg-type]
            "nimare_peak_mb": None if n is None else round(float(n["peak_mb"])),  # type: ignore[arg-type]
        }
        for d, i, b, n in rows
    ]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
