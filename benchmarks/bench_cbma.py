"""Benchmark ``brainmatch cbma`` against NiMARE run directly (the peer), in the same process.

brainmatch calls NiMARE for the statistics, so the question is what the wrapper costs or
saves:

1. main effect (ALE + Monte Carlo FWE) on NiMARE's packaged ``nidm_pain`` dataset
   (21 experiments, 267 foci): brainmatch end to end (read, check, fit, cluster table
   with atlas labels, NIfTI/TSV/JSON/HTML outputs) vs NiMARE's ``ALE`` +
   ``FWECorrector`` alone;
2. ALE subtraction with cluster-level FWE (the first 10 vs the other 11 experiments):
   brainmatch's :func:`subtract` vs NiMARE's ``ALESubtraction`` + ``FWECorrector``.
   brainmatch freezes the objects alive before calling NiMARE so that nilearn's
   ``gc.collect()`` per permutation (inside ``unmask``) does not rescan the heap.

The peer runs with the same heap as brainmatch (both after the same imports), so the
ratio measures the wrapper, not import state.  Prints seconds and ratios.
"""

from __future__ import annotations

import importlib.resources
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

MAIN_ITERS = 200
SUB_ITERS = 50


def main() -> int:
    """Run both comparisons and print the numbers."""
    from nimare.correct import FWECorrector
    from nimare.dataset import Dataset
    from nimare.meta.cbma import ALE, ALESubtraction

    from brainmatch.evidence.cbma import CoordinateMetaAnalysis, subtract
    from brainmatch.evidence.cbma_io import CoordinateTable, read_coordinates

    warnings.simplefilter("ignore")
    src = Path(str(importlib.resources.files("nimare") / "resources" / "nidm_pain_dset.json"))
    print(
        f"data: {src.name}; main effect {MAIN_ITERS} Monte Carlo iterations, subtraction "
        f"{SUB_ITERS} permutations, 1 core each"
    )

    # --- 1. main effect
    t0 = time.perf_counter()
    ds = Dataset(str(src), target="mni152_2mm")
    ref = ALE(null_method="approximate", random_state=0).fit(ds)
    ref = FWECorrector(method="montecarlo", voxel_thresh=0.001, n_iters=MAIN_ITERS).transform(ref)
    t_nimare = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        table = read_coordinates(src)
        est = CoordinateMetaAnalysis(iterations=MAIN_ITERS, random_state=0).fit(table)
        est.result_.save(Path(tmp) / "out")
        t_bm = time.perf_counter() - t0
        n_clusters = len(est.result_.clusters)
    print(
        f"main effect: NiMARE alone {t_nimare:.1f} s; brainmatch end to end {t_bm:.1f} s "
        f"({n_clusters} significant clusters, report included)"
    )
    print(f"  brainmatch / NiMARE time: {t_bm / t_nimare:.2f}x")

    # --- 2. subtraction
    ids = sorted(table.foci["experiment"].unique())
    first, second = set(ids[:10]), set(ids[10:])
    a = CoordinateTable(table.foci[table.foci["experiment"].isin(first)], src)
    b = CoordinateTable(table.foci[table.foci["experiment"].isin(second)], src)
    da = Dataset(a.to_nimare_dict(), target="mni152_2mm")
    db = Dataset(b.to_nimare_dict(), target="mni152_2mm")
    t0 = time.perf_counter()
    sub = ALESubtraction(
        n_iters=SUB_ITERS, voxel_thresh=0.001, vfwe_only=False, random_state=0
    ).fit(da, db)
    FWECorrector(method="montecarlo", n_iters=SUB_ITERS, voxel_thresh=0.001).transform(sub)
    t_nimare_sub = time.perf_counter() - t0
    t0 = time.perf_counter()
    subtract(a, b, iterations=SUB_ITERS, voxel_thresh=0.001, random_state=0)
    t_bm_sub = time.perf_counter() - t0
    print(f"subtraction: NiMARE alone {t_nimare_sub:.1f} s; brainmatch {t_bm_sub:.1f} s")
    print(f"  speed vs NiMARE: {t_nimare_sub / t_bm_sub:.2f}x")
    print(
        json.dumps(
            {
                "main_nimare_s": round(t_nimare, 2),
                "main_brainmatch_s": round(t_bm, 2),
                "sub_nimare_s": round(t_nimare_sub, 2),
                "sub_brainmatch_s": round(t_bm_sub, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
