"""The report base: every report moved onto it (train, recommend, cbma, meta) carries the
shared stylesheet, prints p-values as ``p < 0.001`` rather than ``0`` and never a float
with 16 digits or a raw Python dictionary.  References: the formatter's documented
behaviour (``p < 0.001``, three decimals) and the reports rendered from real result objects.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import numpy as np
import pytest

from brainmatch.reports import fmt_p, fmt_value, p_text, readable_text, render
from brainmatch.reports.cbma import write_report as write_cbma_report
from brainmatch.reports.normative import write_fit_report, write_score_report
from brainmatch.reports.selection import write_recommend_report, write_train_report

MARKER = 'id="brainmatch-report-base"'
NIDM_PAIN = Path(str(importlib.resources.files("nimare") / "resources" / "nidm_pain_dset.json"))

_SVG = re.compile(r"<svg.*?</svg>", re.S)
_URI = re.compile(r"data:[a-z/+]+;base64,[A-Za-z0-9+/=]+")
_ZERO_P = re.compile(r"\bp\s*(?:=|:)?\s*0(?:\.0+)?(?![\d.])|<td>0\.000</td>")
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{7,}")


def _check_report(html: str) -> str:
    """Assert the report-base invariants; return the text without figures."""
    assert MARKER in html, "report does not use the shared stylesheet (base.html)"
    text = _URI.sub("", _SVG.sub("", html))  # figures carry their own <style>
    assert text.count("<style") == 1, "a second stylesheet next to the shared one"
    assert not _ZERO_P.search(text), _ZERO_P.search(text)
    assert not _LONG_FLOAT.search(text), _LONG_FLOAT.search(text)
    assert "{'" not in text and "{&#39;" not in text, "raw Python dict in the report"
    assert 'src="http' not in text and 'href="http' not in text and "<link" not in text
    return text


def test_formatter_never_prints_zero_or_sixteen_digits():
    assert fmt_p(0.0) == "< 0.001" and p_text(0.0) == "p < 0.001"
    assert p_text(0.0312) == "p = 0.031" and fmt_p(float("nan")) == "n/a"
    assert fmt_value(0.1 + 0.2) == "0.300"
    assert fmt_value(np.float32(1e-9)) == "1.00e-09"
    assert fmt_value({"CBT": 60, "SSRI": np.int64(52)}) == "CBT: 60, SSRI: 52"
    assert fmt_value([0.123456789, None, np.bool_(True)]) == "[0.123, n/a, yes]"
    # a sentence built by analysis code from raw values becomes readable
    raw = (
        "100 participants with an outcome; per arm {'CBT': 48, 'SSRI': 52}; "
        "policy gain 0.30000000000000004 (CI [-0.123456789, 1.5]; bootstrap); "
        "permutation p=0.004975124378109453"
    )
    assert readable_text(raw) == (
        "100 participants with an outcome; per arm CBT: 48, SSRI: 52; "
        "policy gain 0.300 (CI [-0.123, 1.500]; bootstrap); permutation p = 0.005"
    )
    assert readable_text("permutation p=0.0; d=1e-09") == "permutation p < 0.001; d=1.00e-09"
    assert readable_text("a (plain) remark, {not a dict}") == "a (plain) remark, {not a dict}"


def test_checker_catches_what_it_should():
    """The invariants above are not vacuous: a page built without the base fails them."""
    bad = "<html><style>body{}</style><p>p = 0</p><td>0.1234567891234</td></html>"
    with pytest.raises(AssertionError):
        _check_report(bad)
    good = render("base.html")
    _check_report(good)
    with pytest.raises(AssertionError):
        _check_report(good.replace("</body>", "<p>permutation p = 0.000</p></body>"))
    with pytest.raises(AssertionError):
        _check_report(good.replace("</body>", "<p>{'CBT': 1}</p></body>"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from brainmatch.selection import train
    from brainmatch.simulate import TrialSpec, draw_trial
    from brainmatch.validation.synthetic import measured_features, outcome_table

    out = tmp_path_factory.mktemp("model")
    trial = draw_trial(TrialSpec(n_subjects=160, n_sites=2, effect_size=1.2, seed=3))
    f = measured_features(trial, n_noise=10, reliability=0.9, seed=3)
    o = outcome_table(trial)
    res = train(
        f,
        o,
        treatment_column="arm",
        outcome_column="hamd_week8",
        baseline_column="hamd_baseline",
        site_column="site",
        out_dir=out,
        n_repeats=1,
        n_permutations=49,
        n_boot=100,
        learning_curve=False,
    )
    write_train_report(res)
    return res, f.merge(o[["participant_id", "site", "age", "sex", "hamd_baseline"]])


def test_train_report_on_the_base(trained):
    res, _ = trained
    text = _check_report((res.out_dir / "report.html").read_text())
    assert "TRIPOD" in text
    counts = ", ".join(f"{a}: {n}" for a, n in res.metrics["n_per_arm"].items())
    assert f"per arm {counts}" in text  # the TRIPOD row reads as text, not a dict


def test_recommend_report_on_the_base(trained, tmp_path):
    from brainmatch.selection import recommend

    res, new = trained
    write_recommend_report(recommend(res.model_path, new.head(2), tmp_path))
    text = _check_report((tmp_path / "report.html").read_text())
    assert "Treatment recommendation for" in text and "permutation p" in text


def test_cbma_report_on_the_base(tmp_path):
    from brainmatch.evidence.cbma import run_cbma

    res = run_cbma(NIDM_PAIN, iterations=5, random_state=3)
    res.save(tmp_path)
    write_cbma_report(res, tmp_path)
    text = _check_report((tmp_path / "report.html").read_text())
    assert "Coordinate-based meta-analysis" in text and '<div class="table-wrap">' in text


def test_normative_reports_on_the_base(tmp_path):
    from brainmatch.normative import fit_normative, score_normative
    from brainmatch.simulate.controls import draw_cohort

    cohort = draw_cohort(300, 100, n_sites=2, seed=4, connectivity=False)
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    fit = fit_normative(
        tab[tab.group == "control"], covariate_columns=("age", "sex"), site_column="site", seed=1
    )
    path = fit.save(tmp_path / "norm")
    write_fit_report(fit, tmp_path / "norm" / "report.html")
    text = _check_report((tmp_path / "norm" / "report.html").read_text())
    assert "Normative model" in text
    scores = score_normative(path, tab[tab.group != "control"].head(5))
    scores.save(tmp_path / "scores")
    write_score_report(scores, tmp_path / "scores" / "report.html")
    text = _check_report((tmp_path / "scores" / "report.html").read_text())
    assert "Normative deviations" in text


def test_sessions_report_on_the_base(tmp_path):
    from brainmatch.reports.sessions import write_report
    from brainmatch.sessions import SessionTrialSpec, analyse_sessions, draw_session_trial

    trial = draw_session_trial(SessionTrialSpec(n_per_arm=30, seed=11, effect_size=2.0))
    res = analyse_sessions(trial.sessions)
    out = res.save(tmp_path / "res")
    html = write_report(res, out).read_text()
    text = _check_report(html)
    assert "Moderators" in text and html.count('src="data:image/png;base64,') >= 1
    assert '<img src="trajectories.png"' not in html  # figures embedded, not linked


def test_write_report_renders_a_saved_result_and_records_it(tmp_path):
    """``.save`` writes the data only; ``reports.write_report`` adds the report, which the
    folder's manifest records as the command's own file (a rerun of ``meta`` accepts it)."""
    import pandas as pd
    from typer.testing import CliRunner

    from brainmatch._outdir import read_manifest
    from brainmatch.cli.main import app
    from brainmatch.evidence import meta_analysis
    from brainmatch.reports import write_report

    src = tmp_path / "studies.csv"
    pd.DataFrame(
        {
            "study": [f"s{i}" for i in range(6)],
            "g": [0.1, 0.5, 0.3, 0.8, 0.2, 0.4],
            "se": [0.1, 0.2, 0.15, 0.3, 0.12, 0.25],
        }
    ).to_csv(src, index=False)
    res = meta_analysis(src, effect="g", se="se")
    out = res.save(tmp_path / "meta")
    assert (out / "forest.svg").is_file() and not (out / "report.html").exists()
    path = write_report(res, out)
    assert path == out / "report.html" and "report.html" in read_manifest(out)["files"]
    _check_report(path.read_text())
    assert "data:image/svg+xml;base64," in path.read_text()  # the save's figures, embedded
    again = CliRunner().invoke(
        app, ["meta", str(src), "--out", str(out), "--effect", "g", "--se", "se"]
    )
    assert again.exit_code == 0, again.output
    with pytest.raises(TypeError, match="no report for a dict"):
        write_report({}, out)
    with pytest.raises(TypeError, match="give out_dir"):
        write_report(res)


def test_every_report_is_on_the_one_base():
    """Every template extends base.html (its one stylesheet); no report writer in reports/
    builds its own page or stylesheet."""
    import brainmatch.reports as reports_pkg

    root = Path(reports_pkg.__file__).parent
    templates = sorted((root / "templates").glob("*.html"))
    assert {"qc.html", "durability_recommend.html", "meta.html"} <= {t.name for t in templates}
    for t in templates:
        if t.name != "base.html":
            assert t.read_text().startswith('{% extends "base.html" %}'), t.name
    for module in sorted(root.glob("*.py")):
        text = module.read_text().lower()
        assert "<style" not in text and "<!doctype" not in text, module.name
