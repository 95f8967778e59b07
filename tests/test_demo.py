"""``brainmatch demo`` runs end to end and prints where its report is."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest


def _demo(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # 70 controls, the fewest the normative stage accepts: its design has 11 columns
    # (intercept, 6 age splines, sex, 3 sites), so the model needs >= 5 * 11 = 55 controls;
    # the calibration hold-out keeps round(0.2 * n) of each site's controls back, and with
    # 70 (24, 23, 23 per site) 5 + 5 + 5 are held out and exactly 55 are fitted
    args = [
        *("--out", str(out), "--n-subjects", "36", "--n-permutations", "50"),
        *("--n-controls", "70", "--n-jobs", "1"),
    ]
    return subprocess.run(
        [sys.executable, "-m", "brainmatch", "demo", *args, *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_demo_runs_and_reruns(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = _demo(out)
    assert res.returncode == 0, res.stderr
    match = re.search(r"Report: (\S+)", res.stdout)
    assert match, res.stdout
    report = Path(match.group(1))
    assert report.is_file()
    html = report.read_text()
    assert "Simulated treatment trial" in html and "data:image/png;base64," in html
    # every stage ran and left its output where the index report links to it
    for stage, link in (
        ("extract", "derivatives/brainmatch/features.tsv"),
        ("train", "model/report.html"),
        ("recommend", "recommend/report.html"),
        ("profile", "profile/report.html"),
    ):
        assert f"<b>{stage}</b>" in html
        assert (out / link).is_file(), link
    rec = json.loads((out / "recommend" / "recommend.json").read_text())
    assert rec["patients"][0]["participant_id"] == "sub-037"
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    assert metrics["n"] <= 36  # the new patient was never trained on
    # the normative stage fitted every control, after a calibration hold-out
    norm = json.loads((out / "normative" / "fit_summary.json").read_text())["summary"]
    assert norm["n_controls"] == 70 and norm["calibration"]["n_train"] >= 55


def test_rerun_replaces_only_its_own_output(tmp_path: Path) -> None:
    from brainmatch.cli.demo import prepare_demo_dir

    out = tmp_path / "demo"
    prepare_demo_dir(out)
    (out / "old-report.html").write_text("stale")
    prepare_demo_dir(out)  # an earlier demo: cleared
    assert [p.name for p in out.iterdir()] == [".brainmatch-demo"]


def test_demo_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("keep me")
    res = _demo(tmp_path)
    assert res.returncode == 2
    assert "did not write (thesis.tex)" in res.stderr
    assert (tmp_path / "thesis.tex").read_text() == "keep me"
