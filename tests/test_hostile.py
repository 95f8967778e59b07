"""Every subcommand fed hostile input: none may print a traceback.

Each case runs a subcommand through the CLI with a bad file, value or folder and asserts
that it ends with exit status 2 and exactly one ``error:`` line, never an exception; and
that the user's file and folder named as outputs are left as they were.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    f = {
        "garbage": d / "garbage.csv",
        "binary": d / "binary.npz",
        "empty": d / "empty.csv",
        "header_only": d / "header.csv",
        "fake_xlsx": d / "fake.xlsx",
        "folder": d / "a_folder",
        "missing": d / "does_not_exist.csv",
        "huge": d / "huge.csv",
        "features": d / "features.csv",
        "outcomes": d / "outcomes.csv",
        "coords": d / "coords.txt",
        "nested": d / "nested.npz",
        "existing_file": d / "existing.txt",
    }
    f["garbage"].write_bytes(rng.bytes(4096))
    f["binary"].write_bytes(b"PK\x03\x04" + rng.bytes(2048))
    f["empty"].write_text("")
    f["header_only"].write_text("study,g,se\n")
    f["fake_xlsx"].write_text("study,g,se\na,1,1\n")
    f["folder"].mkdir()
    pd.DataFrame(
        {
            "study": list("abcd"),
            "g": [1e300, 0.2, 0.3, 0.4],
            "se": [0.1, 1e-12, 0.2, 0.2],
            "TE": [1e300, 0.2, 0.3, 0.4],
            "seTE": [0.1, 0.1, 0.2, 0.2],
            "treat1": list("AABB"),
            "treat2": list("BCCA"),
        }
    ).to_csv(f["huge"], index=False)
    ids = [f"sub-{i:02d}" for i in range(20)]
    pd.DataFrame({"participant_id": ids, "x1": rng.normal(size=20), "x2": 1e300}).to_csv(
        f["features"], index=False
    )
    pd.DataFrame({"participant_id": ids, "arm": ["A", "B"] * 10, "y": rng.normal(size=20)}).to_csv(
        f["outcomes"], index=False
    )
    f["coords"].write_text("// Reference=MNI\n// study 1\n// Subjects=abc\nx y z\n")
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "__meta__.npy",
            b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', "
            b"'fortran_order': False, 'shape': (1,), }" + b" " * 60 + b"\n[",
        )
    f["nested"].write_bytes(buf.getvalue())
    f["existing_file"].write_text("keep")
    return f


def _cases(f: dict[str, Path], out: Path) -> list[tuple[str, list[str]]]:
    o = str(out)
    return [
        # meta
        ("meta garbage", ["meta", str(f["garbage"]), "-o", o, "--effect", "g", "--se", "se"]),
        ("meta empty", ["meta", str(f["empty"]), "-o", o, "--effect", "g", "--se", "se"]),
        (
            "meta header only",
            ["meta", str(f["header_only"]), "-o", o, "--effect", "g", "--se", "se"],
        ),
        ("meta fake xlsx", ["meta", str(f["fake_xlsx"]), "-o", o, "--effect", "g", "--se", "se"]),
        ("meta folder as input", ["meta", str(f["folder"]), "-o", o, "--effect", "g"]),
        ("meta missing", ["meta", str(f["missing"]), "-o", o]),
        ("meta 1e300", ["meta", str(f["huge"]), "-o", o, "--effect", "g", "--se", "se"]),
        (
            "meta bad method",
            ["meta", str(f["huge"]), "-o", o, "--effect", "g", "--se", "se", "--method", "XYZ"],
        ),
        ("meta bad level", ["meta", str(f["huge"]), "-o", o, "--level", "abc"]),
        (
            "meta out is a file",
            ["meta", str(f["huge"]), "-o", str(f["existing_file"]), "--effect", "g", "--se", "se"],
        ),
        ("meta unknown option", ["meta", str(f["huge"]), "--bogus"]),
        # nma
        ("nma garbage", ["nma", str(f["garbage"]), "-o", o]),
        ("nma 1e300", ["nma", str(f["huge"]), "-o", o]),
        ("nma empty", ["nma", str(f["empty"]), "-o", o]),
        ("nma bad method", ["nma", str(f["huge"]), "-o", o, "--method", "ML"]),
        # train
        (
            "train garbage",
            [
                "train",
                "--features",
                str(f["garbage"]),
                "--outcomes",
                str(f["outcomes"]),
                "--treatment-column",
                "arm",
                "--outcome-column",
                "y",
                "-o",
                o,
            ],
        ),
        (
            "train missing column",
            [
                "train",
                "--features",
                str(f["features"]),
                "--outcomes",
                str(f["outcomes"]),
                "--treatment-column",
                "nope",
                "--outcome-column",
                "y",
                "-o",
                o,
            ],
        ),
        (
            "train out is a file",
            [
                "train",
                "--features",
                str(f["features"]),
                "--outcomes",
                str(f["outcomes"]),
                "--treatment-column",
                "arm",
                "--outcome-column",
                "y",
                "-o",
                str(f["existing_file"]),
            ],
        ),
        # recommend
        ("recommend garbage model", ["recommend", str(f["garbage"]), str(f["features"]), "-o", o]),
        ("recommend zip garbage", ["recommend", str(f["binary"]), str(f["features"]), "-o", o]),
        ("recommend crafted npy", ["recommend", str(f["nested"]), str(f["features"]), "-o", o]),
        ("recommend folder model", ["recommend", str(f["folder"]), str(f["features"]), "-o", o]),
        # cbma
        ("cbma garbage", ["cbma", str(f["garbage"]), "-o", o]),
        ("cbma no foci", ["cbma", str(f["coords"]), "-o", o]),
        ("cbma missing", ["cbma", str(f["missing"]), "-o", o]),
        # extract
        (
            "extract not bids",
            [
                "extract",
                str(f["folder"]),
                o,
                "participant",
                "--derivatives",
                str(f["folder"]),
                "--atlas",
                "affect",
            ],
        ),
        (
            "extract bad level",
            [
                "extract",
                str(f["folder"]),
                o,
                "group",
                "--derivatives",
                str(f["folder"]),
                "--atlas",
                "affect",
            ],
        ),
        (
            "extract bad atlas",
            [
                "extract",
                str(f["folder"]),
                o,
                "participant",
                "--derivatives",
                str(f["folder"]),
                "--atlas",
                str(f["garbage"]),
            ],
        ),
        # simulate
        ("simulate bad arms", ["simulate", o, "--arms", ",,,"]),
        ("simulate bad resolution", ["simulate", o, "--resolution", "7"]),
        ("simulate into a file", ["simulate", str(f["existing_file"])]),
        ("simulate bad effect", ["simulate", o, "--effect-size", "huge"]),
        # demo
        ("demo into a file", ["demo", "-o", str(f["existing_file"])]),
        ("demo into user folder", ["demo", "-o", str(f["folder"].parent)]),
        # root
        ("unknown command", ["frobnicate"]),
        ("no such option", ["--bogus"]),
    ]


def test_no_subcommand_prints_a_traceback(files: dict[str, Path], tmp_path: Path) -> None:
    failures = []
    for i, (name, args) in enumerate(_cases(files, tmp_path / "out")):
        out = tmp_path / f"out{i}"
        args = [str(out) if a == str(tmp_path / "out") else a for a in args]
        res = runner.invoke(app, args)
        exc = res.exception
        crashed = exc is not None and not isinstance(exc, SystemExit)
        text = res.output
        if crashed or "Traceback" in text:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        lines = [line for line in text.splitlines() if line.strip()]
        if res.exit_code != 2:
            failures.append(f"{name}: exit {res.exit_code} (expected 2): {text[-200:]!r}")
        elif len(lines) != 1 or not lines[0].startswith("error:"):
            failures.append(f"{name}: not one error: line: {text[:300]!r}")
    assert not failures, "\n".join(failures)
    # the user's file named as an output folder is intact
    assert files["existing_file"].read_text() == "keep"
    assert os.listdir(files["folder"]) == []


def test_an_unexpected_exception_is_one_line_unless_debugging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import brainmatch.evidence.analysis as analysis

    def boom(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(analysis, "network_analysis", boom)
    src = tmp_path / "n.csv"
    src.write_text("study,treat1,treat2,TE,seTE\ns,A,B,1,1\n")
    res = runner.invoke(app, ["nma", str(src), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "internal error (ZeroDivisionError" in lines[0]
    monkeypatch.setenv("BRAINMATCH_DEBUG", "1")
    res = runner.invoke(app, ["nma", str(src), "-o", str(tmp_path / "o2")])
    assert isinstance(res.exception, ZeroDivisionError)
