"""Output folders: nothing lost, nothing overwritten (brainmatch._outdir and every command).

Ground truth: the files the test itself puts in the folders (a user's notes, another
command's outputs) must survive byte for byte, and the message must name the problem.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch._outdir import MANIFEST, claim_output, read_manifest
from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError

runner = CliRunner()


def _studies(tmp_path: Path) -> Path:
    src = tmp_path / "studies.csv"
    pd.DataFrame(
        {"study": list("abcde"), "g": [0.2, 0.5, 0.3, 0.8, 0.1], "se": [0.1, 0.2, 0.15, 0.25, 0.12]}
    ).to_csv(src, index=False)
    return src


def _nma_table(tmp_path: Path) -> Path:
    src = tmp_path / "net.csv"
    pd.DataFrame(
        {
            "study": ["s1", "s2", "s3"],
            "treat1": ["A", "A", "B"],
            "treat2": ["B", "C", "C"],
            "TE": [0.5, 0.3, 0.1],
            "seTE": [0.1, 0.2, 0.2],
        }
    ).to_csv(src, index=False)
    return src


def _meta(src: Path, out: Path, *extra: str):
    return runner.invoke(
        app, ["meta", str(src), "-o", str(out), "--effect", "g", "--se", "se", *extra]
    )


def test_a_command_refuses_another_commands_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _meta(_studies(tmp_path), out).exit_code == 0
    before = (out / "report.html").read_bytes()
    res = runner.invoke(app, ["nma", str(_nma_table(tmp_path)), "-o", str(out), "--overwrite"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "holds the outputs of `brainmatch meta`" in res.output
    assert (out / "report.html").read_bytes() == before
    assert read_manifest(out)["command"] == "meta"


def test_user_files_are_never_touched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    res = _meta(_studies(tmp_path), out, "--overwrite")
    assert res.exit_code == 2 and "did not write (notes.txt)" in res.output
    assert (out / "notes.txt").read_text() == "my notes"
    assert not (out / "results.json").exists()


def test_rerun_updates_in_place_and_overwrite_deletes_only_own_files(tmp_path: Path) -> None:
    src = _studies(tmp_path)
    out = tmp_path / "out"
    df = pd.read_csv(src).assign(grp=["x", "x", "x", "y", "y"])
    df.to_csv(src, index=False)
    assert _meta(src, out, "--subgroup", "grp").exit_code == 0
    assert (out / "forest_subgroups.svg").exists()
    # same command again without --overwrite: in place; the earlier figure stays
    assert _meta(src, out).exit_code == 0
    assert (out / "forest_subgroups.svg").exists()
    files = set(read_manifest(out)["files"])
    assert {"results.json", "report.html", "forest_subgroups.svg"} <= files
    # --overwrite: the earlier run's files go, so no stale subgroup figure remains
    assert _meta(src, out, "--overwrite").exit_code == 0
    assert not (out / "forest_subgroups.svg").exists()
    assert "forest_subgroups.svg" not in read_manifest(out)["files"]


def test_concurrent_runs_cannot_interleave(tmp_path: Path) -> None:
    out = tmp_path / "out"
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with claim_output(out, "meta"):
            entered.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(10)
    try:
        # a second process-level claim (another open file description) is refused at once
        import brainmatch._outdir as od

        held = od._HELD.pop(out.absolute())
        try:
            with (
                pytest.raises(BrainmatchInputError, match="another brainmatch run"),
                claim_output(out, "nma"),
            ):
                pass
        finally:
            od._HELD[out.absolute()] = held
    finally:
        release.set()
        t.join()


def test_interrupted_run_is_adopted_by_the_same_command(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # what a kill -9 leaves: the manifest says a run was in progress, outputs unrecorded
    (out / MANIFEST).write_text(json.dumps({"command": "extract", "running": True, "files": []}))
    (out / "sub-01").mkdir()
    (out / "sub-01" / "partial.tsv").write_text("x")
    with (
        pytest.raises(BrainmatchInputError, match="outputs of `brainmatch extract`"),
        claim_output(out, "meta"),
    ):
        pass
    with claim_output(out, "extract"):
        pass
    m = read_manifest(out)
    assert m["running"] is False and "sub-01/partial.tsv" in m["files"]


def test_output_inside_an_input_is_refused(tmp_path: Path) -> None:
    deriv = tmp_path / "bids" / "derivatives" / "fmriprep"
    deriv.mkdir(parents=True)
    with (
        pytest.raises(BrainmatchInputError, match="is, or is inside, the input"),
        claim_output(deriv, "extract", inputs=[tmp_path / "bids", deriv]),
    ):
        pass
    with (
        pytest.raises(BrainmatchInputError, match="is, or is inside, the input"),
        claim_output(tmp_path / "bids" / "code", "extract", inputs=[tmp_path / "bids", deriv]),
    ):
        pass
    # the BIDS convention <bids>/derivatives/<pipeline> is allowed
    with claim_output(
        tmp_path / "bids" / "derivatives" / "brainmatch",
        "extract",
        inputs=[tmp_path / "bids", deriv],
    ) as c:
        assert c.path.is_dir()


@pytest.mark.parametrize("command", ["meta", "nma", "train", "recommend"])
def test_out_pointing_at_a_file(tmp_path: Path, command: str) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep")
    src = _studies(tmp_path)
    args = {
        "meta": ["meta", str(src), "-o", str(target), "--effect", "g", "--se", "se"],
        "nma": ["nma", str(_nma_table(tmp_path)), "-o", str(target)],
        "train": [
            "train",
            "--features",
            str(src),
            "--outcomes",
            str(src),
            "--treatment-column",
            "g",
            "--outcome-column",
            "se",
            "-o",
            str(target),
        ],
        "recommend": ["recommend", str(src), str(src), "-o", str(target)],
    }[command]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "exists and is not a folder" in res.output
    assert target.read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_output_folder(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        res = _meta(_studies(tmp_path), out)
        assert res.exit_code == 2 and "Traceback" not in res.output
        assert "not writable" in res.output or "cannot" in res.output
    finally:
        out.chmod(0o755)


def test_read_only_output_folder_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check as above where tests run as root: os.access reports no write right."""
    real = os.access
    out = tmp_path / "ro"
    out.mkdir()
    monkeypatch.setattr(
        os, "access", lambda p, m: False if Path(p) == out and m & os.W_OK else real(p, m)
    )
    res = _meta(_studies(tmp_path), out)
    assert res.exit_code == 2 and "the output folder is not writable" in res.output


def test_simulate_overwrite_keeps_user_files(tmp_path: Path) -> None:
    from brainmatch.simulate import TrialSpec, simulate_trial

    out = tmp_path / "trial"
    spec = TrialSpec(n_subjects=3, n_sites=1, n_volumes=20, seed=1)
    simulate_trial(spec, out)
    assert read_manifest(out)["command"] == "simulate"
    (out / "notes.txt").write_text("mine")
    (out / "derivatives" / "brainmatch").mkdir(parents=True)
    (out / "derivatives" / "brainmatch" / "features.tsv").write_text("x")
    res = runner.invoke(
        app,
        [
            "simulate",
            str(out),
            "--n-subjects",
            "3",
            "--sites",
            "1",
            "--n-volumes",
            "20",
            "--overwrite",
            "--n-jobs",
            "1",
        ],
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "did not write" in res.output and "notes.txt" in res.output
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "derivatives" / "brainmatch" / "features.tsv").exists()
    # without the foreign files, --overwrite replaces the simulation
    (out / "notes.txt").unlink()
    import shutil

    shutil.rmtree(out / "derivatives" / "brainmatch")
    simulate_trial(spec, out, overwrite=True)
    assert (out / "participants.tsv").exists()


def test_failed_run_leaves_no_folder_behind(tmp_path: Path) -> None:
    out = tmp_path / "new_out"
    src = tmp_path / "bad.csv"
    src.write_text("study,g,se\na,1,-1\nb,2,1\nc,3,1\n")
    res = runner.invoke(app, ["meta", str(src), "-o", str(out), "--effect", "g", "--se", "se"])
    assert res.exit_code == 2 and "error:" in res.output
    assert not out.exists()


def test_extract_into_the_fmriprep_folder_is_refused(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    deriv = bids / "derivatives" / "fmriprep"
    deriv.mkdir(parents=True)
    (deriv / "dataset_description.json").write_text('{"Name": "fMRIPrep"}')
    res = runner.invoke(
        app,
        [
            "extract",
            str(bids),
            str(deriv),
            "participant",
            "--derivatives",
            str(deriv),
            "--atlas",
            "affect",
        ],
    )
    assert res.exit_code == 2 and "is, or is inside, the input" in res.output
    assert (deriv / "dataset_description.json").read_text() == '{"Name": "fMRIPrep"}'
