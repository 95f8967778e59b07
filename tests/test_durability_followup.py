"""Repeated follow-up scores summarised into one sustained outcome per patient
(``brainmatch.durability.followup`` and ``brainmatch train --followup-scores``): each
summary against a hand / NumPy computation, the mixed model's shrinkage recovering true
per-patient means better than raw summaries under noise and dropout, every
``--followup-summary`` value through the CLI, and each bad input's message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.durability.followup import summarise_followup
from brainmatch.errors import BrainmatchInputError

runner = CliRunner()


def _hand() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": ["a", "a", "a", "b", "b", "c"],
            "week": [8, 12, 52, 8, 26, 8],
            "hamd": [10.0, 14.0, 6.0, 20.0, 11.0, 7.0],
        }
    )


def test_auc_last_slope_by_hand() -> None:
    df = _hand()
    auc = summarise_followup(df, score_column="hamd", method="auc").set_index("participant_id")
    # a: trapezoids (4 * 12 + 40 * 10) / 44; b: mean of 20 and 11; c: one visit -> missing
    assert auc.loc["a", "hamd__auc"] == pytest.approx((4 * 12 + 40 * 10) / 44)
    assert auc.loc["b", "hamd__auc"] == pytest.approx(15.5)
    assert np.isnan(auc.loc["c", "hamd__auc"]) and auc.loc["a", "n_visits"] == 3
    last = summarise_followup(df, score_column="hamd", method="last").set_index("participant_id")
    assert list(last["hamd__last"]) == [6.0, 11.0, 7.0]
    slope = summarise_followup(df, score_column="hamd", method="slope")
    assert slope["hamd__slope"].iloc[0] == pytest.approx(np.polyfit([8, 12, 52], [10, 14, 6], 1)[0])
    # the window drops week 52
    win = summarise_followup(df, score_column="hamd", method="last", until=26)
    assert list(win["hamd__last"]) == [14.0, 11.0, 7.0]


def _trajectories(seed: int, n: int = 120) -> tuple[pd.DataFrame, pd.Series]:
    """Lines with a true per-patient mean over weeks 8-52, noisy visits, 40 % dropout."""
    rng = np.random.default_rng(seed)
    weeks = np.array([8, 12, 20, 26, 39, 52])
    rows, truth = [], {}
    for i in range(n):
        a, b = rng.normal(14, 3), rng.normal(0, 4)
        pid = f"sub-{i:03d}"
        truth[pid] = a  # the line's mean over the window (its value at week 30)
        last = rng.integers(2, 7) if rng.random() < 0.4 else 6
        for w in weeks[:last]:
            rows.append((pid, w, a + b * (w - 30) / 44 + rng.normal(0, 4)))
    return pd.DataFrame(rows, columns=["participant_id", "week", "hamd"]), pd.Series(truth)


def test_mixed_model_recovers_patient_means_better_than_raw_summaries() -> None:
    errors: dict[str, list[float]] = {"auc": [], "mixed": []}
    for seed in range(3):
        df, truth = _trajectories(seed)
        for m in errors:
            s = summarise_followup(df, score_column="hamd", method=m, start=8, until=52)
            v = s.set_index("participant_id")[f"hamd__{m}"]
            errors[m].append(float(np.sqrt(np.mean((v - truth.reindex(v.index)) ** 2))))
    # shrinkage towards the average line beats the raw time-average under dropout
    assert np.mean(errors["mixed"]) < 0.9 * np.mean(errors["auc"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "median"}, "method 'median': use one of"),
        ({"score_column": "madrs"}, "score_column 'madrs': no such column"),
        ({"time_column": "day"}, "time_column 'day': no such column"),
        ({"until": 1.0}, "no follow-up score inside the window"),
    ],
)
def test_bad_inputs(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"score_column": "hamd", **kwargs}
    with pytest.raises(BrainmatchInputError, match=message):
        summarise_followup(_hand(), **args)


def test_repeated_visit_and_text_scores_refused() -> None:
    df = pd.concat([_hand(), _hand().iloc[[0]]])
    with pytest.raises(BrainmatchInputError, match="1 repeated visit"):
        summarise_followup(df, score_column="hamd")
    df = _hand().astype({"hamd": object})
    df.loc[0, "hamd"] = "ten"
    with pytest.raises(BrainmatchInputError, match="values are not numbers"):
        summarise_followup(df, score_column="hamd")


@pytest.fixture(scope="module")
def trial_tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from brainmatch.simulate import TrialSpec, draw_trial
    from brainmatch.validation.synthetic import measured_features

    tmp = tmp_path_factory.mktemp("fu")
    trial = draw_trial(TrialSpec(n_subjects=120, n_sites=2, seed=5))
    f = measured_features(trial, n_noise=2, seed=1)
    fp = tmp / "features.tsv"
    f.to_csv(fp, sep="\t", index=False)
    pp = tmp / "participants.tsv"
    trial.participants.to_csv(pp, sep="\t", index=False)
    # follow-up scores: week-8 score of the received arm, then drifting by arm x marker
    t = trial.truth
    rng = np.random.default_rng(2)
    rows = []
    for _, r in t.iterrows():
        y8 = r[f"hamd_week8__{r['arm']}"]
        drift = (1.0 if r["arm"] == "CBT" else -1.0) * r["scc_connectivity"] * 4
        for w in (8, 12, 26, 52):
            rows.append((r["participant_id"], w, y8 + drift * (w - 8) / 44 + rng.normal(0, 2)))
    sp = tmp / "followup_scores.tsv"
    pd.DataFrame(rows, columns=["participant_id", "week", "hamd"]).to_csv(sp, sep="\t", index=False)
    return fp, pp, sp


@pytest.mark.parametrize("summary", ["auc", "last", "slope", "mixed"])
def test_train_followup_summary_through_the_cli(
    summary: str, trial_tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    fp, pp, sp = trial_tables
    out = tmp_path / "m"
    r = runner.invoke(
        app,
        [
            *("train", "--features", str(fp), "--outcomes", str(pp)),
            *("--followup-scores", str(sp), "--followup-summary", summary),
            *("--treatment-column", "arm", "--outcome-column", "hamd", "--better", "lower"),
            *("--n-repeats", "1", "--n-permutations", "19", "--no-learning-curve"),
            *("--no-report", "--out", str(out)),
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"hamd__{summary}" in r.output
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    want = summarise_followup(sp, score_column="hamd", method=summary).set_index("participant_id")[
        f"hamd__{summary}"
    ]
    ycol = next(c for c in pred.columns if c in ("outcome", "observed", "y", f"hamd__{summary}"))
    got = pred.set_index("participant_id")[ycol]
    np.testing.assert_allclose(
        got.to_numpy(), want.reindex(got.index).to_numpy(), rtol=1e-5
    )  # %.6g


def test_followup_cli_errors(trial_tables: tuple[Path, Path, Path], tmp_path: Path) -> None:
    fp, pp, sp = trial_tables
    base = ["train", "--features", str(fp), "--outcomes", str(pp), "--treatment-column", "arm"]
    base += ["--followup-scores", str(sp), "--out", str(tmp_path / "x")]
    r = runner.invoke(app, [*base, "--outcome-column", "madrs"])
    assert r.exit_code == 2 and "--outcome-column 'madrs': no such column" in r.output
    r = runner.invoke(app, [*base, "--outcome-column", "hamd", "--followup-summary", "max"])
    assert r.exit_code == 2 and "--followup-summary 'max': use one of" in r.output
    r = runner.invoke(app, [*base, "--outcome-column", "hamd", "--followup-time-column", "day"])
    assert r.exit_code == 2 and "--followup-time-column 'day': no such column" in r.output
