"""Every ``meta`` / ``nma`` option value through the command line, against published numbers.

References (tests/data/meta/README.md names each source; none is brainmatch's output):
- ``--method FE/DL/HE/ML/REML``: metafor 4.6.0 ``rma.uni`` fits pinned by PyMARE
  (``metafor_reference.json``, design ``extreme_k10``);
- ``--method PM``: metafor's ``rma(method="PM")`` on Kacker (2004), pinned by statsmodels;
- ``--measure SMD/SMDC/MD``: metafor ``escalc`` (PyMARE's pins; SMDC is ``SMD`` applied
  to change scores), ``--measure OR/RR``: metafor ``escalc`` on ``dat.fine1993``
  (statsmodels' pins);
- ``nma --method DL/REML``: a two-treatment network is the pairwise random-effects
  meta-analysis, so its effect and tau² are metafor's DL / REML fits of the same data;
- ``--multiarm split``: the Cochrane Handbook's rule (section 23.3.4): the shared control
  group is divided, adding (m - 1) / n_c to each comparison's variance.
Each run also checks one number against the Python API.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.analysis import meta_analysis, network_analysis

DATA = Path(__file__).parent / "data" / "meta"
REF = json.loads((DATA / "metafor_reference.json").read_text())
GRID = pd.read_csv(DATA / "metafor_small_sample.csv")
SM = json.loads((DATA / "statsmodels_metafor_reference.json").read_text())
ESC = json.loads((DATA / "metafor_escalc_reference.json").read_text())
ESC_IN = pd.read_csv(DATA / "metafor_escalc_inputs.csv")
runner = CliRunner()


def _case(design: str, method: str) -> dict:
    return next(
        c
        for c in REF["cases"]
        if c["design"] == design
        and c["method"] == method
        and c["model"] == "intercept"
        and c["test"] == "z"
    )


def _run(args: list[str]) -> dict:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    out = Path(args[args.index("-o") + 1])
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("method", ["FE", "DL", "HE", "ML", "REML"])
def test_meta_method_through_cli_equals_metafor(tmp_path: Path, method: str) -> None:
    rows = GRID[GRID["case"] == "extreme_k10"]
    src = tmp_path / "studies.csv"
    rows.assign(study=[f"s{i}" for i in range(len(rows))]).to_csv(src, index=False)
    out = tmp_path / "out"
    r = _run(
        ["meta", str(src), "-o", str(out), "--effect", "y", "--variance", "v", "--method", method]
    )
    ref = _case("extreme_k10", method)
    np.testing.assert_allclose(r["estimate"], ref["beta"][0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(r["se"], ref["se"][0], rtol=1e-9)
    np.testing.assert_allclose(r["tau2"], ref["tau2"], rtol=1e-9, atol=1e-9)
    api = meta_analysis(src, effect="y", variance="v", method=method)
    assert r["estimate"] == pytest.approx(api.fit.estimate, rel=1e-12)
    # the report names the model and is self-contained (figures embedded, not linked)
    html = (out / "report.html").read_text()
    assert r["model"] in html and "data:image/svg+xml;base64," in html
    assert 'src="forest.svg"' not in html
    if method == "FE":
        assert "fixed-effect" in r["methods"] and "Hedges LV, Olkin I" in " ".join(r["citations"])


def test_meta_paule_mandel_through_cli_equals_metafor(tmp_path: Path) -> None:
    k = SM["kacker2004"]
    src = tmp_path / "kacker.csv"
    pd.DataFrame(
        {"study": [f"lab{i}" for i in range(len(k["yi"]))], "yi": k["yi"], "vi": k["vi"]}
    ).to_csv(src, index=False)
    ref = next(f for f in k["fits"] if f["method"] == "PM" and f["test"] == "z")
    r = _run(
        [
            "meta",
            str(src),
            "-o",
            str(tmp_path / "o"),
            "--effect",
            "yi",
            "--variance",
            "vi",
            "--method",
            "PM",
        ]
    )
    np.testing.assert_allclose([r["estimate"], r["tau2"]], [ref["b"], ref["tau2"]], rtol=1e-6)


@pytest.mark.parametrize("measure", ["SMD", "SMDC", "MD"])
def test_meta_measures_from_means_equal_metafor_escalc(tmp_path: Path, measure: str) -> None:
    src = tmp_path / "raw.csv"
    ESC_IN.rename(columns={"case": "study"}).to_csv(src, index=False)
    out = tmp_path / "o"
    _run(["meta", str(src), "-o", str(out), "--measure", measure, "--method", "DL"])
    got = pd.read_csv(out / "studies.tsv", sep="\t").set_index("study_label")
    key = "MD" if measure == "MD" else "SMD"  # SMDC is metafor's SMD of change scores
    for c in ESC["cases"]:
        np.testing.assert_allclose(
            [got.loc[c["case"], "yi"], got.loc[c["case"], "vi"]],
            [c[key]["yi"], c[key]["vi"]],
            rtol=1e-5,  # studies.tsv holds 6 significant digits
        )


@pytest.mark.parametrize(("measure", "yk", "vk"), [("OR", "y_or", "v_or"), ("RR", "y_rr", "v_rr")])
def test_meta_measures_from_counts_equal_metafor_escalc(
    tmp_path: Path, measure: str, yk: str, vk: str
) -> None:
    f = SM["fine1993"]
    src = tmp_path / "fine.csv"
    pd.DataFrame({"events1": f["e2i"], "n1": f["nei"], "events2": f["c2i"], "n2": f["nci"]}).to_csv(
        src, index=False
    )
    out = tmp_path / "o"
    r = _run(["meta", str(src), "-o", str(out), "--measure", measure])
    got = pd.read_csv(out / "studies.tsv", sep="\t")
    np.testing.assert_allclose(got["yi"], f[yk], rtol=1e-5)
    np.testing.assert_allclose(got["vi"], f[vk], rtol=1e-5)
    api = meta_analysis(src, measure=measure)
    assert r["estimate"] == pytest.approx(api.fit.estimate, rel=1e-12)


@pytest.mark.parametrize("multiarm", ["split", "ignore"])
def test_meta_multiarm_through_cli(tmp_path: Path, multiarm: str) -> None:
    df = pd.DataFrame(
        {
            "study": ["A", "A", "B", "C", "D"],
            "control": ["wl", "wl", "wl", "wl", "wl"],
            "g": [0.5, 0.7, 0.3, 0.4, 0.6],
            "v": [0.04, 0.05, 0.03, 0.06, 0.05],
            "nc": [40, 40, 30, 50, 45],
        }
    )
    src = tmp_path / "m.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "o"
    r = _run(
        [
            "meta",
            str(src),
            "-o",
            str(out),
            "--effect",
            "g",
            "--variance",
            "v",
            "--study",
            "study",
            "--control",
            "control",
            "--n-control",
            "nc",
            "--multiarm",
            multiarm,
        ]
    )
    vi = pd.read_csv(out / "studies.tsv", sep="\t")["vi"].to_numpy()
    # Cochrane 23.3.4: two comparisons share study A's control of 40: + (2 - 1) / 40 each
    extra = 1 / 40 if multiarm == "split" else 0.0
    np.testing.assert_allclose(vi, df["v"] + [extra, extra, 0, 0, 0], rtol=1e-5)
    api = meta_analysis(
        src,
        effect="g",
        variance="v",
        study="study",
        control="control",
        n_control="nc",
        multiarm=multiarm,
    )
    assert r["estimate"] == pytest.approx(api.fit.estimate, rel=1e-12)


@pytest.mark.parametrize("method", ["DL", "REML"])
def test_nma_method_through_cli_equals_metafor_for_two_treatments(
    tmp_path: Path, method: str
) -> None:
    rows = GRID[GRID["case"] == "moderate_k20"]
    src = tmp_path / "net.csv"
    pd.DataFrame(
        {
            "study": [f"s{i}" for i in range(len(rows))],
            "treat1": "X",
            "treat2": "Y",
            "TE": rows["y"].to_numpy(),
            "seTE": np.sqrt(rows["v"].to_numpy()),
        }
    ).to_csv(src, index=False)
    r = _run(["nma", str(src), "-o", str(tmp_path / "o"), "--method", method, "--reference", "Y"])
    ref = _case("moderate_k20", method)
    np.testing.assert_allclose(r["tau2"], ref["tau2"], rtol=1e-5, atol=1e-8)
    est = {e["treatment"]: e["estimate"] for e in r["effects_vs_reference"]["random"]}
    np.testing.assert_allclose(est["X"], ref["beta"][0], rtol=1e-5)
    api = network_analysis(src, method_tau=method, reference="Y")
    assert r["tau2"] == pytest.approx(api.fit.tau2, rel=1e-12)


BCG = json.loads((DATA / "bcg_metafor_reference.json").read_text())
ALLOC = ["random"] * 4 + ["alternate"] * 2 + ["random"] * 3 + ["systematic"] * 4


def _bcg(tmp_path: Path) -> Path:
    d = BCG["data"]
    src = tmp_path / "bcg.csv"
    pd.DataFrame(
        {
            "study": [f"trial {i + 1}" for i in range(len(d["tpos"]))],
            "events1": d["tpos"],
            "n1": np.add(d["tpos"], d["tneg"]),
            "events2": d["cpos"],
            "n2": np.add(d["cpos"], d["cneg"]),
            "alloc": ALLOC,
        }
    ).to_csv(src, index=False)
    return src


def test_meta_regression_on_alloc_equals_metafor_documentation(tmp_path: Path) -> None:
    """metafor's documented ``rma(yi, vi, mods = ~ factor(alloc), data = dat.bcg)``."""
    ref = BCG["rma_mods_alloc"]
    r = _run(
        [
            "meta",
            str(_bcg(tmp_path)),
            "-o",
            str(tmp_path / "o"),
            "--measure",
            "RR",
            "--moderators",
            "alloc",
        ]
    )
    reg = r["meta_regression"]
    assert [c["name"] for c in reg["coefficients"]] == [
        "intrcpt",
        "alloc[random]",
        "alloc[systematic]",
    ]
    np.testing.assert_allclose([c["estimate"] for c in reg["coefficients"]], ref["beta"], atol=5e-5)
    np.testing.assert_allclose(
        [reg["tau2"], reg["QE"], reg["QM"], reg["QMp"]],
        [ref["tau2"], ref["QE"], ref["QM"], ref["QMp"]],
        atol=5e-5,
    )


def test_meta_fixed_effect_equals_metafor_documentation(tmp_path: Path) -> None:
    ref = BCG["rma_fe"]
    r = _run(
        [
            "meta",
            str(_bcg(tmp_path)),
            "-o",
            str(tmp_path / "o"),
            "--measure",
            "RR",
            "--method",
            "FE",
        ]
    )
    np.testing.assert_allclose(
        [r["estimate"], r["se"], r["QE"]], [ref["estimate"], ref["se"], ref["QE"]], atol=5e-5
    )


def test_result_objects_write_nothing_until_saved(tmp_path: Path) -> None:
    """``meta_analysis`` / ``network_analysis`` return objects that save and report themselves."""
    rows = GRID[GRID["case"] == "extreme_k10"]
    src = tmp_path / "studies.csv"
    rows.assign(study=[f"s{i}" for i in range(len(rows))]).to_csv(src, index=False)
    before = set(tmp_path.iterdir())
    res = meta_analysis(src, effect="y", variance="v", method="DL")
    assert set(tmp_path.iterdir()) == before  # fitting wrote nothing
    ref = _case("extreme_k10", "DL")
    assert res.to_dict()["estimate"] == pytest.approx(ref["beta"][0], rel=1e-9)
    assert f"{ref['beta'][0]:.4f}" in res._repr_html_()
    out = res.save(tmp_path / "o")
    assert json.loads((out / "results.json").read_text()) == res.to_dict()
    net_src = tmp_path / "net.csv"
    pd.DataFrame(
        {
            "study": [f"s{i}" for i in range(len(rows))],
            "treat1": "X",
            "treat2": "Y",
            "TE": rows["y"].to_numpy(),
            "seTE": np.sqrt(rows["v"].to_numpy()),
        }
    ).to_csv(net_src, index=False)
    net = network_analysis(net_src, reference="Y")
    assert "P-score" in net._repr_html_()
    # the meta folder is not the network's
    with pytest.raises(BrainmatchInputError, match="outputs of `brainmatch meta`"):
        net.save(out)
    net.save(tmp_path / "n")
    assert (tmp_path / "n" / "league_table.tsv").is_file()
