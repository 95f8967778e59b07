"""Readers of ``brainmatch cbma``: formats, Talairach conversion and every bad-input message."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.cbma_io import (
    LANCASTER_ICBM2TAL,
    parse_selection,
    read_coordinates,
    tal_to_mni,
)

NIDM_PAIN = Path(str(importlib.resources.files("nimare") / "resources" / "nidm_pain_dset.json"))

SLEUTH = """// Reference=MNI
// Smith et al., 2010: emotion
// Subjects=12
-24\t-4\t-18
30 -2 -20

// Jones et al., 2012: reward
// Subjects=20
10 12 -8
-10 12 -8
0 40 -10
"""


def _table(tmp_path: Path, rows: list[dict[str, object]], name: str = "foci.tsv") -> Path:
    path = tmp_path / name
    frame = pd.DataFrame(rows)
    if name.endswith(".xlsx"):
        frame.to_excel(path, index=False)
    else:
        frame.to_csv(path, sep="\t" if name.endswith(".tsv") else ",", index=False)
    return path


def _rows(n_exp: int = 3) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for e in range(n_exp):
        for k in range(3):
            rows.append(
                {
                    "experiment": f"study{e}",
                    "x": -30 + 10 * e,
                    "y": 10 * k,
                    "z": 5 * e,
                    "space": "MNI",
                    "n_subjects": 10 + e,
                }
            )
    return rows


# --------------------------------------------------------------------------- formats


def test_sleuth_matches_nimare_reader(tmp_path: Path) -> None:
    """Our Sleuth parser gives the same foci and sample sizes as NiMARE's (the reference)."""
    from nimare.io import convert_sleuth_to_dict

    path = tmp_path / "foci.txt"
    path.write_text(SLEUTH)
    table = read_coordinates(path)
    ref = convert_sleuth_to_dict(str(path))
    assert table.n_experiments == 2
    for study, content in ref.items():
        for contrast, data in content["contrasts"].items():
            rows = table.foci[table.foci["experiment"] == f"{study}: {contrast}"]
            assert rows["x"].tolist() == data["coords"]["x"]
            assert rows["z"].tolist() == data["coords"]["z"]
            assert rows["n_subjects"].iloc[0] == data["metadata"]["sample_sizes"][0]


def test_nimare_json_matches_nimare_dataset() -> None:
    """nidm_pain (21 studies, 267 foci) reads exactly as NiMARE's Dataset holds it."""
    from nimare.dataset import Dataset

    from brainmatch.evidence.cbma import _quiet

    table = read_coordinates(NIDM_PAIN)
    assert table.n_experiments == 21
    assert len(table.foci) == 267
    with _quiet():  # also keeps nilearn's gc.collect() calls from rescanning the heap
        ds = Dataset(str(NIDM_PAIN), target="mni152_2mm")
    ref = ds.coordinates.sort_values(["id", "x", "y", "z"])
    ours = table.foci.sort_values(["experiment", "x", "y", "z"])
    np.testing.assert_allclose(ours[["x", "y", "z"]].to_numpy(), ref[["x", "y", "z"]].to_numpy())
    assert sorted(ours["experiment"].unique()) == sorted(ref["id"].unique())


def test_pyale_layout_blank_rows_and_tags(tmp_path: Path) -> None:
    """Blank rows separate experiments; one study's two contrasts become two experiments."""
    raw = pd.DataFrame(
        [
            ["Experiments", "Subjects", "X", "Y", "Z", "Space", "Contrast"],
            ["Ann_2010", 18, -32, 50, 20, "MNI", "Untreated<Treated"],
            ["Ann_2010", 18, 12, 21, 3, "MNI", "Untreated<Treated"],
            [None] * 7,
            ["Ann_2010", 18, 16, -64, -26, "MNI", "Untreated>Treated"],
            [None] * 7,
            ["Bob_2012", 20, 34, -40, 12, "TAL", "Untreated<Treated"],
            ["Bob_2012", 20, 38, -40, 40, "TAL", "Untreated<Treated"],
        ]
    )
    path = tmp_path / "coordinates.xlsx"
    raw.to_excel(path, index=False, header=False)
    table = read_coordinates(path)
    assert table.n_experiments == 3
    assert set(table.foci["experiment"]) == {
        "Ann_2010 [Untreated<Treated]",
        "Ann_2010 [Untreated>Treated]",
        "Bob_2012",
    }
    sel = read_coordinates(path, select=["contrast=untreated<treated"])
    assert sel.n_experiments == 2 and sel.n_subjects == 38
    assert sel.foci["row"].tolist() == [2, 3, 7, 8]  # spreadsheet rows, for messages
    assert any("Talairach" in n and "tal2icbm_spm" in n for n in sel.notes)


def test_shared_antidepressant_spreadsheets(shared_data: Path) -> None:
    """The published analyses' sizes (Saberi et al. 2025; pyALE logs): 30 experiments / 661
    subjects pooled, 20 / 341 treated > untreated, 21 / 408 treated < untreated."""
    base = shared_data / "antidepressant-ale"
    pooled = read_coordinates(base / "All" / "coordinates.xlsx")
    assert (pooled.n_experiments, len(pooled.foci), pooled.n_subjects) == (30, 528, 661)
    inc = read_coordinates(
        base / "Contrast" / "coordinates.xlsx", select={"Contrast": ["Untreated<Treated"]}
    )
    dec = read_coordinates(
        base / "Contrast" / "coordinates.xlsx", select={"Contrast": ["Untreated>Treated"]}
    )
    assert (inc.n_experiments, inc.n_subjects) == (20, 341)
    assert (dec.n_experiments, dec.n_subjects) == (21, 408)


def test_csv_with_aliases_and_space_option(tmp_path: Path) -> None:
    rows = [
        {"Study": r["experiment"], "X": r["x"], "Y": r["y"], "Z": r["z"], "N": r["n_subjects"]}
        for r in _rows()
    ]
    path = _table(tmp_path, rows, "foci.csv")
    with pytest.raises(BrainmatchInputError, match=r"missing column.*space.*--space"):
        read_coordinates(path)
    table = read_coordinates(path, space="TAL")
    assert (table.foci["space"] == "TAL").all()
    assert not np.allclose(table.foci["x"], table.foci["x_reported"])


# --------------------------------------------------------------------------- Talairach


def test_tal_transforms_match_nimare_and_invert_lancaster() -> None:
    from nimare.utils import tal2mni

    rng = np.random.default_rng(0)
    tal = rng.uniform(-60, 60, size=(20, 3))
    np.testing.assert_allclose(tal_to_mni(tal, "other"), tal2mni(tal), atol=1e-9)
    for name, forward in LANCASTER_ICBM2TAL.items():
        mni = tal_to_mni(tal, name)
        back = mni @ forward[:3, :3].T + forward[:3, 3]
        np.testing.assert_allclose(back, tal, atol=1e-9)
    # a known point: Talairach origin maps about 1-4 mm away in MNI under icbm_spm
    origin = tal_to_mni(np.zeros((1, 3)), "spm")[0]
    assert 0.5 < np.linalg.norm(origin) < 6
    with pytest.raises(BrainmatchInputError, match="unknown Talairach transform"):
        tal_to_mni(tal, "mni305")


# --------------------------------------------------------------------------- bad input


def test_missing_columns_are_named(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k not in ("n_subjects", "z")} for r in _rows()]
    with pytest.raises(BrainmatchInputError, match=r"missing column\(s\) z, n_subjects") as exc:
        read_coordinates(_table(tmp_path, rows))
    assert "foci.tsv" in str(exc.value)


def test_non_numeric_cell_names_row_and_column(tmp_path: Path) -> None:
    rows = _rows()
    rows[4]["y"] = "12a"
    with pytest.raises(
        BrainmatchInputError, match=r"row 6: column 'y' must be a number, found '12a'"
    ):
        read_coordinates(_table(tmp_path, rows))


def test_empty_cell_is_reported(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["n_subjects"] = None
    with pytest.raises(BrainmatchInputError, match=r"row 2: column 'n_subjects'.*empty cell"):
        read_coordinates(_table(tmp_path, rows))


@pytest.mark.parametrize("n", [0, -5])
def test_non_positive_sample_size(tmp_path: Path, n: int) -> None:
    rows = _rows()
    for r in rows:
        if r["experiment"] == "study1":
            r["n_subjects"] = n
    with pytest.raises(BrainmatchInputError, match=f"'study1' has {n} subjects.*positive"):
        read_coordinates(_table(tmp_path, rows))


def test_unknown_space(tmp_path: Path) -> None:
    rows = _rows()
    rows[2]["space"] = "native"
    with pytest.raises(BrainmatchInputError, match="row 4: unknown coordinate space 'native'"):
        read_coordinates(_table(tmp_path, rows))


def test_duplicate_experiment(tmp_path: Path) -> None:
    rows = _rows()
    rows += [{**r, "experiment": "study0 copy"} for r in rows if r["experiment"] == "study0"]
    with pytest.raises(
        BrainmatchInputError, match=r"duplicate experiment: 'study0 copy'.*same 3 foci as 'study0'"
    ):
        read_coordinates(_table(tmp_path, rows))


def test_inconsistent_sample_size_within_experiment(tmp_path: Path) -> None:
    rows = _rows()
    rows[1]["n_subjects"] = 99
    with pytest.raises(BrainmatchInputError, match="'study0' has different 'n_subjects'"):
        read_coordinates(_table(tmp_path, rows))


def test_selection_errors(tmp_path: Path) -> None:
    rows = [{**r, "contrast": "a" if i % 2 else "b"} for i, r in enumerate(_rows())]
    path = _table(tmp_path, rows)
    with pytest.raises(BrainmatchInputError, match="no column 'task'"):
        read_coordinates(path, select=["task=x"])
    with pytest.raises(BrainmatchInputError, match="no row has contrast = c; values present: a, b"):
        read_coordinates(path, select=["contrast=c"])
    with pytest.raises(BrainmatchInputError, match="COLUMN=VALUE"):
        parse_selection(["contrast"])
    assert read_coordinates(path, select=["CONTRAST=A"]).foci["contrast"].eq("a").all()


def test_sleuth_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("// Smith 2010\n// Subjects=10\n1 2 3\n")
    with pytest.raises(BrainmatchInputError, match="must start with '// Reference=MNI'"):
        read_coordinates(path)
    path.write_text("// Reference=MNI\n// Smith 2010\n1 2 3\n")
    with pytest.raises(BrainmatchInputError, match=r"line 3: .*no '// Subjects=N' line"):
        read_coordinates(path)
    path.write_text("// Reference=MNI\n// Smith 2010\n// Subjects=10\n1 2\n")
    with pytest.raises(BrainmatchInputError, match="line 4: expected three coordinates"):
        read_coordinates(path)
    path.write_text("// Reference=MNI\n// Smith 2010\n// Subjects=10\n1 2 x\n")
    with pytest.raises(BrainmatchInputError, match="line 4: non-numeric coordinate"):
        read_coordinates(path)
    path.write_text("// Reference=Native\n")
    with pytest.raises(BrainmatchInputError, match="line 1: unknown coordinate space"):
        read_coordinates(path)


def test_json_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text("{not json")
    with pytest.raises(BrainmatchInputError, match="not valid JSON"):
        read_coordinates(path)
    path.write_text(
        json.dumps(
            {
                "s1": {
                    "contrasts": {
                        "1": {
                            "coords": {"space": "MNI", "x": [1], "y": [2], "z": [3]},
                            "metadata": {},
                        }
                    }
                }
            }
        )
    )
    with pytest.raises(BrainmatchInputError, match="study 's1', contrast '1': metadata has no"):
        read_coordinates(path)


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BrainmatchInputError, match="no such file"):
        read_coordinates(tmp_path / "nope.tsv")
    other = tmp_path / "foci.nii"
    other.write_bytes(b"\0")
    with pytest.raises(BrainmatchInputError, match=r"unknown coordinate file type '.nii'"):
        read_coordinates(other)
    empty = tmp_path / "empty.csv"
    empty.write_text("experiment,x,y,z,space,n_subjects\n")
    with pytest.raises(BrainmatchInputError, match="header but no rows"):
        read_coordinates(empty)


# --------------------------------------------------------------------------- the one reader


def test_tables_go_through_the_one_table_reader(tmp_path: Path) -> None:
    """A European Excel CSV (semicolons, decimal commas) after a blank line reads as the TSV
    does, through ``brainmatch._table.read_any_table(header=False)``."""
    rows = _rows()
    rows[0]["x"] = -29.5
    reference = read_coordinates(_table(tmp_path, rows)).foci
    frame = pd.DataFrame(rows).astype(str)
    lines = [";;;;;", ";".join(frame.columns)]
    lines += [";".join(v.replace(".", ",") for v in r) for r in frame.to_numpy()]
    path = tmp_path / "european.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    got = read_coordinates(path).foci
    assert got["x"].iloc[0] == -29.5
    cols = ["experiment", "x", "y", "z", "n_subjects"]
    pd.testing.assert_frame_equal(got[cols], reference[cols])
    assert got["row"].tolist() == [r + 1 for r in reference["row"]]  # one blank line above


def test_a_fake_workbook_gets_the_one_readers_message(tmp_path: Path) -> None:
    fake = tmp_path / "coordinates.xlsx"
    fake.write_text("experiment,x,y,z\n")
    with pytest.raises(BrainmatchInputError, match="not an Excel workbook"):
        read_coordinates(fake)


def test_header_less_reading_keeps_rows_as_text(tmp_path: Path) -> None:
    from brainmatch._table import read_any_table

    path = tmp_path / "t.tsv"
    path.write_text("title\t\nx\ty\n1.50\tn/a\n\n2\t3\n")
    raw = read_any_table(path, header=False)
    assert raw.shape == (5, 2) and list(raw.columns) == ["0", "1"]
    assert raw.iloc[2, 0] == "1.50" and pd.isna(raw.iloc[2, 1])  # text kept, NA missing
    assert raw.iloc[3].isna().all()  # the blank line separating blocks is kept
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(BrainmatchInputError, match="Parquet file is not accepted"):
        read_any_table(tmp_path / "t.parquet", header=False)
