"""End to end on the simulator's truth: ``simulate --sessions 2`` -> ``extract`` -> ``change``.

The simulator's post-treatment scan raises medial prefrontal amplitude under therapy
and lowers amygdala amplitude under medication, in proportion to each patient's
improvement (``simulate/bids.py``); nothing else changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.simulate.images import AMYGDALA, MPFC

runner = CliRunner()


@pytest.fixture(scope="module")
def change_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # one process per step (--n-jobs 1): the outputs do not depend on it, and under
    # `pytest -n 2` worker pools only add their start-up (about 6 s of CPU) to busy cores
    root = tmp_path_factory.mktemp("change_sim")
    sim, feats, out = root / "bids", root / "features", root / "change"
    r = runner.invoke(
        app,
        ["simulate", str(sim), "--n-subjects", "40", "--sites", "2", "--arms", "CBT,SSRI",
         "--sessions", "2", "--resolution", "4", "--n-volumes", "80", "--seed", "3",
         "--followup", "--n-jobs", "1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        ["extract", str(sim), str(feats), "participant", "--derivatives",
         str(sim / "derivatives" / "fmriprep"), "--atlas", "desikan-killiany",
         "--connectivity", "correlation", "--n-jobs", "1"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app,
        ["change", "--features", str(feats / "features.parquet"), "--outcomes",
         str(sim / "participants.tsv"), "--outcomes", str(sim / "phenotype" / "outcomes.tsv"),
         "--treatment-column", "arm", "--site-column", "site", "--measures", "amp",
         "--outcome-column", "hamd_week8", "--baseline-column", "hamd_baseline",
         "--permutations", "39", "--out", str(out)],
    )  # fmt: skip
    # 39 permutations: the smallest FWE p is 1 / 40 = 0.025, so p_fwe < 0.05 stays attainable
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_extract_session_column_is_read(change_run: Path) -> None:
    res = json.loads((change_run / "results.json").read_text())
    assert res["sessions"] == ["pre", "post"]
    assert res["contrast"] == ["CBT", "SSRI"]
    assert res["atlas"] == "desikan-killiany"
    # the simulator's follow-up hook wrote the relapse table beside the outcomes
    followup = pd.read_csv(change_run.parent / "bids" / "phenotype" / "followup.tsv", sep="\t")
    assert {"relapse_weeks", "relapse"} <= set(followup.columns)


@pytest.mark.slow
def test_simulated_truth_recovered(change_run: Path) -> None:
    t = pd.read_csv(change_run / "change.tsv", sep="\t")
    truth = set(MPFC) | set(AMYGDALA)
    assert set(t["region"]) >= truth  # region names as in the atlas
    ch = t[t["effect"] == "change"].set_index(["region", "arm"])
    # therapy raises medial prefrontal amplitude (FDR), in every mPFC region
    assert all(ch.loc[(r, "CBT"), "estimate"] > 0 for r in MPFC)
    assert min(ch.loc[(r, "CBT"), "p_fdr"] for r in MPFC) < 0.05
    # medication lowers amygdala amplitude (the sign; 20 patients per arm is little power)
    assert sum(ch.loc[(r, "SSRI"), "estimate"] for r in AMYGDALA) < 0
    con = t[t["effect"] == "contrast"].set_index("region")
    # the strongest arm-by-time interaction is a truth region, in the right direction
    top = con.sort_values("p").iloc[0]
    assert top.name in truth and top["estimate"] > 0 and top["p"] < 1e-3
    fwe = con[con["p_fwe"] < 0.05]
    assert set(fwe.index) <= truth and (fwe["estimate"] > 0).all()
    # the family-wise claim: nothing outside the truth regions (above); FDR allows a
    # proportion of false discoveries, which stays small
    fdr = t[(t["effect"].isin(["change", "interaction", "contrast"])) & (t["p_fdr"] < 0.05)]
    false = fdr[~fdr["region"].isin(truth)]
    assert len(fdr) >= 4 and len(false) / len(fdr) <= 0.25
    res = json.loads((change_run / "results.json").read_text())
    assert set(res["routes"]["CBT"]["regions"]) <= set(MPFC)
    assert (change_run / "desc-change_glassbrain.svg").exists()
