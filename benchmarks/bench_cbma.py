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

Subtraction (contrast of two sets, ``--versus``): brainmatch's permutation engine
(:mod:`brainmatch.evidence.ale_subtraction`) against NiMARE's ``ALESubtraction`` (with
cluster-level FWE, ``vfwe_only=False``) and ``FWECorrector``, each in its own
single-threaded process, same seed (so the same permutations; the script checks that the
nulls are identical): the antidepressant ``Untreated<Treated`` vs ``Untreated>Treated``
experiments (20 vs 21) and the pain dataset split 11 / 10; 1,000 permutations (5,000 with
``--full``: NiMARE then writes a 4.6 GB memory-mapped file and takes tens of minutes).

The whole command: ``brainmatch cbma`` at its defaults (5,000 iterations, threads on all
cores, every output and the report) on the antidepressant contrast (or the pain dataset
when the shared data are absent), wall and CPU seconds of the process.

Usage: ``python benchmarks/bench_cbma.py [--full] [--iterations 1000 5000]
[--sub-iterations 1000] [--skip-main] [--skip-sub] [--skip-cli]``;
``python benchmarks/bench_cbma.py --stages`` times the steps of one run instead.
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


def _two_sets(dataset: str) -> tuple[object, object]:
    from brainmatch.evidence.cbma_io import CoordinateTable, read_coordinates

    if dataset == "antidepressant":
        return (
            read_coordinates(SHARED, select=["contrast=Untreated<Treated"]),
            read_coordinates(SHARED, select=["contrast=Untreated>Treated"]),
        )
    table = _table("pain")
    assert isinstance(table, CoordinateTable)
    names = sorted(table.foci["experiment"].unique())

    def part(keep: list[str]) -> CoordinateTable:
        rows = table.foci[table.foci["experiment"].isin(keep)].reset_index(drop=True)
        return CoordinateTable(rows, table.source, [])

    return part(names[:11]), part(names[11:])


def child_subtraction(engine: str, dataset: str, iterations: int) -> None:
    """One subtraction in this process (after a 2-permutation warm-up); one JSON line."""
    import numpy as np

    warnings.simplefilter("ignore")
    from brainmatch.evidence.cbma import _dataset, _observed_ma, _quiet

    a, b = _two_sets(dataset)

    def nimare_run(n: int) -> tuple[object, object]:
        from nimare.correct import FWECorrector
        from nimare.meta.cbma import ALESubtraction

        with _quiet():
            est = ALESubtraction(
                n_iters=n, voxel_thresh=0.001, vfwe_only=False, n_cores=1, random_state=0
            )
            res = est.fit(_dataset(a), _dataset(b))
            FWECorrector(method="montecarlo", n_iters=n, voxel_thresh=0.001).transform(res)
        return est, res

    def ours_run(n: int) -> object:
        from brainmatch.evidence import ale_subtraction as sub

        ma1, mask3d = _observed_ma(a)
        ma2, _ = _observed_ma(b)
        plan = sub.subtraction_plan(ma1, ma2, mask3d)
        null = sub.run_subtraction(plan, n, 0, n_jobs=1)
        sub.subtraction_maps(plan, null)
        return null

    if engine == "nimare":
        nimare_run(2)
    else:
        ours_run(2)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if engine == "nimare":
        est, _ = nimare_run(iterations)
        nd = est.null_distributions_  # type: ignore[attr-defined]
        max_size = np.asarray(nd["values_desc-size_level-cluster_corr-fwe_method-montecarlo"])
        max_abs = np.asarray(nd["values_level-voxel_corr-fwe_method-montecarlo"])
    else:
        null = ours_run(iterations)
        max_size, max_abs = null.max_size, null.max_abs  # type: ignore[attr-defined]
    wall1, cpu1 = time.perf_counter(), time.process_time()
    print(
        json.dumps(
            {
                "wall": wall1 - wall0,
                "cpu": cpu1 - cpu0,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "max_size": [float(v) for v in max_size],
                "max_abs": [float(v) for v in max_abs],
            }
        )
    )


def cli_defaults(out_dir: Path) -> dict[str, float]:
    """``brainmatch cbma`` at its defaults, in a fresh process: wall and CPU seconds."""
    exe = Path(sys.executable).with_name("brainmatch")
    if SHARED.is_file():
        args = [str(SHARED), "--select", "contrast=Untreated<Treated", "--name", "increased"]
    else:
        args = [
            str(
                Path(str(importlib.resources.files("nimare") / "resources" / "nidm_pain_dset.json"))
            )
        ]
    import tempfile

    with tempfile.TemporaryFile() as err:
        wall0 = time.perf_counter()
        proc = subprocess.Popen(
            [str(exe), "cbma", *args, "--out", str(out_dir)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
        )
        # this child's own resource use (RUSAGE_CHILDREN would include earlier children)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - wall0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"brainmatch cbma failed: {err.read().decode()[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall": wall, "cpu": cpu, "peak_mb": usage.ru_maxrss / 1024}


def stages(iterations: int) -> None:
    """Where the time of one ``brainmatch cbma`` run goes (the CLI's steps, in this process,
    threads on all cores): imports, reading, NiMARE's fit, the Monte Carlo, clusters and
    jackknife, outputs and report."""
    marks = [(time.perf_counter(), time.process_time())]

    def mark(name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        print(
            f"  {name:34s} wall {wall - marks[-1][0]:6.2f} s  cpu {cpu - marks[-1][1]:6.2f} s",
            flush=True,
        )
        marks.append((wall, cpu))

    import brainmatch.cli.main  # noqa: F401

    mark("import brainmatch's CLI")
    import nimare  # noqa: F401

    mark("import NiMARE")
    import tempfile

    from brainmatch.evidence import ale_engine
    from brainmatch.evidence.cbma import CoordinateMetaAnalysis

    table = _table("antidepressant" if SHARED.is_file() else "pain")
    mark("read the coordinates")
    original = ale_engine.run_null

    def timed(*args: object, **kwargs: object) -> object:
        mark("NiMARE fit, observed map, plan")
        out = original(*args, **kwargs)  # type: ignore[arg-type]
        mark(f"Monte Carlo ({iterations} iterations)")
        return out

    ale_engine.run_null = timed  # type: ignore[assignment]
    est = CoordinateMetaAnalysis(iterations=iterations, n_jobs=os.cpu_count() or 1)
    est.fit(table, name="increased")  # type: ignore[arg-type]
    mark("FWE maps, clusters, labels, jackknife")
    with tempfile.TemporaryDirectory() as tmp:
        est.result_.save(Path(tmp) / "out")
    mark("NIfTI/TSV/JSON and the report")
    print(
        f"  {'total':34s} wall {marks[-1][0] - marks[0][0]:6.2f} s  "
        f"cpu {marks[-1][1] - marks[0][1]:6.2f} s (load average {os.getloadavg()[0]:.1f})"
    )


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
    """Run :func:`child` (or, for ``sub-<engine>``, :func:`child_subtraction`) in a fresh
    single-threaded process."""
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
    parser.add_argument("--sub-iterations", type=int, nargs="+", default=[1000])
    parser.add_argument("--skip-main", action="store_true", help="no one-set ALE rows")
    parser.add_argument("--skip-sub", action="store_true", help="no subtraction rows")
    parser.add_argument("--skip-cli", action="store_true", help="no whole-command row")
    parser.add_argument(
        "--stages", action="store_true", help="only: where one run's time goes, step by step"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages:
        stages(5000)
        return 0
    if args.child:
        if args.child[0].startswith("sub-"):
            child_subtraction(args.child[0][4:], args.child[1], int(args.child[2]))
        else:
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
    for dataset in [] if args.skip_main else datasets:
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
    if not args.skip_sub:
        print("ALE subtraction (cluster-level FWE), one core per engine, same seed:")
        for dataset in datasets:
            for iters in args.sub_iterations:
                bm = run("sub-brainmatch", dataset, iters)
                nm = run("sub-nimare", dataset, iters) if (iters <= 1000 or args.full) else None
                line = (
                    f"{dataset:>14} {iters:>5} perm | brainmatch {bm['wall']:6.1f} s wall "
                    f"{bm['cpu']:6.1f} s cpu, peak {bm['peak_mb']:5.0f} MB"
                )
                if nm is not None:
                    same = nm["max_size"] == bm["max_size"] and nm["max_abs"] == bm["max_abs"]
                    line += (
                        f" | NiMARE {nm['wall']:6.1f} s wall {nm['cpu']:6.1f} s cpu, peak "
                        f"{nm['peak_mb']:5.0f} MB | speed-up {nm['wall'] / bm['wall']:.1f}x "
                        f"wall, {nm['cpu'] / bm['cpu']:.1f}x cpu; memory "
                        f"{bm['peak_mb'] / nm['peak_mb']:.2f}x; null identical: {same}"
                    )
                else:
                    line += " | NiMARE not run at this size (pass --full)"
                print(line, flush=True)
    if not args.skip_cli:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            cli = cli_defaults(Path(tmp) / "out")
        load = os.getloadavg()
        print(
            f"brainmatch cbma at defaults (5000 iterations, all {os.cpu_count()} cores, report "
            f"included) on {'the antidepressant contrast' if SHARED.is_file() else 'pain'}: "
            f"{cli['wall']:.1f} s wall, {cli['cpu']:.1f} s cpu, peak {cli['peak_mb']:.0f} MB "
            f"(load average {load[0]:.1f})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
