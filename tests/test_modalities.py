"""The modality knowledge base: schema, sources, matching, and ``brainmatch modalities``."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.circuits import CIRCUITS
from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.modalities import circuit_hypotheses, load_knowledge_base, validate

REQUIRED = {
    "cbt",
    "psychodynamic",
    "emdr",
    "dbt",
    "mindfulness",
    "exposure",
    "exposure_dcs",
    "behavioural_activation",
    "ssri",
    "other_antidepressants",
    "rtms",
    "psychedelic",
    "exercise",
    "sleep_circadian",
}


def test_shipped_knowledge_base_is_valid_and_complete():
    kb = load_knowledge_base()
    assert {m["key"] for m in kb.modalities} == REQUIRED
    links = kb.links()
    # every non-claim link has a DOI, every claim none
    assert (links.loc[links.evidence != "claim", "doi"].str.startswith("10.")).all()
    assert (links.loc[links.evidence == "claim", "doi"] == "").all()
    # the systems the issue names are covered
    systems = " ".join(links["system"])
    for s in ("serotonin", "dopamine", "cortisol", "glutamate"):
        assert s in systems
    # the published anchors of SCIENCE.md are there with their DOIs
    dois = set(links["doi"])
    assert {"10.1192/bjp.2021.16", "10.1001/jamapsychiatry.2013.143"} <= dois
    assert set(links.loc[links.circuit != "", "circuit"]) <= set(CIRCUITS)


def test_schema_refuses_bad_entries(tmp_path):
    kb = load_knowledge_base()
    bad = copy.deepcopy(kb.data)
    bad["modalities"][0]["targets"][0]["doi"] = None
    with pytest.raises(BrainmatchInputError, match="needs a DOI"):
        validate(bad)
    bad = copy.deepcopy(kb.data)
    bad["modalities"][1]["targets"][0]["doi"] = "10.1/x"  # a claim with a DOI
    with pytest.raises(BrainmatchInputError, match="cannot carry a DOI"):
        validate(bad)
    bad = copy.deepcopy(kb.data)
    bad["modalities"][0]["targets"][0]["circuit"] = "nowhere"
    with pytest.raises(BrainmatchInputError, match="unknown circuit 'nowhere'"):
        validate(bad)
    bad = copy.deepcopy(kb.data)
    bad["schema_version"] = 99
    path = tmp_path / "kb.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(BrainmatchInputError, match="schema_version 99"):
        load_knowledge_base(path)


def _scores(rows):
    return pd.DataFrame(
        [
            {
                "circuit": c,
                "circuit_label": CIRCUITS[c].label,
                "score": s,
                "mean_z": z,
                "se": 0.3,
                "call": call,
            }
            for c, s, z, call in rows
        ]
    )


def test_hypotheses_follow_the_direction_of_the_deviation():
    kb = load_knowledge_base()
    low = circuit_hypotheses(_scores([("frontolimbic", "activity", -1.6, "under-active")]), kb)
    mods = {h["modality"] for h in low}
    assert {"cbt", "dbt"} <= mods  # reported to raise prefrontal control
    high = circuit_hypotheses(_scores([("frontolimbic", "activity", 1.6, "hyper-active")]), kb)
    assert "dbt" in {h["modality"] for h in high}  # lowers amygdala activity
    assert "cbt" not in {h["modality"] for h in high if h["link"] == "target"}
    # a low insula (salience) activity is the McGrath 2013 marker for CBT, high for SSRI
    ins_low = circuit_hypotheses(_scores([("salience", "activity", -1.5, "under-active")]), kb)
    ins_high = circuit_hypotheses(_scores([("salience", "activity", 1.5, "hyper-active")]), kb)
    assert [h["modality"] for h in ins_low if h["link"] == "predictor"] == ["cbt"]
    assert [h["modality"] for h in ins_high if h["link"] == "predictor"] == ["ssri"]
    # grades sort first
    grades = [h["grade"] for h in low]
    assert grades == sorted(grades)
    # nothing called, nothing matched
    assert circuit_hypotheses(_scores([("reward", "activity", -0.2, "")]), kb) == []


@pytest.mark.parametrize("fmt", ["table", "tsv", "json"])
def test_cli_lists_the_knowledge_base(fmt):
    res = CliRunner().invoke(app, ["modalities", "--format", fmt, "--modality", "rtms"])
    assert res.exit_code == 0, res.output
    if fmt != "table":  # the table wraps long cells
        assert "10.1016/j.biopsych.2012.04.028" in res.output
    else:
        assert "rTMS" in res.output
    if fmt == "json":
        data = json.loads(res.output)
        assert [m["key"] for m in data["modalities"]] == ["rtms"]
    if fmt == "tsv":
        table = pd.read_csv(pd.io.common.StringIO(res.output), sep="\t")
        assert set(table["modality"]) == {"rtms"}
        assert len(table) == len(load_knowledge_base().links().query("modality == 'rtms'"))


def test_cli_bad_options():
    res = CliRunner().invoke(app, ["modalities", "--modality", "homeopathy"])
    assert res.exit_code == 2 and "--modality 'homeopathy'" in res.output
    res = CliRunner().invoke(app, ["modalities", "--format", "xml"])
    assert res.exit_code == 2 and "--format 'xml'" in res.output
