"""Trim-and-fill against metafor's printed ``trimfill()`` output on dat.bcg.

Reference: the examples of metafor's ``trimfill`` help page as rendered with their
output on the metafor website (``docs/reference/trimfill.html`` in
github.com/wviechtb/metafor, commit 0014f62), pinned in
``tests/data/meta/metafor_trimfill_bcg.json``:

- equal-effects (``method = "EE"``, brainmatch ``FE``): 4 studies missing on the right
  (SE 2.3853), the four filled log risk ratios and variances, and the refitted model;
- random-effects (REML): 1 study missing on the right (SE 2.4528) and the refitted model;
- the "equal-random" approach (fill with the equal-effects model, then fit REML to the
  filled data).

Each value is compared at the precision metafor printed it, through the Python API and
through ``brainmatch meta``.  The data are metafor's ``dat.bcg`` (Colditz et al. 1994),
already shipped in ``tests/data/meta/bcg_metafor_reference.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.evidence.meta import MetaResult, rma, trim_and_fill

DATA = Path(__file__).parent / "data" / "meta"
BCG = json.loads((DATA / "bcg_metafor_reference.json").read_text())["data"]
REF = json.loads((DATA / "metafor_trimfill_bcg.json").read_text())


def _r(x: float, digits: int) -> str:
    s = f"{float(x):.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def _printed(value: float, got: float, digits: int = 4) -> None:
    assert _r(got, digits) == _r(value, digits), (got, value)


def _bcg_log_rr() -> tuple[np.ndarray, np.ndarray]:
    """``escalc(measure="RR", ...)``: log risk ratio and its large-sample variance."""
    a, b, c, d = (np.asarray(BCG[k], dtype=float) for k in ("tpos", "tneg", "cpos", "cneg"))
    yi = np.log(a / (a + b)) - np.log(c / (c + d))
    vi = 1 / a - 1 / (a + b) + 1 / c - 1 / (c + d)
    return yi, vi


def _refit(tf: dict[str, Any], method: str) -> MetaResult:
    yi, vi = _bcg_log_rr()
    return rma(np.r_[yi, tf["yi_fill"]], np.r_[vi, tf["vi_fill"]], method=method)


def _check_model(fit: MetaResult, ref: dict[str, Any]) -> None:
    assert fit.k == ref["k"]
    for key, got in (
        ("estimate", fit.estimate),
        ("se", fit.se[0]),
        ("ci_lb", fit.ci_lb[0]),
        ("ci_ub", fit.ci_ub[0]),
        ("QE", fit.QE),
    ):
        _printed(ref[key], got)
    _printed(ref["zval"], fit.estimate / fit.se[0])
    _printed(ref["I2"], fit.I2, 2)
    _printed(ref["H2"], fit.H2, 2)
    if "tau2" in ref:
        _printed(ref["tau2"], fit.tau2)
        _printed(ref["tau"], np.sqrt(fit.tau2))
    if "pval" in ref:
        _printed(ref["pval"], fit.pval[0])


def test_equal_effects_trimfill_fills_four_studies_on_the_right() -> None:
    ref = REF["equal_effects"]
    yi, vi = _bcg_log_rr()
    tf = trim_and_fill(rma(yi, vi, method="FE"))
    assert (tf["side"], tf["k0"]) == (ref["side"], ref["k0"])
    _printed(ref["se_k0"], tf["se_k0"])  # "4 (SE = 2.3853)"
    # the filled data frame metafor prints (8 decimals)
    np.testing.assert_allclose(tf["yi_fill"], ref["filled_yi"], atol=5e-9)
    np.testing.assert_allclose(tf["vi_fill"], ref["filled_vi"], atol=5e-10)
    for key in ("estimate", "se", "ci_lb", "ci_ub"):
        _printed(ref[key], tf[key])
    _check_model(_refit(tf, "FE"), ref)


def test_random_effects_trimfill_fills_one_study_on_the_right() -> None:
    ref = REF["random_effects"]
    yi, vi = _bcg_log_rr()
    tf = trim_and_fill(rma(yi, vi, method="REML"))
    assert (tf["side"], tf["k0"]) == (ref["side"], ref["k0"])
    _printed(ref["se_k0"], tf["se_k0"])  # "1 (SE = 2.4528)"
    for key in ("estimate", "se", "ci_lb", "ci_ub", "tau2"):
        _printed(ref[key], tf[key])
    _check_model(_refit(tf, "REML"), ref)


def test_equal_random_approach() -> None:
    """Fill with the equal-effects model, then fit a REML random-effects model."""
    yi, vi = _bcg_log_rr()
    tf = trim_and_fill(rma(yi, vi, method="FE"))
    _check_model(_refit(tf, "REML"), REF["equal_random"])


def test_side_given_explicitly_is_honoured() -> None:
    # metafor picks "right" from the regression test; forcing it gives the same fill
    yi, vi = _bcg_log_rr()
    res = rma(yi, vi, method="FE")
    forced = trim_and_fill(res, side="right")
    auto = trim_and_fill(res)
    assert forced["k0"] == REF["equal_effects"]["k0"]
    assert forced["yi_fill"] == auto["yi_fill"]


def _bcg_counts() -> pd.DataFrame:
    n1 = np.add(BCG["tpos"], BCG["tneg"])
    n2 = np.add(BCG["cpos"], BCG["cneg"])
    return pd.DataFrame(
        {
            "study": [f"trial {i + 1}" for i in range(len(n1))],
            "events1": BCG["tpos"],
            "n1": n1,
            "events2": BCG["cpos"],
            "n2": n2,
        }
    )


@pytest.mark.parametrize(
    ("method", "ref_key"), [("FE", "equal_effects"), ("REML", "random_effects")]
)
def test_cli_meta_reports_metafor_trimfill(tmp_path: Path, method: str, ref_key: str) -> None:
    """``brainmatch meta --measure RR --method FE|REML`` on the event counts: exit 0 and
    results.json's trimfill block equal to metafor's printout."""
    src = tmp_path / "bcg.csv"
    _bcg_counts().to_csv(src, index=False)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app, ["meta", str(src), "--out", str(out), "--measure", "RR", "--method", method]
    )
    assert r.exit_code == 0, r.output
    tf = json.loads((out / "results.json").read_text())["trimfill"]
    ref = REF[ref_key]
    assert (tf["side"], tf["k0"]) == (ref["side"], ref["k0"])
    for key in ("se_k0", "estimate", "se", "ci_lb", "ci_ub"):
        _printed(ref[key], tf[key])
