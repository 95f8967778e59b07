"""The session-level schema: every violation gets one clear message (file, row, problem)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.sessions import read_sessions, validate_sessions


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "participant_id": ["sub-01"] * 3 + ["sub-02"] * 3,
            "arm": ["DCS"] * 3 + ["placebo"] * 3,
            "session": [1, 2, 3, 1, 2, 3],
            "datetime": [
                "2024-03-01T09:00",
                "2024-03-08T10:30",
                "2024-03-15T16:00",
                "2024-03-02T09:00",
                "2024-03-09T09:00",
                "2024-03-16T09:00",
            ],
            "augmented": [1, 1, 1, 0, 0, 0],
            "augmentation_type": ["D-cycloserine", "NMDA", "nmda", "nmda", "nmda", "nmda"],
            "timing": ["pre-session", "before", "before", "before", "before", "before"],
            "timing_minutes": [90, 30, 120, 60, 60, 60],
            "exercise_type": ["running", "none", "none", "none", "aerobic", "none"],
            "exercise_minutes": [20, 0, 0, 0, 15, 0],
            "exercise_intensity": ["high", "none", "none", "none", "moderate", "none"],
            "fear_start": [80, 60, 50, 75, 70, 66],
            "fear_peak": [90, 70, 55, 85, 80, 70],
            "fear_end": [50, 40, 20, 60, 55, 50],
            "symptom_score": [20, 15, 10, 22, 21, 19],
        }
    )


def _write(tmp_path: Path, df: pd.DataFrame, name: str = "sessions.tsv") -> Path:
    p = tmp_path / name
    if name.endswith(".xlsx"):
        df.to_excel(p, index=False)
    elif name.endswith(".csv"):
        df.to_csv(p, index=False)
    else:
        df.to_csv(p, sep="\t", index=False)
    return p


@pytest.mark.parametrize("name", ["sessions.tsv", "sessions.csv", "sessions.xlsx"])
def test_reads_every_format_and_normalises(tmp_path: Path, name: str) -> None:
    df = read_sessions(_write(tmp_path, _table(), name))
    assert df["augmentation_type"].tolist() == ["nmda"] * 6
    assert df["timing"].iloc[0] == "before"
    assert df["exercise_type"].tolist()[:2] == ["aerobic", "none"]
    assert df["exercise_intensity"].iloc[0] == "vigorous"
    # time of day derived from the date-time
    assert df["time_of_day"].tolist()[:3] == [9.0, 10.5, 16.0]
    assert df["augmented"].tolist() == [1, 1, 1, 0, 0, 0]
    assert df["session"].dtype.kind == "i"


def _fails(tmp_path: Path, df: pd.DataFrame, *fragments: str, **kw: object) -> str:
    path = _write(tmp_path, df)
    with pytest.raises(BrainmatchInputError) as exc:
        read_sessions(path, **kw)  # type: ignore[arg-type]
    msg = str(exc.value)
    assert msg.startswith(str(path)), msg
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_unknown_category_suggests_the_closest_code(tmp_path: Path) -> None:
    df = _table()
    df.loc[1, "augmentation_type"] = "NMDA-agonst"
    _fails(tmp_path, df, "'augmentation_type' row 3", "'NMDA-agonst'", "did you mean 'nmda'?")
    df = _table()
    df.loc[4, "timing"] = "befor"
    _fails(tmp_path, df, "'timing' row 6", "did you mean 'before'?", "allowed: before, during")
    df = _table()
    df.loc[0, "exercise_intensity"] = "moderat"
    _fails(tmp_path, df, "'exercise_intensity' row 2", "did you mean 'moderate'?")
    df = _table()
    df.loc[0, "augmentation_type"] = "xyzzy"
    msg = _fails(tmp_path, df, "unknown category", "allowed: pharmacological")
    assert "did you mean" not in msg


def test_sessions_out_of_order(tmp_path: Path) -> None:
    df = _table()
    df.loc[[1, 2], "session"] = [3, 2]
    df = df.drop(columns="datetime")
    _fails(
        tmp_path,
        df,
        "participant 'sub-01': sessions out of order",
        "session 2 (row 4) comes after session 3 (row 3)",
    )


def test_session_dates_out_of_order(tmp_path: Path) -> None:
    df = _table()
    df.loc[5, "datetime"] = "2024-03-05T09:00"
    _fails(
        tmp_path,
        df,
        "participant 'sub-02': sessions out of order",
        "session 3 (row 7, 2024-03-05 09:00:00) is not after session 2 (row 6",
    )


def test_ratings_outside_their_scale(tmp_path: Path) -> None:
    df = _table()
    df.loc[2, "fear_end"] = 130
    _fails(tmp_path, df, "column 'fear_end' row 4 is 130", "outside the rating scale", "[0, 100]")
    df = _table()
    df.loc[0, "fear_start"] = -5
    _fails(tmp_path, df, "column 'fear_start' row 2 is -5")
    # a 0-10 scale is accepted when declared, and 80 then refused
    df = _table()
    _fails(tmp_path, df, "column 'fear_start' row 2 is 80", "[0, 10]", rating_scale=(0, 10))
    df = _table()
    df.loc[3, "symptom_score"] = 40
    _fails(tmp_path, df, "'symptom_score' row 5 is 40", "symptom scale", symptom_scale=(0, 28))


def test_duplicated_sessions(tmp_path: Path) -> None:
    df = _table()
    df.loc[2, "session"] = 2
    df = df.drop(columns="datetime")
    _fails(tmp_path, df, "participant 'sub-01' has session 2 twice (rows 3 and 4)", "duplicated")


def test_missing_columns_suggest_the_closest(tmp_path: Path) -> None:
    df = _table().rename(columns={"participant_id": "participant", "fear_end": "fear_final"})
    _fails(
        tmp_path,
        df,
        "missing required column(s) 'participant_id', 'fear_end'",
        "did you mean 'participant' for 'participant_id'",
        "did you mean 'fear_final' for 'fear_end'",
    )


def test_other_violations(tmp_path: Path) -> None:
    df = _table()
    df["session"] = df["session"].astype(float)
    df.loc[0, "session"] = 1.5
    _fails(tmp_path, df, "'session' row 2", "integers >= 1")
    df = _table()
    df["fear_start"] = df["fear_start"].astype(object)
    df.loc[1, "fear_start"] = "high"
    _fails(tmp_path, df, "'fear_start' row 3 holds 'high', not a number")
    df = _table()
    df.loc[1, "arm"] = "placebo"
    _fails(tmp_path, df, "participant 'sub-01' is in more than one arm")
    df = _table()
    df.loc[3, "augmentation_type"] = "none"
    df.loc[3, "augmented"] = 1
    _fails(tmp_path, df, "row 5: 'augmented' is 1 but 'augmentation_type' is 'none'")
    df = _table()
    df.loc[0, "timing_minutes"] = -10
    _fails(tmp_path, df, "'timing_minutes' row 2 is -10")
    df = _table()
    df.loc[0, "datetime"] = "yesterday"
    _fails(tmp_path, df, "'datetime' row 2 is 'yesterday'", "ISO 8601")
    df = _table().drop(columns="datetime").assign(time_of_day="25:00")
    _fails(tmp_path, df, "'time_of_day' row 2", "[00:00, 24:00)")
    df = _table()
    df["augmented"] = df["augmented"].astype(object)
    df.loc[0, "augmented"] = "maybe"
    _fails(tmp_path, df, "'augmented' row 2 is 'maybe'")
    with pytest.raises(BrainmatchInputError, match="file not found"):
        read_sessions(tmp_path / "nope.tsv")


def test_augmented_derived_from_type_and_rows_sorted() -> None:
    df = _table().drop(columns="augmented")
    df.loc[3:, "augmentation_type"] = "placebo"
    df = df.iloc[[3, 0, 4, 1, 5, 2]].drop(columns="datetime")
    out = validate_sessions(df)
    assert out["participant_id"].tolist() == ["sub-02"] * 3 + ["sub-01"] * 3
    assert out["augmented"].tolist() == [0, 0, 0, 1, 1, 1]
    assert out["augmentation_type"].iloc[0] == "none"
