"""Benchmark DTI extraction of one QSIPrep-size subject against DIPY's TensorModel.

Data: one simulated subject (``brainmatch.simulate.dwi``) on the 1.7 mm MNI grid
(114 x 135 x 114 voxels, ~290k in the brain mask), 2 b0 + 100 directions at b = 1000
(102 volumes, int16 .nii.gz), written to ``benchmarks/.cache/dti-1.7mm`` (reused).
Atlases: Harvard-Oxford (max-probability, 25 %) and the Juelich white-matter tracts.

Each side runs in its own process, on one core (BLAS threads 1), and reports its time
(imports excluded) and peak resident memory (``VmHWM``):

- DIPY, the straightforward way: ``nib.load(...).get_fdata()``, ``gradient_table``,
  ``TensorModel(gtab).fit(data, mask=mask)`` (WLS, DIPY's default), FA / MD / AD / RD
  maps, then the mean of each map over each region's voxels in the mask (labels
  resampled beforehand, outside the timing);
- brainmatch: the ``dwi`` modality's steps for that run, driven in one process
  (:func:`brainmatch.features.schedule.drive_here`): header, gradient-table and mask
  checks, atlas labels on the grid (cached), streaming + hashing of the file, the fit
  in the voxels the summaries need, region sums, 8 TSVs with sidecars.

Printed: both times, their ratio, the largest difference between the two sides' region
means (each scalar), both peak memories.  Run: ``python benchmarks/bench_dti.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / ".cache"
DATA = CACHE / "dti-1.7mm"
RES = 1.7
STEM = "sub-01_space-T1w"


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _prepare() -> None:
    """Simulate the subject and save the label arrays DIPY's side uses."""
    import numpy as np

    from brainmatch.atlases import load_atlas, resample_atlas, template_grid, tract_atlas
    from brainmatch.simulate.dwi import DwiParams, write_subject_dwi

    dwi = DATA / "qsiprep" / "sub-01" / "dwi"
    if not (dwi / f"{STEM}_desc-preproc_dwi.nii.gz").exists():
        write_subject_dwi(dwi, DwiParams("sub-01", None, (11,), n_directions=100), RES)
        (DATA / "bids" / "sub-01").mkdir(parents=True, exist_ok=True)
    shape, affine = template_grid(RES)  # type: ignore[arg-type]
    for name, atlas in (("ho", load_atlas("harvard-oxford")), ("wm", tract_atlas("juelich-wm"))):
        labels = resample_atlas(atlas, shape, affine)
        np.save(DATA / f"labels-{name}.npy", labels)
        np.save(DATA / f"values-{name}.npy", atlas.labels["index"].to_numpy())


def _dipy_side() -> dict[str, object]:
    import nibabel as nib
    import numpy as np
    from dipy.core.gradients import gradient_table
    from dipy.io import read_bvals_bvecs
    from dipy.reconst.dti import TensorModel

    dwi = DATA / "qsiprep" / "sub-01" / "dwi"
    labels = {n: np.load(DATA / f"labels-{n}.npy") for n in ("ho", "wm")}
    values = {n: np.load(DATA / f"values-{n}.npy") for n in ("ho", "wm")}
    start = time.perf_counter()
    data = nib.load(dwi / f"{STEM}_desc-preproc_dwi.nii.gz").get_fdata()
    mask = np.asarray(nib.load(dwi / f"{STEM}_desc-brain_mask.nii.gz").dataobj) > 0
    bvals, bvecs = read_bvals_bvecs(
        str(dwi / f"{STEM}_desc-preproc_dwi.bval"), str(dwi / f"{STEM}_desc-preproc_dwi.bvec")
    )
    fit = TensorModel(gradient_table(bvals, bvecs=bvecs)).fit(data, mask=mask)
    maps = {"fa": fit.fa, "md": fit.md, "ad": fit.ad, "rd": fit.rd}
    out: dict[str, list[float]] = {}
    for n in ("ho", "wm"):
        lab = labels[n]
        for s, m in maps.items():
            sel = mask & (lab > 0)
            sums = np.bincount(lab[sel], weights=m[sel], minlength=int(lab.max()) + 1)
            counts = np.bincount(lab[sel], minlength=int(lab.max()) + 1)
            with np.errstate(invalid="ignore"):
                out[f"{n}-{s}"] = (sums[values[n]] / counts[values[n]]).tolist()
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "peak_mb": _vmhwm_mb(), "values": out}


def _brainmatch_side() -> dict[str, object]:
    import tempfile

    import numpy as np

    from brainmatch.atlases import atlas_digest, load_atlas, tract_atlas
    from brainmatch.features.bids import discover
    from brainmatch.features.config import DwiOptions, ExtractConfig
    from brainmatch.features.denoise import CleanOptions
    from brainmatch.features.modalities import dwi as dwi_mod
    from brainmatch.features.schedule import drive_here

    atlas = load_atlas("harvard-oxford")
    tracts = tract_atlas("juelich-wm")
    out_dir = Path(tempfile.mkdtemp(prefix="bench-dti-"))
    config = ExtractConfig(
        atlas=atlas,
        atlas_digest=atlas_digest(atlas),
        clean=CleanOptions(),
        connectivity=(),
        output_dir=out_dir,
        freesurfer=False,
        modalities=("dwi",),
        dwi=DwiOptions(),
        tracts=tracts,
        tracts_digest=atlas_digest(tracts),
    )
    (unit,) = discover(DATA / "bids", DATA / "qsiprep", modalities=("dwi",))
    start = time.perf_counter()
    res = drive_here(dwi_mod.run_steps(unit.dwi[0], config))
    elapsed = time.perf_counter() - start
    from brainmatch.features.config import feature_name

    out: dict[str, list[float]] = {}
    for n, a, prefix in (("ho", atlas, ""), ("wm", tracts, "wm_")):
        for s in ("fa", "md", "ad", "rd"):
            out[f"{n}-{s}"] = [
                res["features"][f"dti__{s}__{prefix}{feature_name(str(r))}"]
                for r in a.labels["name"]
            ]
    del np
    return {
        "seconds": elapsed,
        "peak_mb": _vmhwm_mb(),
        "values": out,
        "n_fitted": res["n_fitted"],
        "n_non_pd": res["n_non_pd"],
    }


def _run(side: str) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env["MKL_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, __file__, side], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"{side} side failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    print("DTI extraction, one QSIPrep-size subject (1.7 mm, 102 volumes), one core each")
    print("(timings measured on a shared, loaded 2-core machine: compare the ratio)")
    _prepare()
    _run("brainmatch")  # warm the atlas cache and the page cache
    reps = int(os.environ.get("BENCH_DTI_REPS", "1"))
    dipy_t, bm_t = [], []
    for _ in range(reps):
        d = _run("dipy")
        b = _run("brainmatch")
        dipy_t.append(float(d["seconds"]))  # type: ignore[arg-type]
        bm_t.append(float(b["seconds"]))  # type: ignore[arg-type]
    diffs = {}
    for key, ref in d["values"].items():  # type: ignore[union-attr]
        ours = np.asarray(b["values"][key], dtype=float)  # type: ignore[index]
        diffs[key] = float(np.nanmax(np.abs(ours - np.asarray(ref, dtype=float))))
    print(
        f"fitted voxels (mask and regions): {b['n_fitted']}; non-positive-definite: {b['n_non_pd']}"
    )
    print(
        f"DIPY TensorModel.fit + region means: {min(dipy_t):.2f} s (runs: "
        f"{', '.join(f'{t:.2f}' for t in dipy_t)}), peak {d['peak_mb']:.0f} MB"
    )
    print(
        f"brainmatch dwi steps:               {min(bm_t):.2f} s (runs: "
        f"{', '.join(f'{t:.2f}' for t in bm_t)}), peak {b['peak_mb']:.0f} MB"
    )
    print(f"speed vs DIPY: {min(dipy_t) / min(bm_t):.1f}x (best of {reps} each)")
    for scalar in ("fa", "md", "ad", "rd"):
        worst = max(v for k, v in diffs.items() if k.endswith(scalar))
        print(f"max |difference| of region mean {scalar.upper()}: {worst:.2e}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("dipy", "brainmatch"):
        result = _dipy_side() if sys.argv[1] == "dipy" else _brainmatch_side()
        print(json.dumps(result))
    else:
        main()
