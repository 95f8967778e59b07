"""``brainmatch meta`` / readers: formats, outputs, the augmentation schema, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence import effects
from brainmatch.evidence.meta import rma
from brainmatch.evidence.readers import read_table, split_shared_controls
from brainmatch.evidence.schema import normalise_augmentation_table

DATA = Path(__file__).parent / "data" / "meta"
BCG = json.loads((DATA / "bcg_metafor_reference.json").read_text())
runner = CliRunner()


def _bcg_table() -> pd.DataFrame:
    d = BCG["data"]
    n1 = np.add(d["tpos"], d["tneg"])
    n2 = np.add(d["cpos"], d["cneg"])
    return pd.DataFrame(
        {
            "study": [f"trial {i + 1}" for i in range(len(n1))],
            "events1": d["tpos"],
            "n1": n1,
            "events2": d["cpos"],
            "n2": n2,
            "alloc": [
                "random",
                "random",
                "random",
                "random",
                "alternate",
                "alternate",
                "random",
                "random",
                "random",
                "systematic",
                "systematic",
                "systematic",
                "systematic",
            ],
        }
    )


def test_cli_meta_from_event_counts_writes_everything(tmp_path: Path) -> None:
    src = tmp_path / "bcg.csv"
    _bcg_table().to_csv(src, index=False)
    out = tmp_path / "out"
    res = runner.invoke(
        app, ["meta", str(src), "--out", str(out), "--measure", "RR", "--subgroup", "alloc"]
    )
    assert res.exit_code == 0, res.output
    for name in (
        "results.json",
        "report.html",
        "forest.svg",
        "forest.png",
        "funnel.svg",
        "funnel.png",
        "studies.tsv",
        "leave_one_out.tsv",
    ):
        assert (out / name).stat().st_size > 0, name
    r = json.loads((out / "results.json").read_text())
    for key in (
        "k",
        "estimate",
        "se",
        "ci_lb",
        "ci_ub",
        "pi_lb",
        "pi_ub",
        "tau2",
        "I2",
        "H2",
        "QE",
        "QEp",
    ):
        assert key in r
    assert round(r["estimate"], 4) == BCG["rma_reml"]["estimate"]
    assert set(r["subgroups"]["groups"]) == {"random", "systematic", "alternate"}
    html = (out / "report.html").read_text()
    assert "Methods" in html and "Viechtbauer" in html and "forest.svg" in html
    assert (out / "forest.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("fmt", ["tsv", "xlsx", "semicolon"])
def test_reads_tsv_xlsx_and_decimal_comma_csv(tmp_path: Path, fmt: str) -> None:
    y, v = effects.log_risk_ratio(*[_bcg_table()[c] for c in ("events1", "n1", "events2", "n2")])
    df = pd.DataFrame({"study": _bcg_table()["study"], "g": y, "se": np.sqrt(v)})
    if fmt == "tsv":
        path = tmp_path / "t.tsv"
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "xlsx":
        path = tmp_path / "t.xlsx"
        df.to_excel(path, index=False)
    else:
        path = tmp_path / "t.csv"
        df.to_csv(path, sep=";", decimal=",", index=False)
    back = read_table(path)
    np.testing.assert_allclose(back["g"].to_numpy(dtype=float), y)
    out = tmp_path / "o"
    res = runner.invoke(
        app,
        [
            "meta",
            str(path),
            "--out",
            str(out),
            "--effect",
            "g",
            "--se",
            "se",
            "--method",
            "DL",
            "--test",
            "knha",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    ref = rma(y, v, method="DL", test="knha")
    np.testing.assert_allclose(
        [r["estimate"], r["se"], r["tau2"]], [ref.estimate, ref.se[0], ref.tau2], rtol=1e-10
    )
    assert r["ddf"] == len(y) - 1


def test_meta_regression_on_a_categorical_moderator(tmp_path: Path) -> None:
    src = tmp_path / "bcg.csv"
    _bcg_table().to_csv(src, index=False)
    out = tmp_path / "out"
    res = runner.invoke(
        app, ["meta", str(src), "--out", str(out), "--measure", "RR", "--moderators", "alloc"]
    )
    assert res.exit_code == 0, res.output
    reg = json.loads((out / "results.json").read_text())["meta_regression"]
    names = [c["name"] for c in reg["coefficients"]]
    assert names == ["intrcpt", "alloc[random]", "alloc[systematic]"]


def _cli_error(tmp_path: Path, table: pd.DataFrame, *args: str) -> str:
    src = tmp_path / "in.csv"
    table.to_csv(src, index=False)
    out = tmp_path / "out"
    res = runner.invoke(app, ["meta", str(src), "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert not (out / "results.json").exists()
    return " ".join(res.output.split())


def test_bad_input_messages(tmp_path: Path) -> None:
    good = pd.DataFrame(
        {"study": list("abcd"), "g": [0.1, 0.3, 0.2, 0.5], "se": [0.1, 0.2, 0.15, 0.1]}
    )
    msg = _cli_error(tmp_path, good.assign(se=[0.1, -0.2, 0.1, 0.1]), "--effect", "g", "--se", "se")
    assert "in.csv" in msg and "'se' row 3" in msg and "must be positive" in msg
    msg = _cli_error(
        tmp_path, good.assign(v=[0.1, 0.0, 0.1, 0.1]), "--effect", "g", "--variance", "v"
    )
    assert "'v' row 3" in msg and "variances must be positive" in msg
    msg = _cli_error(
        tmp_path, good.assign(g=["0.1", "abc", "0.2", "0.5"]), "--effect", "g", "--se", "se"
    )
    assert "'g' row 3 holds 'abc', not a number" in msg
    msg = _cli_error(tmp_path, good, "--effect", "hedges_g", "--se", "se")
    assert "missing column(s) 'hedges_g'" in msg and "study, g, se" in msg
    msg = _cli_error(tmp_path, good.iloc[:2], "--effect", "g", "--se", "se")
    assert "need at least 3 studies, got k = 2" in msg
    msg = _cli_error(tmp_path, good, "--measure", "SMD")
    assert "missing column(s) 'm1', 'sd1', 'n1', 'm2', 'sd2', 'n2'" in msg
    msg = _cli_error(tmp_path, good, "--effect", "g", "--se", "se", "--select", "study=z")
    assert "no rows left after --select 'study=z'" in msg


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(BrainmatchInputError, match="file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(BrainmatchInputError, match="unsupported file type"):
        read_table(tmp_path / "x.json")


def test_shared_control_is_split_between_comparisons() -> None:
    df = pd.DataFrame(
        {
            "study": ["A", "A", "B"],
            "ctrl": ["wl", "wl", "wl"],
            "nc": [40, 40, 30],
            "yi": [0.5, 0.4, 0.3],
            "vi": [0.06, 0.07, 0.08],
        }
    )
    out = split_shared_controls(df, "study", "ctrl", "nc")
    np.testing.assert_allclose(out["vi"], [0.06 + 1 / 40, 0.07 + 1 / 40, 0.08])
    with pytest.raises(BrainmatchInputError, match="share a control group"):
        split_shared_controls(df, "study", "ctrl", None)


def test_augmentation_schema_normalises_and_rejects() -> None:
    df = pd.DataFrame(
        {
            "type": ["NMDA-targeting", "Psychedelic", "brain stimulation", "Sleep/circadian"],
            "timing": ["pre-session", "during", "after", "before"],
        }
    )
    out = normalise_augmentation_table(df)
    assert out["type"].tolist() == ["nmda", "psychedelic", "brain_stimulation", "sleep_circadian"]
    assert out["timing"].tolist() == ["before", "during", "after", "before"]
    with pytest.raises(BrainmatchInputError, match=r"'timing' row 4 is 'lunchtime'"):
        normalise_augmentation_table(df.assign(timing=["before", "after", "lunchtime", "during"]))


def test_augmentation_subgroups_and_timing_moderator(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    k = 90
    types = np.array(["nmda", "psychedelic", "exercise"])[rng.integers(0, 3, k)]
    timing = np.array(["before", "during", "after"])[rng.integers(0, 3, k)]
    true = {"nmda": -0.3, "psychedelic": -0.6, "exercise": -0.1}
    se = rng.uniform(0.1, 0.3, k)
    g = np.array([true[t] for t in types]) + rng.normal(0, se)
    df = pd.DataFrame(
        {
            "study": [f"s{i}" for i in range(k)],
            "g": g,
            "se": se,
            "type": [t.upper() if i % 2 else t for i, t in enumerate(types)],
            "timing": timing,
        }
    )
    src = tmp_path / "aug.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "meta",
            str(src),
            "--out",
            str(out),
            "--effect",
            "g",
            "--se",
            "se",
            "--schema",
            "augmentation",
            "--subgroup",
            "type",
            "--moderators",
            "timing",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    groups = r["subgroups"]["groups"]
    for t, mu in true.items():
        assert abs(groups[t]["estimate"] - mu) < 0.15
    assert r["subgroups"]["p_between"] < 1e-3
    assert r["meta_regression"]["QMp"] > 0.01  # timing has no true effect here


def test_aggregate_combines_instruments_of_one_comparison(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "study": ["a", "a", "b", "c", "d"],
            "instrument": ["bdi", "hamd", "bdi", "bdi", "phq"],
            "g": [0.5, 0.7, 0.2, 0.4, 0.9],
            "se": [0.2, 0.25, 0.15, 0.3, 0.2],
        }
    )
    src = tmp_path / "multi.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "meta",
            str(src),
            "--out",
            str(out),
            "--effect",
            "g",
            "--se",
            "se",
            "--aggregate",
            "study",
            "--rho",
            "0.7",
            "--method",
            "DL",
        ],
    )
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["k"] == 4
    ya, va = effects.aggregate_dependent([0.5, 0.7], [0.04, 0.0625], rho=0.7)
    ref = rma([ya, 0.2, 0.4, 0.9], [va, 0.0225, 0.09, 0.04], method="DL")
    np.testing.assert_allclose([r["estimate"], r["tau2"]], [ref.estimate, ref.tau2])
