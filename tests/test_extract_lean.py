"""The lean worker step: what it imports, what it returns, how it fails, what it costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainmatch.features.lean import (
    HEAVY_MODULES,
    LeanPool,
    StreamJob,
    file_fingerprint,
    run_job,
)
from brainmatch.features.regions import RegionPlan


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _bold(trial: Path, sub: str = "001") -> Path:
    func = trial / "derivatives" / "fmriprep" / f"sub-{sub}" / "func"
    return next(func.glob("*_desc-preproc_bold.nii.gz"))


def _plan(bold: Path, n: int = 12, seed: int = 3) -> RegionPlan:
    shape = nib.load(bold).shape[:3]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n + 1, size=shape).astype(np.int32)
    labels[0, 0, 0] = n
    return RegionPlan(labels, list(range(1, n + 1)))


def test_worker_imports_no_heavy_module(small_trial: Path, tmp_path: Path) -> None:
    """A fresh interpreter that streams a run has not loaded pandas/scipy.signal/nilearn."""
    bold = _bold(small_trial)
    labels = tmp_path / "labels.npy"
    np.save(labels, np.asarray(_plan(bold).shape))
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from brainmatch.features.lean import HEAVY_MODULES, StreamJob, run_job\n"
        "from brainmatch.features.regions import RegionPlan\n"
        "shape = tuple(int(s) for s in np.load(sys.argv[1]))\n"
        "lab = (np.arange(np.prod(shape)) % 7).reshape(shape)\n"
        "out = run_job(StreamJob(Path(sys.argv[2]), RegionPlan(lab, list(range(1, 7)))))\n"
        "assert out[0] == 'ok', out\n"
        "print(json.dumps([m for m in sys.modules if m in HEAVY_MODULES]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(labels), str(bold)],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"the lean worker imported {loaded}"
    # and the parent side does import them, so the check above is not vacuous
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, brainmatch.features.extract; print('pandas' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "True"
    assert "pandas" in HEAVY_MODULES


def test_batch_parent_imports_neither_scikit_learn_nor_nilearn(
    small_trial: Path, tmp_path: Path
) -> None:
    """The parent finishes units with brainmatch.features.cleaning (2-3 s of imports
    saved).  A first process resamples the atlas to the trial's grid (nilearn, once per
    grid, cached on disk); a second one extracts and must load neither."""
    script = (
        "import json, sys\n"
        "from brainmatch.features import extract_dataset\n"
        "trial, out = sys.argv[1], sys.argv[2]\n"
        "res = extract_dataset(trial, out, derivatives=trial + '/derivatives/fmriprep',\n"
        "    atlas='aal', participant_label=['001'], denoise=sys.argv[3],\n"
        "    connectivity=('correlation', 'partial'), force=True)\n"
        "assert res.failures.empty, res.failures\n"
        "print(json.dumps(sorted(m for m in sys.modules\n"
        "                        if m.split('.')[0] in ('sklearn', 'nilearn'))))\n"
    )
    env = {**os.environ, "BRAINMATCH_CACHE": str(tmp_path / "cache")}
    loaded = []
    for denoise in ("simple", "scrubbing"):
        done = subprocess.run(
            [sys.executable, "-c", script, str(small_trial), str(tmp_path / "out"), denoise],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        loaded.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert any(m.startswith("sklearn") for m in loaded[0])  # resampled: the probe works
    assert loaded[1] == [], f"the batch imported {loaded[1]}"


def test_pool_equals_in_process_and_reports_memory(small_trial: Path) -> None:
    jobs = [
        StreamJob(_bold(small_trial, s), _plan(_bold(small_trial, s)), 3, fingerprint=(s == "002"))
        for s in ("001", "002")
    ]
    with LeanPool(2) as pool:
        for i, job in enumerate(jobs):
            pool.submit(i, job)
        replies = dict(pool.get() for _ in jobs)
        peak = pool.peak_rss
    # the BOLD hashed while it streamed equals hashing the whole file on its own
    assert "fingerprint" not in replies[0][1].extra
    assert replies[1][1].extra["fingerprint"] == file_fingerprint(_bold(small_trial, "002"))
    for i, job in enumerate(jobs):
        assert isinstance(job, StreamJob)
        kind, sig, rss = replies[i]
        assert kind == "ok" and rss > 0
        here = job.plan.extract(job.bold, 3)
        assert np.array_equal(sig.signals, here.signals)  # bit for bit
        assert sig.labels == here.labels and np.array_equal(sig.n_voxels, here.n_voxels)
    # numpy + nibabel + isal and a 4 mm run: far below the 256 MB target (nilearn alone
    # would add ~200 MB), so a heavy import creeping into the worker fails this
    assert 20 < peak / 2**20 < 150, peak / 2**20


def test_bad_file_comes_back_as_the_same_input_error(tmp_path: Path) -> None:
    bold = tmp_path / "sub-01_bold.nii.gz"
    bold.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    plan = RegionPlan(np.ones((2, 2, 2), dtype=np.int32), [1])
    here = run_job(StreamJob(bold, plan))
    with LeanPool(1) as pool:
        pool.submit("x", StreamJob(bold, plan))
        token, there = pool.get()
    assert token == "x" and here[0] == there[0] == "input"
    assert here[1:3] == there[1:3] and there[2] == str(bold)
    assert "gzip" in there[1]


def test_dead_worker_is_reported_and_replaced(small_trial: Path, tmp_path: Path) -> None:
    """A worker killed mid-job gives a 'died' reply; the next job gets a fresh worker."""
    fifo = tmp_path / "stuck_bold.nii"
    os.mkfifo(fifo)  # opening it blocks the worker until we kill it
    plan = RegionPlan(np.ones((2, 2, 2), dtype=np.int32), [1])
    bold = _bold(small_trial)
    with LeanPool(1) as pool:
        pool.submit("stuck", StreamJob(fifo, plan))
        worker = pool._workers[0]
        deadline = time.monotonic() + 30
        while worker.proc is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.proc is not None
        killer = threading.Timer(0.5, worker.proc.kill)
        killer.start()
        token, reply = pool.get()
        killer.join()
        assert token == "stuck" and reply[0] == "died"
        assert "worker process died (exit code -9)" in reply[1]
        good = _plan(bold)
        pool.submit("next", StreamJob(bold, good))
        token, reply = pool.get()
    assert token == "next" and reply[0] == "ok"
    assert np.array_equal(reply[1].signals, good.extract(bold).signals)


@pytest.mark.slow
def test_one_worker_two_workers_and_in_process_give_identical_files(
    small_trial: Path, tmp_path: Path
) -> None:
    """Splitting the work across processes changes no byte of any output."""
    from brainmatch.atlases import atlas_digest, load_atlas
    from brainmatch.features import extract_dataset
    from brainmatch.features.bids import discover
    from brainmatch.features.denoise import CleanOptions
    from brainmatch.features.extract import ExtractConfig, process_unit

    deriv = small_trial / "derivatives" / "fmriprep"
    kwargs = {
        "derivatives": deriv,
        "atlas": "affect",
        "connectivity": ("correlation", "partial"),
        "participant_label": ["001", "002", "003"],
    }
    one = extract_dataset(small_trial, tmp_path / "one", n_jobs=1, **kwargs)  # type: ignore[arg-type]
    two = extract_dataset(small_trial, tmp_path / "two", n_jobs=2, **kwargs)  # type: ignore[arg-type]
    assert one.failures.empty and len(one.computed) == 3 and len(two.computed) == 3
    assert one.worker_peak_rss_mb is not None and one.worker_peak_rss_mb < 150
    # the whole pipeline in this process (the pre-split code path)
    atlas = load_atlas("affect")
    config = ExtractConfig(
        atlas=atlas,
        atlas_digest=atlas_digest(atlas),
        clean=CleanOptions(),
        connectivity=("correlation", "partial"),
        output_dir=(tmp_path / "here").absolute(),
        freesurfer=False,
        atlas_source="affect",
    )
    units = discover(small_trial, deriv, participant_label=["001", "002", "003"])
    here = [process_unit(u, config) for u in units]
    assert all(r["status"] == "ok" for r in here)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.tsv"))
    assert len([f for f in files if f.name.endswith("_relmat.tsv")]) == 6
    for rel in files:
        data = (tmp_path / "one" / rel).read_bytes()
        assert data == (tmp_path / "two" / rel).read_bytes(), rel
        if rel.parts[0].startswith("sub-"):
            assert data == (tmp_path / "here" / rel).read_bytes(), rel
    for rec in here:
        key = rec["record"]["participant_id"]
        stored = json.loads(next((tmp_path / "one" / ".records").glob(f"{key}_*.json")).read_text())
        assert stored["features"] == rec["record"]["features"]
        assert stored["options_sha256"] == rec["record"]["options_sha256"]
