"""brainmatch extract end to end: outputs, ground-truth recovery, resumability, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.features import extract_dataset
from brainmatch.reports import fmt_value
from brainmatch.reports.qc import write_reportlets


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def copy_trial(src: Path, dst: Path, subjects: tuple[str, ...] = ("001", "002", "003")) -> Path:
    """A writable copy of part of a simulated trial."""
    dst.mkdir(parents=True)
    for name in ("dataset_description.json", "participants.tsv"):
        shutil.copy(src / name, dst / name)
    for deriv in ("fmriprep", "freesurfer"):
        (dst / "derivatives" / deriv).mkdir(parents=True)
        for sub in subjects:
            shutil.copytree(
                src / "derivatives" / deriv / f"sub-{sub}",
                dst / "derivatives" / deriv / f"sub-{sub}",
            )
    return dst


def _run(bids: Path, out: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    kwargs.setdefault("atlas", "affect")
    return extract_dataset(bids, out, derivatives=bids / "derivatives" / "fmriprep", **kwargs)  # type: ignore[arg-type]


@pytest.mark.slow
def test_outputs_layout_and_ground_truth(small_trial: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = extract_dataset(
        small_trial,
        out,
        derivatives=small_trial / "derivatives" / "fmriprep",
        atlas="desikan-killiany",
        freesurfer=small_trial / "derivatives" / "freesurfer",
        n_jobs=1,
    )
    assert res.failures.empty and len(res.computed) == 8
    table = pd.read_parquet(res.features_path)
    twin = pd.read_csv(res.features_tsv, sep="\t")
    assert list(table.columns) == list(twin.columns)
    assert np.allclose(
        table.drop(columns="participant_id").to_numpy(),
        twin.drop(columns="participant_id").to_numpy(),
        rtol=1e-8,
    )
    assert table["participant_id"].tolist() == [f"sub-{i:03d}" for i in range(1, 9)]
    meta = json.loads(res.metadata_path.read_text())
    assert meta["atlas"]["name"] == "desikan-killiany"
    assert meta["strategy"]["denoise"] == "simple"
    assert len(meta["inputs"]["sub-001"]) == 6  # bold, sidecar, mask, confounds tsv+json, aseg
    for entry in meta["inputs"]["sub-001"]:  # BLAKE2b-256 of each file's bytes
        want = hashlib.blake2b(Path(entry["path"]).read_bytes(), digest_size=32).hexdigest()
        assert entry["blake2b"] == want
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    func = out / "sub-001" / "func"
    stem = "sub-001_task-rest_space-MNI152NLin2009cAsym_res-4_seg-desikankilliany"
    ts = pd.read_csv(func / f"{stem}_stat-mean_timeseries.tsv", sep="\t")
    assert "Left-Amygdala" in ts.columns and len(ts) == 60
    rel = pd.read_csv(
        func / f"{stem}_stat-pearsoncorrelation_relmat.tsv", sep="\t", index_col="Node"
    )
    assert list(rel.index) == list(ts.columns)
    # known truth of the simulator: right-insula amplitude follows insula_activity, and
    # hippocampal volume follows the hippocampal_volume biomarker
    truth = pd.read_csv(small_trial / "ground_truth.tsv", sep="\t").merge(table)
    rho = truth[["amp__ctx_rh_insula", "insula_activity"]].corr("spearman").iloc[0, 1]
    assert rho > 0.8
    rho = truth[["vol__Left_Hippocampus", "hippocampal_volume"]].corr("spearman").iloc[0, 1]
    assert rho > 0.5
    assert (pd.read_csv(res.failures_path, sep="\t").shape[0]) == 0


def test_rerun_skips_up_to_date_and_redoes_changed(small_trial: Path, tmp_path: Path) -> None:
    bids = copy_trial(small_trial, tmp_path / "bids")
    out = tmp_path / "out"
    first = _run(bids, out)
    assert sorted(first.computed) == ["sub-001", "sub-002", "sub-003"]
    before = (out / "features.parquet").read_bytes()
    again = _run(bids, out)
    assert again.computed == [] and len(again.skipped) == 3
    assert pd.read_parquet(out / "features.parquet").equals(pd.read_parquet(first.features_path))
    assert before  # unchanged content
    # same content, new mtime: hash still matches -> skipped
    conf = next((bids / "derivatives/fmriprep/sub-002/func").glob("*confounds_timeseries.tsv"))
    os.utime(conf, None)
    assert _run(bids, out).computed == []
    # changed content -> only that participant recomputed
    table = pd.read_csv(conf, sep="\t")
    table["trans_x"] += 0.01
    table.to_csv(conf, sep="\t", index=False, na_rep="n/a")
    assert _run(bids, out).computed == ["sub-002"]
    # changed options -> all recomputed
    assert len(_run(bids, out, denoise="compcor").computed) == 3


@pytest.mark.slow
def test_cli_extract_and_strict(small_trial: Path, tmp_path: Path) -> None:
    bids = copy_trial(small_trial, tmp_path / "bids", ("001", "002"))
    runner = CliRunner()
    args = [
        "extract",
        str(bids),
        str(tmp_path / "out"),
        "participant",
        "--derivatives",
        str(bids / "derivatives" / "fmriprep"),
        "--atlas",
        "affect",
        "--connectivity",
        "correlation,tangent",
        "--participant-label",
        "001,002",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "out" / "features.parquet")
    assert any(c.startswith("tconn__") for c in table.columns)
    assert any(c.startswith("conn__amygdala_L__") for c in table.columns)
    for sub in ("sub-001", "sub-002"):  # the CLI renders each QC reportlet on the report base
        page = (tmp_path / "out" / sub / "figures" / f"{sub}_desc-qc_bold.html").read_text()
        assert 'id="brainmatch-report-base"' in page and "carpet plot" in page
    # one participant broken: exit 0 (not all failed), 1 with --strict
    bold = next((bids / "derivatives/fmriprep/sub-002/func").glob("*_bold.nii.gz"))
    bold.write_bytes(bold.read_bytes()[:5000])
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "sub-002" in res.output and "truncated" in res.output
    res = runner.invoke(app, [*args, "--strict"])
    assert res.exit_code == 1
    res = runner.invoke(app, [*args[:-1], "002"])
    assert res.exit_code == 1  # every selected participant failed
    res = runner.invoke(app, [*args[:6], "--atlas", "nonexistent"])
    assert res.exit_code == 2 and "unknown atlas" in res.output


@pytest.mark.slow
def test_sigkill_mid_batch_then_resume(small_trial: Path, tmp_path: Path) -> None:
    bids = copy_trial(small_trial, tmp_path / "bids", ("001", "002", "003", "004"))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "brainmatch",
        "extract",
        str(bids),
        str(out),
        "participant",
        "--derivatives",
        str(bids / "derivatives" / "fmriprep"),
        "--atlas",
        "affect",
        # one worker: with one per core the tiny subjects can all finish between two polls
        "--n-jobs",
        "1",
    ]
    env = {**os.environ}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    records: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        records = list(out.glob(".records/sub-*.json"))
        if records:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name.split("_")[0] for p in out.glob(".records/sub-*.json")}
    assert done and len(done) < 4, "kill should land mid-batch"
    res = _run(bids, out)
    assert sorted(res.skipped) == sorted(done)
    assert sorted(res.computed) == sorted({f"sub-{s}" for s in ("001", "002", "003", "004")} - done)
    full = _run(bids, tmp_path / "fresh")
    a = pd.read_parquet(res.features_path)
    b = pd.read_parquet(full.features_path)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow
def test_dask_local_cluster_gives_identical_outputs(small_trial: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    bids = copy_trial(small_trial, tmp_path / "bids", ("001", "002"))
    serial = _run(bids, tmp_path / "serial")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        dist = _run(bids, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert dist.failures.empty and sorted(dist.computed) == ["sub-001", "sub-002"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(serial.features_path), pd.read_parquet(dist.features_path)
    )
    for f in (tmp_path / "serial").rglob("*_timeseries.tsv"):
        twin = tmp_path / "dask" / f.relative_to(tmp_path / "serial")
        assert f.read_bytes() == twin.read_bytes()


def test_qc_table_reportlets_and_sidecars(small_trial: Path, tmp_path: Path) -> None:
    """qc.tsv against the confounds tables; a reportlet per participant; JSON sidecars."""
    out = tmp_path / "out"
    res = extract_dataset(
        small_trial,
        out,
        derivatives=small_trial / "derivatives" / "fmriprep",
        atlas="affect",
        denoise="scrubbing",
        fd_threshold=0.2,
        participant_label=["001", "002"],
    )
    assert res.failures.empty and res.qc_path == out / "qc.tsv"
    # extraction stores the QC in the records; the reportlets are rendered from them
    assert not list(out.rglob("*_desc-qc_bold.html"))
    written = write_reportlets(out)
    assert sorted(p.name for p in written) == [f"sub-00{i}_desc-qc_bold.html" for i in (1, 2)]
    qc = pd.read_csv(res.qc_path, sep="\t").set_index("participant_id")
    for sub in ("sub-001", "sub-002"):
        func = small_trial / "derivatives" / "fmriprep" / sub / "func"
        conf = pd.read_csv(next(func.glob("*_desc-confounds_timeseries.tsv")), sep="\t")
        fd = pd.to_numeric(conf["framewise_displacement"], errors="coerce")
        assert qc.loc[sub, "mean_fd"] == pytest.approx(float(fd.mean()), rel=1e-5)
        ts = pd.read_csv(next((out / sub / "func").glob("*_stat-mean_timeseries.tsv")), sep="\t")
        assert qc.loc[sub, "pct_censored"] == pytest.approx(
            100 * (1 - len(ts) / len(conf)), rel=1e-5
        )
        assert qc.loc[sub, "coverage_min"] == 1.0 and qc.loc[sub, "tsnr_median"] > 10
        report = out / sub / "figures" / f"{sub}_desc-qc_bold.html"
        text = report.read_text()
        assert "<svg" in text and "carpet plot" in text and "mean_fd" in text
        assert 'id="brainmatch-report-base"' in text  # the one stylesheet of every report
        record = json.loads(next((out / ".records").glob(f"{sub}_seg-*.json")).read_text())
        mean_fd = fmt_value(record["runs"][0]["qc"]["mean_fd"])  # the one number formatter
        assert f'<th class="l">mean_fd</th><td>{mean_fd}</td>' in text
    assert qc.loc["sub-001", "pct_censored"] > 0  # scrubbing at 0.2 mm censors some volumes
    for tsv in out.rglob("*.tsv"):
        assert tsv.with_name(tsv.name.removesuffix(".tsv") + ".json").exists(), tsv
