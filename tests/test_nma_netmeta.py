"""Network meta-analysis against netmeta's own printed output (Stowe2010).

Reference: the worked example 1 of netmeta's vignette, Balduzzi S, Rücker G,
Nikolakopoulou A, Papakonstantinou T, Salanti G, Efthimiou O, Schwarzer G (2023).
"netmeta: An R Package for Network Meta-Analysis Using Frequentist Methods",
J Stat Softw 106(2), doi:10.18637/jss.v106.i02, pp. 19-25 (shipped as
``vignettes/netmeta.pdf`` in github.com/guido-s/netmeta, commit 2892f4a). It runs

    pw1 <- pairwise(treat = list(t1, t2, t3), n = list(n1, n2, n3),
                    mean = list(y1, y2, y3), sd = list(sd1, sd2, sd3),
                    studlab = study, data = Stowe2010)
    net1 <- netmeta(pw1, common = FALSE, ref = "plac")
    net1; netrank(net1); netleague(net1); decomp.design(net1)

on netmeta's ``Stowe2010`` data (Cochrane review of adjuvant treatments to levodopa in
Parkinson's disease: 28 two-arm studies and the three-arm LARGO study, mean off-time
reduction in hours per day; ``tests/data/netmeta/stowe2010.tsv``, see
``tests/data/netmeta/README.md``).  Every number below is copied from that printout and
compared at the precision it was printed with (rounded the way R prints it), through
the Python API and through ``brainmatch nma``.

``pairwise()`` for a mean difference is the textbook contrast
(``TE = mean1 - mean2``, ``seTE = sqrt(sd1^2/n1 + sd2^2/n2)``); the vignette prints five
of its rows, which ``test_contrasts_equal_pairwise_rows`` checks first, so the input is
pinned as well as the output.

The vignette's worked example 3 (section 5.3, pp. 29-31) is pinned as well: netmeta's
``Baker2009`` (38 trials of treatments for COPD, binary outcome, 6 four-arm and 4
three-arm trials; ``tests/data/netmeta/baker2009.tsv``),

    pw3 <- pairwise(treat = treatment, n = total, event = exac,
                    studlab = paste(study, year), data = Baker2009, sm = "OR")
    net3 <- netmeta(pw3, common = FALSE, ref = "plac"); net3

with ``pairwise``'s defaults for odds ratios (1/2 added to every cell of a study with a
zero cell; ``DalNegro 2003``, with events in every patient of every arm, carries no
information and is dropped, as netmeta reports).  Its many multi-arm studies test the
multi-arm covariance and netmeta's multi-arm tau^2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.evidence.effects import log_odds_ratio
from brainmatch.evidence.nma import NMAResult, network_meta_analysis

DATA = Path(__file__).parent / "data" / "netmeta" / "stowe2010.tsv"
BAKER = Path(__file__).parent / "data" / "netmeta" / "baker2009.tsv"
PLAC, COMTI, DA, MAOBI = "Placebo", "COMTI", "Dopamine Agonist", "MAOBI"

# net1 (random effects, vs 'Placebo'): MD, 95%-CI, z, p-value
PRINTED_VS_PLACEBO = {
    COMTI: ("-0.95", "-1.27", "-0.63", "-5.79"),
    DA: ("-1.49", "-1.86", "-1.12", "-7.88"),
    MAOBI: ("-1.03", "-1.56", "-0.50", "-3.81"),
}
# Figure 5 (random effects, active treatment vs every other): MD [95%-CI]
PRINTED_PAIRS = {
    (COMTI, DA): ("0.55", "0.06", "1.04"),
    (COMTI, MAOBI): ("0.09", "-0.49", "0.67"),
    (DA, COMTI): ("-0.55", "-1.04", "-0.06"),
    (DA, MAOBI): ("-0.46", "-1.11", "0.19"),
    (MAOBI, COMTI): ("-0.09", "-0.67", "0.49"),
    (MAOBI, DA): ("0.46", "-0.19", "1.11"),
}
PRINTED_PSCORES = {DA: "0.9677", MAOBI: "0.5664", COMTI: "0.4659", PLAC: "0.0000"}
# decomp.design(net1): Q, df, p-value
PRINTED_Q = {
    "total": ("48.15", 27, "0.0074"),
    "within": ("46.91", 25, "0.0050"),
    "between": ("1.24", 2, "0.5376"),
}
PRINTED_DESIGNS = {  # design-specific within-design Q
    frozenset({PLAC, COMTI}): ("23.65", 10, "0.0086"),
    frozenset({PLAC, DA}): ("21.70", 14, "0.0850"),
    frozenset({PLAC, MAOBI}): ("1.56", 1, "0.2114"),
}


def _r(x: float, digits: int) -> str:
    """Format as R prints a rounded number (``-0.00`` is printed as ``0.00``)."""
    s = f"{x:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def _contrasts() -> pd.DataFrame:
    """netmeta's ``pairwise()`` for sm = "MD": every pair of arms within a study."""
    raw = pd.read_csv(DATA, sep="\t")
    rows = []
    for _, r in raw.iterrows():
        arms = [
            (r[f"t{i}"], r[f"y{i}"], r[f"sd{i}"], r[f"n{i}"])
            for i in (1, 2, 3)
            if isinstance(r[f"t{i}"], str)
        ]
        for i in range(len(arms)):
            for j in range(i + 1, len(arms)):
                (t1, y1, s1, n1), (t2, y2, s2, n2) = arms[i], arms[j]
                rows.append(
                    {
                        "study": r["study"],
                        "treat1": t1,
                        "treat2": t2,
                        "TE": y1 - y2,
                        "seTE": float(np.sqrt(s1**2 / n1 + s2**2 / n2)),
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def net1() -> NMAResult:
    return network_meta_analysis(_contrasts(), reference=PLAC, larger_is_better=False)


def test_contrasts_equal_pairwise_rows() -> None:
    """The five rows of ``pw1`` the vignette prints (TE, seTE to 7 digits)."""
    c = _contrasts().set_index(["study", "treat1", "treat2"])
    printed = {
        ("COMTI(E) INT-OZ", COMTI, PLAC): ("-0.32", "0.4903630"),
        ("LARGO", COMTI, PLAC): ("-0.80", "0.2116796"),
        ("LARGO", COMTI, MAOBI): ("-0.02", "0.2116709"),
        ("LARGO", PLAC, MAOBI): ("0.78", "0.2116709"),
        ("COMTI(E) Nomecomt", COMTI, PLAC): ("-1.20", "0.3560024"),
    }
    for key, (te, se) in printed.items():
        assert (_r(c.loc[key, "TE"], 2), _r(c.loc[key, "seTE"], 7)) == (te, se), key
    assert len(c) == 31  # "a data frame with 31 rows"


def test_network_size(net1: NMAResult) -> None:
    # k = 29 studies, m = 31 pairwise comparisons, n = 4 treatments, d = 4 designs
    assert net1.n_studies == 29 and net1.n_multiarm == 1
    assert len(net1.treatments) == 4
    assert len(net1.design_Q["within_designs"]) == 4
    assert net1.df == 31 - (4 - 1) - 1  # m - (n - 1) - (extra df of the 3-arm study)


def test_random_effects_versus_placebo(net1: NMAResult) -> None:
    for t, (md, lo, hi, z) in PRINTED_VS_PLACEBO.items():
        c = net1.comparison(t, PLAC, "random")
        got = (_r(c["estimate"], 2), _r(c["ci_lb"], 2), _r(c["ci_ub"], 2))
        assert got == (md, lo, hi), t
        assert _r(c["estimate"] / c["se"], 2) == z, t
    # MAOBI p-value printed as 0.0001, the other two as < 0.0001
    assert _r(net1.comparison(MAOBI, PLAC)["pval"], 4) == "0.0001"
    assert net1.comparison(COMTI, PLAC)["pval"] < 1e-4
    assert net1.comparison(DA, PLAC)["pval"] < 1e-4


def test_every_pairwise_network_estimate(net1: NMAResult) -> None:
    for (a, b), (md, lo, hi) in PRINTED_PAIRS.items():
        c = net1.comparison(a, b, "random")
        assert (_r(c["estimate"], 2), _r(c["ci_lb"], 2), _r(c["ci_ub"], 2)) == (md, lo, hi)


def test_heterogeneity(net1: NMAResult) -> None:
    # tau^2 = 0.1518; tau = 0.3896; I^2 = 43.9%
    assert _r(net1.tau2, 4) == "0.1518"
    assert _r(np.sqrt(net1.tau2), 4) == "0.3896"
    assert _r(net1.I2, 1) == "43.9"


def test_design_by_treatment_decomposition(net1: NMAResult) -> None:
    d = net1.design_Q
    got = {
        "total": (_r(net1.Q, 2), net1.df, _r(net1.pval_Q, 4)),
        "within": (_r(d["Q_het"], 2), d["df_het"], _r(d["p_het"], 4)),
        "between": (_r(d["Q_inc"], 2), d["df_inc"], _r(d["p_inc"], 4)),
    }
    assert got == PRINTED_Q
    for row in d["within_designs"]:
        key = frozenset(row["design"].split(":"))
        if key in PRINTED_DESIGNS:
            q, df, p = PRINTED_DESIGNS[key]
            assert (_r(row["Q"], 2), row["df"]) == (q, df), key
            assert _r(stats.chi2.sf(row["Q"], row["df"]), 4) == p, key


def test_between_designs_q_under_full_interaction_random_effects(net1: NMAResult) -> None:
    """``Q ... under the assumption of a full design-by-treatment interaction random
    effects model``: Q = 0.45, df = 2, p = 0.7968, tau.within = 0.4547, tau2.within =
    0.2067 (netmeta's ``decomp.design``; before issue 19 brainmatch used the consistency
    model's tau^2 here and printed 0.54, p = 0.76)."""
    d = net1.design_Q
    assert _r(d["Q_inc_random"], 2) == "0.45"
    assert _r(d["p_inc_random"], 4) == "0.7968"
    assert _r(d["tau2_within"], 4) == "0.2067"
    assert _r(np.sqrt(d["tau2_within"]), 4) == "0.4547"


def test_pscores(net1: NMAResult) -> None:
    got = {t: _r(p, 4) for t, p in net1.pscore_random.items()}
    assert got == PRINTED_PSCORES


def test_league_table_network_estimates(net1: NMAResult) -> None:
    """``netleague(net1, seq = netrank(net1), ci = FALSE)``, lower triangle (network
    estimates of the column treatment versus the row treatment)."""
    seq = [DA, MAOBI, COMTI, PLAC]
    printed_lower = {
        (MAOBI, DA): "-0.46",
        (COMTI, DA): "-0.55",
        (COMTI, MAOBI): "-0.09",
        (PLAC, DA): "-1.49",
        (PLAC, MAOBI): "-1.03",
        (PLAC, COMTI): "-0.95",
    }
    for (row, col), md in printed_lower.items():
        assert seq.index(row) > seq.index(col)
        assert _r(net1.comparison(col, row, "random")["estimate"], 2) == md


def test_cli_nma_equals_netmeta_printout(tmp_path: Path) -> None:
    """``brainmatch nma`` on the same contrasts: exit 0, the printed tau^2 and Q on the
    console, and results.json holding netmeta's numbers."""
    table = tmp_path / "stowe2010_contrasts.tsv"
    _contrasts().to_csv(table, sep="\t", index=False)
    out = tmp_path / "nma"
    r = CliRunner().invoke(
        app,
        ["nma", str(table), "--out", str(out), "--reference", PLAC, "--better", "lower"],
    )
    assert r.exit_code == 0, r.output
    assert "0.1518" in r.output and "48.15" in r.output
    res = json.loads((out / "results.json").read_text())
    assert _r(res["tau2"], 4) == "0.1518"
    assert (_r(res["Q"], 2), res["df"]) == ("48.15", 27)
    eff = {e["treatment"]: e for e in res["effects_vs_reference"]["random"]}
    for t, (md, lo, hi, _z) in PRINTED_VS_PLACEBO.items():
        e = eff[t]
        assert (_r(e["estimate"], 2), _r(e["ci_lb"], 2), _r(e["ci_ub"], 2)) == (md, lo, hi)
        assert _r(e["pscore"], 4) == PRINTED_PSCORES[t]
    d = res["design_by_treatment"]
    assert (_r(d["Q_inc"], 2), _r(d["Q_inc_random"], 2)) == ("1.24", "0.45")


# ---------------------------------------------------------------- Baker2009 (net3)

# net3 (random effects, vs 'Placebo'): OR, 95%-CI, z, p-value ("< 0.0001" as None)
PRINTED_NET3 = {
    "Budesonide": ("0.80", "0.59", "1.10", "-1.37", "0.1702"),
    "Budesonide+Formoterol": ("0.67", "0.49", "0.90", "-2.63", "0.0086"),
    "Fluticasone": ("0.86", "0.75", "0.99", "-2.05", "0.0406"),
    "Fluticasone+Salmeterol": ("0.75", "0.66", "0.86", "-4.17", None),
    "Formoterol": ("1.00", "0.80", "1.25", "-0.00", "1.0000"),
    "Salmeterol": ("0.80", "0.72", "0.89", "-4.06", None),
    "Tiotropium": ("0.69", "0.61", "0.77", "-6.39", None),
}


def _baker_contrasts() -> pd.DataFrame:
    """``pairwise(..., sm = "OR")``: log odds ratios of every pair of arms of a study."""
    d = pd.read_csv(BAKER, sep="\t")
    d["studlab"] = d["study"] + " " + d["year"].astype(str)
    rows = []
    for lab, g in d.groupby("studlab", sort=False):
        ev = g["exac"].to_numpy(dtype=float)
        n = g["total"].to_numpy(dtype=float)
        if np.all((ev == 0) | (ev == n)):
            continue  # no information: netmeta drops it ("TE NA")
        trt = g["treatment"].tolist()
        for i in range(len(trt)):
            for j in range(i + 1, len(trt)):
                yi, vi = log_odds_ratio([ev[i]], [n[i]], [ev[j]], [n[j]])
                rows.append(
                    {
                        "study": lab,
                        "treat1": trt[i],
                        "treat2": trt[j],
                        "TE": float(yi[0]),
                        "seTE": float(np.sqrt(vi[0])),
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def net3() -> NMAResult:
    return network_meta_analysis(_baker_contrasts(), reference=PLAC, larger_is_better=False)


def test_net3_network_size(net3: NMAResult) -> None:
    # k = 38 studies, m = 74 pairwise comparisons, n = 8 treatments, d = 13 designs
    assert net3.n_studies == 38 and len(_baker_contrasts()) == 74
    assert len(net3.treatments) == 8
    assert len(net3.design_Q["within_designs"]) == 13


def test_net3_odds_ratios_versus_placebo(net3: NMAResult) -> None:
    for t, (or_, lo, hi, z, p) in PRINTED_NET3.items():
        c = net3.comparison(t, PLAC, "random")
        got = (_r(np.exp(c["estimate"]), 2), _r(np.exp(c["ci_lb"]), 2), _r(np.exp(c["ci_ub"]), 2))
        assert got == (or_, lo, hi), t
        zz = c["estimate"] / c["se"]
        assert f"{zz:.2f}" == z or _r(zz, 2) == z, t  # R prints -0.00 for a tiny negative z
        if p is None:
            assert c["pval"] < 1e-4, t
        else:
            assert _r(c["pval"], 4) == p, t


def test_net3_heterogeneity_and_inconsistency(net3: NMAResult) -> None:
    # tau^2 = 0.0111; tau = 0.1055; I^2 = 24.4%
    assert (_r(net3.tau2, 4), _r(np.sqrt(net3.tau2), 4), _r(net3.I2, 1)) == (
        "0.0111",
        "0.1055",
        "24.4",
    )
    d = net3.design_Q
    got = {
        "total": (_r(net3.Q, 2), net3.df, _r(net3.pval_Q, 4)),
        "within": (_r(d["Q_het"], 2), d["df_het"], _r(d["p_het"], 4)),
        "between": (_r(d["Q_inc"], 2), d["df_inc"], _r(d["p_inc"], 4)),
    }
    assert got == {
        "total": ("60.86", 46, "0.0700"),
        "within": ("43.20", 34, "0.1340"),
        "between": ("17.66", 12, "0.1264"),
    }
