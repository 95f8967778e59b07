"""Session-level analysis and simulator: ground-truth recovery, null rate, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.sessions import (
    SessionTrialSpec,
    analyse_sessions,
    draw_session_trial,
    read_sessions,
    simulate_session_trial,
)
from brainmatch.sessions.simulate import BRAIN

# the planted moderators and their direction (within: reduction; between: return of fear)
PLANTED = [
    ("between", "augmented:success"),
    ("between", "augmented:window"),
    ("between", "tod_c"),
    ("between", "exercise"),
    ("within", "tod_c"),
    ("within", "exercise"),
    ("between", BRAIN),
    ("between", f"augmented:{BRAIN}"),
]


def _estimates(spec: SessionTrialSpec) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    trial = draw_session_trial(spec)
    sessions = trial.sessions.merge(trial.features, on="participant_id")
    res = analyse_sessions(sessions, brain_moderators=[BRAIN], effects=False)
    return res.moderators(), trial.truth_params["coefficients"]


def test_simulator_is_deterministic_and_follows_the_schema(tmp_path: Path) -> None:
    spec = SessionTrialSpec(n_per_arm=10, n_sessions=6, seed=5)
    a, b = draw_session_trial(spec), draw_session_trial(spec)
    pd.testing.assert_frame_equal(a.sessions, b.sessions)
    c = draw_session_trial(SessionTrialSpec(n_per_arm=10, n_sessions=6, seed=6))
    assert not a.sessions["fear_end"].equals(c.sessions["fear_end"])
    out = simulate_session_trial(spec, tmp_path / "trial")
    df = read_sessions(out / "sessions.tsv")
    assert len(df) == len(a.sessions)
    assert set(df["arm"]) == {"placebo", "active"}
    assert df.loc[df["arm"] == "placebo", "augmented"].eq(0).all()
    gt = json.loads((out / "ground_truth.json").read_text())
    assert gt["coefficients"]["between"]["augmented:success"] < 0
    truth = pd.read_csv(out / "ground_truth.tsv", sep="\t")
    assert {"symptom_final__placebo", "symptom_final__active", "oracle_arm"} <= set(truth)
    # a rerun refuses to overwrite without --overwrite, and never touches other folders
    with pytest.raises(BrainmatchInputError, match="not empty"):
        simulate_session_trial(spec, out)
    simulate_session_trial(spec, out, overwrite=True)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(BrainmatchInputError, match="not written by brainmatch simulate-sessions"):
        simulate_session_trial(spec, other, overwrite=True)


@pytest.mark.slow
def test_planted_moderators_are_recovered_across_seeds() -> None:
    """Right sign on average and CIs covering the truth in most of 6 trials."""
    est: dict[tuple[str, str], list[float]] = {k: [] for k in PLANTED}
    cover: dict[tuple[str, str], int] = dict.fromkeys(PLANTED, 0)
    for seed in range(6):
        tab, truth = _estimates(SessionTrialSpec(n_per_arm=60, seed=100 + seed, effect_size=2.0))
        for model, term in PLANTED:
            row = tab[(tab["model"] == model) & (tab["term"] == term)].iloc[0]
            true = truth[model][term]
            est[(model, term)].append(row.estimate)
            cover[(model, term)] += int(row.ci_lb <= true <= row.ci_ub)
    for model, term in PLANTED:
        true = truth[model][term]
        assert np.sign(np.mean(est[(model, term)])) == np.sign(true), (model, term)
        assert cover[(model, term)] >= 4, (model, term, cover[(model, term)])


@pytest.mark.slow
def test_null_simulation_flags_no_more_than_the_nominal_rate() -> None:
    flags, tests = 0, 0
    for seed in range(6):
        tab, truth = _estimates(SessionTrialSpec(n_per_arm=40, seed=200 + seed, moderators=False))
        for model, term in PLANTED:
            assert truth[model][term] == 0
            row = tab[(tab["model"] == model) & (tab["term"] == term)].iloc[0]
            flags += int(row.p < 0.05)
            tests += 1
    # 48 tests at 5%: expect 2.4; P(>= 8 | 5%) < 0.003
    assert flags < 8, flags


def test_result_object_outputs_and_final_effect(tmp_path: Path) -> None:
    trial = draw_session_trial(SessionTrialSpec(n_per_arm=30, seed=11, effect_size=2.0))
    res = analyse_sessions(trial.sessions)
    assert set(res.models) == {"within", "between", "trajectory", "final", "dose_response"}
    assert all(m.converged for m in res.models.values())
    # the final-outcome effect is estimated with a CI and favours augmentation here
    f = res.final
    assert f is not None and f["session"] == 8 and f["ci_lb"] < f["estimate"] < f["ci_ub"]
    true = trial.truth_params["final_outcome"]["mean_difference"]
    assert true < 0
    assert f["ci_lb"] <= true <= f["ci_ub"]
    # session 1 is before any augmentation can act on carry-over: no difference at its start
    ps = res.per_session[res.per_session["outcome"] == "fear_start"]
    assert abs(ps.iloc[0]["effect"]) < 2.5 * ps.iloc[0]["se"]
    assert res.dose_response is not None
    assert res.dose_response["per_dose"]["estimate"] < 0
    out = res.save(tmp_path / "res")
    data = json.loads((out / "results.json").read_text())
    assert data["command"] == "brainmatch sessions"
    assert data["final"]["estimate"] == pytest.approx(f["estimate"])
    mods = pd.read_csv(out / "moderators.tsv", sep="\t")
    assert "augmented:success" in set(mods["term"])
    assert "<table>" in res._repr_html_()
    from brainmatch.reports.sessions import write_report

    html = write_report(res, out).read_text()
    for name in ("Smits", "Rosenfield", "Meuret", "Nord"):
        assert name in html
    assert (out / "trajectories.png").is_file()
    # rerunning into its own output is allowed; a folder of other files is refused
    res.save(out)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "data.csv").write_text("a\n1\n")
    with pytest.raises(BrainmatchInputError, match="no earlier brainmatch sessions output"):
        res.save(tmp_path / "user")


def test_terms_absent_from_the_data_are_left_out_with_a_note() -> None:
    trial = draw_session_trial(SessionTrialSpec(n_per_arm=15, seed=1, timing="during"))
    df = trial.sessions.drop(columns=["exercise_type", "exercise_minutes", "symptom_score"])
    res = analyse_sessions(df)
    terms = set(res.models["between"].params.index)
    assert "augmented:window" not in terms and "exercise" not in terms
    assert any("left out" in n and "window" in n for n in res.notes)
    assert res.final is None and res.dose_response is None


def test_analysis_input_errors() -> None:
    trial = draw_session_trial(SessionTrialSpec(n_per_arm=8, seed=2))
    with pytest.raises(
        BrainmatchInputError, match="no column 'conn_vmpfc' in the session table; did you mean"
    ):
        analyse_sessions(
            trial.sessions.merge(trial.features, on="participant_id"),
            brain_moderators=["conn_vmpfc"],
        )
    s = trial.sessions.copy()
    s["changing"] = np.arange(len(s), dtype=float)
    with pytest.raises(BrainmatchInputError, match="changes within participant"):
        analyse_sessions(s, brain_moderators=["changing"])
    with pytest.raises(BrainmatchInputError, match="every participant had the augmentation"):
        analyse_sessions(trial.sessions.assign(augmented=0))
