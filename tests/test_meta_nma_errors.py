"""``meta`` / ``nma``: each silent-wrong-result and traceback of issue 12, fed through the CLI.

Each case checks the exit status, the one-line message naming the problem, and (for the
silent results) the numbers: every subgroup reported with the model used for it, with
k = 1 and k = 2 subgroups compared with the fixed-effect model of metafor's
``rma(method="FE")`` (PyMARE-pinned grid) where applicable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.evidence.meta import rma

runner = CliRunner()


def _fail(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    return lines[0]


def _studies(tmp_path: Path, **extra: list) -> Path:
    df = pd.DataFrame(
        {
            "study": ["a", "b", "c", "d", "e", "f"],
            "g": [0.2, 0.5, 0.3, 0.8, 0.1, 0.4],
            "se": [0.1, 0.2, 0.15, 0.25, 0.12, 0.18],
            **extra,
        }
    )
    src = tmp_path / "s.csv"
    df.to_csv(src, index=False)
    return src


def test_meta_duplicated_rows_are_refused(tmp_path: Path) -> None:
    src = _studies(tmp_path)
    df = pd.read_csv(src)
    pd.concat([df, df.iloc[[2]]]).to_csv(src, index=False)
    msg = _fail(["meta", str(src), "-o", str(tmp_path / "o"), "--effect", "g", "--se", "se"])
    assert "duplicated rows" in msg and "3, 7" in msg
    # same study, effect and variance entered under another row order: still a duplicate
    df2 = pd.concat([df, df.iloc[[2]].assign(note="again")])
    df2.to_csv(src, index=False)
    msg = _fail(["meta", str(src), "-o", str(tmp_path / "o"), "--effect", "g", "--se", "se"])
    assert "same comparison" in msg and "'c'" in msg


@pytest.mark.parametrize(
    ("value", "column", "message"),
    [(1e300, "g", "implausible size"), (1e-12, "se", "implausible standard error")],
)
def test_meta_extreme_values_are_refused(
    tmp_path: Path, value: float, column: str, message: str
) -> None:
    src = _studies(tmp_path)
    df = pd.read_csv(src)
    df.loc[1, column] = value
    df.to_csv(src, index=False)
    msg = _fail(["meta", str(src), "-o", str(tmp_path / "o"), "--effect", "g", "--se", "se"])
    assert message in msg and "row(s) 2" in msg


def test_meta_subgroups_of_one_and_two_studies_are_reported_with_their_model(
    tmp_path: Path,
) -> None:
    grp = ["big", "big", "big", "pair", "pair", "single"]
    src = _studies(tmp_path, grp=grp)
    out = tmp_path / "o"
    res = runner.invoke(
        app, ["meta", str(src), "-o", str(out), "--effect", "g", "--se", "se", "--subgroup", "grp"]
    )
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    groups = r["subgroups"]["groups"]
    assert set(groups) == {"big", "pair", "single"}
    assert groups["single"]["k"] == 1 and groups["single"]["estimate"] == pytest.approx(0.4)
    assert groups["single"]["se"] == pytest.approx(0.18)
    assert "single study" in groups["single"]["model"]
    assert "fixed effect" in groups["pair"]["model"]
    fe = rma([0.8, 0.1], [0.25**2, 0.12**2], method="FE")  # metafor-exact FE
    assert groups["pair"]["estimate"] == pytest.approx(fe.estimate, rel=1e-12)
    assert groups["big"]["model"].startswith("random effects (REML)")
    # every subgroup enters the test of subgroup differences
    assert r["subgroups"]["df_between"] == 2
    est = np.array([groups[g]["estimate"] for g in groups])
    w = 1 / np.array([groups[g]["se"] ** 2 for g in groups])
    q = float(np.sum(w * (est - np.sum(w * est) / w.sum()) ** 2))
    assert r["subgroups"]["Q_between"] == pytest.approx(q, rel=1e-9)
    html = (out / "report.html").read_text()
    assert "single study (k = 1)" in html and "too few studies to estimate tau" in html
    assert "each with its own tau²" not in html
    assert any("fewer than three studies" in w for w in r["warnings"])


def test_meta_fixed_effect_with_subgroups(tmp_path: Path) -> None:
    src = _studies(tmp_path, grp=["x", "x", "x", "y", "y", "y"])
    out = tmp_path / "o"
    res = runner.invoke(
        app,
        [
            "meta",
            str(src),
            "-o",
            str(out),
            "--effect",
            "g",
            "--se",
            "se",
            "--method",
            "FE",
            "--subgroup",
            "grp",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert all(g["model"] == "fixed effect" for g in r["subgroups"]["groups"].values())


def test_report_p_values_are_formatted(tmp_path: Path) -> None:
    src = _studies(tmp_path)
    out = tmp_path / "o"
    assert (
        runner.invoke(
            app, ["meta", str(src), "-o", str(out), "--effect", "g", "--se", "se"]
        ).exit_code
        == 0
    )
    r = json.loads((out / "results.json").read_text())
    html = (out / "report.html").read_text()
    assert r["pval"] < 0.001 and "&lt; 0.001" in html
    assert f"{r['pval']:.16g}" not in html


def test_nma_negative_se_and_inconsistent_multiarm_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "n.csv"
    pd.DataFrame(
        {
            "study": ["s1", "s2", "s3"],
            "treat1": ["A", "A", "B"],
            "treat2": ["B", "C", "C"],
            "TE": [0.5, 0.3, 0.1],
            "seTE": [-0.1, 0.2, 0.2],
        }
    ).to_csv(src, index=False)
    assert "standard errors must be positive" in _fail(["nma", str(src), "-o", str(tmp_path / "o")])
    # a three-arm study whose A-C differs from (A-B) + (B-C) by 0.05 > 0.001
    pd.DataFrame(
        {
            "study": ["tri", "tri", "tri", "s2"],
            "treat1": ["A", "B", "A", "A"],
            "treat2": ["B", "C", "C", "B"],
            "TE": [0.5, 0.2, 0.75, 0.4],
            "seTE": [0.1, 0.1, 0.1, 0.2],
        }
    ).to_csv(src, index=False)
    msg = _fail(["nma", str(src), "-o", str(tmp_path / "o")])
    assert "study 'tri'" in msg and "inconsistent treatment effects" in msg and "0.001" in msg
    # consistent to 1e-4: accepted
    pd.DataFrame(
        {
            "study": ["tri", "tri", "tri", "s2"],
            "treat1": ["A", "B", "A", "A"],
            "treat2": ["B", "C", "C", "B"],
            "TE": [0.5, 0.2, 0.7001, 0.4],
            "seTE": [0.1, 0.1, 0.1, 0.2],
        }
    ).to_csv(src, index=False)
    assert runner.invoke(app, ["nma", str(src), "-o", str(tmp_path / "ok")]).exit_code == 0


def test_nma_single_comparison_runs_and_says_why_tau2_is_zero(tmp_path: Path) -> None:
    src = tmp_path / "one.csv"
    pd.DataFrame(
        {"study": ["s1"], "treat1": ["A"], "treat2": ["B"], "TE": [0.5], "seTE": [0.1]}
    ).to_csv(src, index=False)
    out = tmp_path / "o"
    res = runner.invoke(app, ["nma", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["df"] == 0 and r["tau2"] == 0 and "no degrees of freedom" in r["warnings"][0]
    est = {e["treatment"]: e for e in r["effects_vs_reference"]["random"]}
    ref = est["A"] if est["A"]["estimate"] != 0 else est["B"]
    assert abs(ref["estimate"]) == pytest.approx(0.5) and ref["se"] == pytest.approx(0.1)
    assert "data:image/svg+xml;base64," in (out / "report.html").read_text()


@pytest.mark.parametrize("command", ["meta", "nma"])
def test_xlsx_that_is_not_a_workbook(tmp_path: Path, command: str) -> None:
    src = tmp_path / "table.xlsx"
    src.write_text("study,g,se\na,0.1,0.1\n")
    msg = _fail([command, str(src), "-o", str(tmp_path / "o"), "--effect", "g", "--se", "se"])
    assert "not an Excel workbook" in msg


def test_semicolon_csv_with_decimal_commas(tmp_path: Path) -> None:
    src = tmp_path / "s.csv"
    src.write_text("study;g;se\na;0,2;0,1\nb;0,5;0,2\nc;0,3;0,15\nd;0,8;0,25\n")
    out = tmp_path / "o"
    res = runner.invoke(
        app, ["meta", str(src), "-o", str(out), "--effect", "g", "--se", "se", "--method", "FE"]
    )
    assert res.exit_code == 0, res.output
    fe = rma([0.2, 0.5, 0.3, 0.8], np.array([0.1, 0.2, 0.15, 0.25]) ** 2, method="FE")
    r = json.loads((out / "results.json").read_text())
    assert r["estimate"] == pytest.approx(fe.estimate, rel=1e-12)
    assert math.isfinite(r["se"])


def test_one_reader_semicolon_csv_works_for_train_too(tmp_path: Path) -> None:
    """``train`` reads the same semicolon / decimal-comma CSV as ``meta`` (one reader)."""
    from brainmatch.evidence.readers import read_table as meta_read
    from brainmatch.selection.data import read_table as train_read

    src = tmp_path / "t.csv"
    src.write_text("participant_id;x;arm\nsub-1;0,5;A\nsub-2;1,25;B\n")
    a = meta_read(src)
    b, _ = train_read(src, "features")
    assert list(a.columns) == list(b.columns) == ["participant_id", "x", "arm"]
    assert b["x"].tolist() == [0.5, 1.25] and a["x"].tolist() == [0.5, 1.25]


def test_large_meta_analysis_is_fast_and_says_what_it_skipped(tmp_path: Path) -> None:
    """1,500 studies: leave-one-out and per-study forest rows are skipped, with the reason
    (the speed itself is measured in benchmarks/bench_meta.py, not asserted here)."""
    rng = np.random.default_rng(3)
    k = 1500
    se = rng.uniform(0.05, 0.5, k)
    src = tmp_path / "big.csv"
    pd.DataFrame(
        {
            "study": [f"s{i}" for i in range(k)],
            "g": 0.3 + rng.normal(0, 0.2, k) + rng.normal(0, se),
            "se": se,
        }
    ).to_csv(src, index=False)
    out = tmp_path / "o"
    res = runner.invoke(app, ["meta", str(src), "-o", str(out), "--effect", "g", "--se", "se"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["k"] == k and "Leave-one-out refits were skipped" in r["leave_one_out_note"]
    html = (out / "report.html").read_text()
    assert "shows the pooled estimates only" in html and not (out / "leave_one_out.tsv").exists()
    fit = rma(pd.read_csv(src)["g"], pd.read_csv(src)["se"] ** 2)
    assert r["estimate"] == pytest.approx(fit.estimate, rel=1e-12)
