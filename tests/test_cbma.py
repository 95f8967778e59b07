"""``brainmatch cbma``: agreement with NiMARE, recovery of planted convergence, the published
antidepressant result, subtraction, conjunction, outputs and the CLI."""

from __future__ import annotations

import importlib.resources
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.cbma import (
    CoordinateMetaAnalysis,
    _quiet,
    brain_mask,
    conjunction,
    run_cbma,
    subtract,
)
from brainmatch.evidence.cbma_io import CoordinateTable, read_coordinates

NIDM_PAIN = Path(str(importlib.resources.files("nimare") / "resources" / "nidm_pain_dset.json"))
AMYGDALA_L = (-24.0, -4.0, -18.0)
DLPFC_R = (40.0, 30.0, 30.0)


def simulate_foci(
    tmp_path: Path,
    name: str,
    n_exp: int,
    truth: tuple[float, float, float] | None,
    share: float,
    seed: int,
) -> CoordinateTable:
    """Experiments with 3-9 foci drawn uniformly in the brain; in ``share`` of them one focus
    lies within a few mm of ``truth`` (the planted convergence)."""
    rng = np.random.default_rng(seed)
    mask = brain_mask()
    ijk = np.argwhere(np.asarray(mask.dataobj) > 0)
    rows = []
    for e in range(n_exp):
        pts = nib.affines.apply_affine(
            mask.affine, ijk[rng.integers(0, len(ijk), rng.integers(3, 10))]
        )
        if truth is not None and e < round(share * n_exp):
            pts[0] = np.asarray(truth) + rng.normal(0, 2.5, 3)
        n = int(rng.integers(12, 40))
        rows += [
            {
                "experiment": f"{name}{e:02d}",
                "x": round(p[0]),
                "y": round(p[1]),
                "z": round(p[2]),
                "space": "MNI",
                "n_subjects": n,
            }
            for p in pts
        ]
    path = tmp_path / f"{name}.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return read_coordinates(path)


def _distance(row: pd.Series, point: tuple[float, float, float]) -> float:
    return float(np.linalg.norm(np.array([row["x"], row["y"], row["z"]]) - np.array(point)))


@pytest.fixture
def no_glass_brains(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports without rendering their glass brains (about 1 s of CPU a figure), for CLI
    tests that check numbers only.  The figures themselves are checked by
    test_cli_writes_every_output (one analysis) and
    test_cli_versus_writes_contrast_and_conjunction (a comparison)."""
    from brainmatch.reports import cbma as report

    monkeypatch.setattr(report, "_glass_brain_svg", lambda *a, **k: ("<svg></svg>", b""))


# --------------------------------------------------------------------------- NiMARE agreement


@pytest.mark.slow
def test_maps_and_cluster_p_equal_nimare() -> None:
    """Our wrapper passes foci and sample sizes exactly: ALE, z and the cluster-level FWE map
    equal NiMARE run directly on its own reading of the same file (same seed)."""
    from nimare.correct import FWECorrector
    from nimare.dataset import Dataset
    from nimare.meta.cbma import ALE

    res = run_cbma(NIDM_PAIN, iterations=5, random_state=3)  # outputs: see the CLI tests
    # _quiet: NiMARE without warnings, and nilearn's gc.collect() calls (one per image it
    # loads, ~0.3 s each with this process's heap) without rescanning the frozen heap
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = Dataset(str(NIDM_PAIN), target="mni152_2mm")
        ref = ALE(null_method="approximate", random_state=3).fit(ds)
        ref = FWECorrector(method="montecarlo", voxel_thresh=0.001, n_iters=5).transform(ref)
        theirs = {
            ours: np.asarray(ref.get_map(name).dataobj)
            for ours, name in (
                ("stat", "stat"),
                ("z", "z"),
                ("logp_cluster_fwe", "logp_desc-size_level-cluster_corr-FWE_method-montecarlo"),
            )
        }
    for ours, reference in theirs.items():
        np.testing.assert_allclose(
            np.asarray(res.maps[ours].dataobj), reference, rtol=1e-6, atol=1e-9
        )
    assert res.params["n_experiments"] == 21 and res.params["n_foci"] == 267


# --------------------------------------------------------------------------- ground truth


@pytest.mark.slow
def test_planted_convergence_null_and_conjunction(tmp_path: Path) -> None:
    """Three simulated sets of 18 experiments: two with a focus near the left amygdala in
    70 % of experiments, one without convergence.  (One test, so that ``pytest -n 2`` fits
    the three analyses once.)"""
    a = simulate_foci(tmp_path, "amyA", 18, AMYGDALA_L, 0.7, seed=1)
    b = simulate_foci(tmp_path, "amyB", 18, AMYGDALA_L, 0.7, seed=2)
    # At alpha = .05 one null dataset in twenty shows a cluster by chance: the seed is
    # fixed, so this checks the pipeline is not anti-conservative on this draw.
    null = simulate_foci(tmp_path, "null", 18, None, 0.0, seed=6)
    res_a, res_b, res_null = (
        CoordinateMetaAnalysis(iterations=50, random_state=0).fit(t, name=n).result_
        for t, n in ((a, "a"), (b, "b"), (null, "null"))
    )
    # recovery of the planted convergence
    assert len(res_a.clusters) == 1
    top = res_a.clusters.iloc[0]
    assert _distance(top, AMYGDALA_L) < 8
    assert "Amygdala" in top["label"] or "Amygdala" in top["regions"]
    assert top["p_fwe"] < 0.05
    assert top["affect_overlap"] > 0.5  # the amygdala is in the affect network
    assert top["volume_mm3"] == pytest.approx(top["n_voxels"] * 8)
    # no convergence, no cluster
    assert res_null.clusters.empty
    # conjunction: shared convergence kept, unshared dropped, minimum statistic
    both = conjunction(res_a, res_b)
    assert len(both.clusters) == 1 and _distance(both.clusters.iloc[0], AMYGDALA_L) < 8
    assert conjunction(res_a, res_null).clusters.empty
    stat = np.asarray(both.maps["stat"].dataobj)
    assert np.all(stat <= np.asarray(res_a.maps["stat"].dataobj) + 1e-7)
    assert np.all(stat <= np.asarray(res_b.maps["stat"].dataobj) + 1e-7)


def test_subtraction_refuses_the_same_experiments_twice(tmp_path: Path) -> None:
    """(Recovery of both directions of a planted difference is tested through the CLI in
    test_cli_versus_writes_contrast_and_conjunction.)"""
    a = simulate_foci(tmp_path, "amy", 3, AMYGDALA_L, 1.0, seed=4)
    with pytest.raises(BrainmatchInputError, match=r"share 3 experiment.*identical foci"):
        subtract(a, a, iterations=10)


# --------------------------------------------------------------------------- published data


@pytest.mark.slow
def test_reproduces_treated_vs_untreated_cluster(shared_data: Path) -> None:
    """Saberi et al. 2025 (pyALE, 10000 iterations): treated > untreated gives one cluster,
    132 voxels centred at MNI (-38, 30, 28), left dorsolateral prefrontal cortex."""
    table = read_coordinates(
        shared_data / "antidepressant-ale" / "Contrast" / "coordinates.xlsx",
        select=["Contrast=Untreated<Treated"],
    )
    res = CoordinateMetaAnalysis(iterations=100, random_state=0).fit(table).result_
    assert len(res.clusters) == 1
    top = res.clusters.iloc[0]
    assert _distance(top, (-38, 30, 28)) < 8
    assert top["label"] == "Left_Middle_Frontal_Gyrus"
    assert 500 < top["volume_mm3"] < 1500  # published 132 voxels of 8 mm3 = 1056 mm3


# --------------------------------------------------------------------------- bad input


def test_too_few_experiments_and_bad_options(tmp_path: Path) -> None:
    one = simulate_foci(tmp_path, "one", 1, None, 0.0, seed=0)
    with pytest.raises(BrainmatchInputError, match="at least 2 experiments, the input has 1"):
        CoordinateMetaAnalysis(iterations=5).fit(one)
    two = simulate_foci(tmp_path, "two", 2, None, 0.0, seed=0)
    with pytest.raises(BrainmatchInputError, match="unknown method 'kda'"):
        CoordinateMetaAnalysis(method="kda").fit(two)
    with pytest.raises(BrainmatchInputError, match="--voxel-thresh must be between 0 and 1"):
        CoordinateMetaAnalysis(voxel_thresh=1.5).fit(two)
    with pytest.raises(BrainmatchInputError, match="--iterations must be a positive"):
        CoordinateMetaAnalysis(iterations=0).fit(two)
    with pytest.raises(BrainmatchInputError, match="unknown engine 'fast'"):
        CoordinateMetaAnalysis(engine="fast").fit(two)
    with pytest.raises(BrainmatchInputError, match="--n-jobs must be at least 1"):
        CoordinateMetaAnalysis(n_jobs=0).fit(two)


def test_cli_bad_engine_and_n_jobs(tmp_path: Path) -> None:
    src = tmp_path / "foci.txt"
    src.write_text(SLEUTH)
    for args, message in (
        (["--engine", "fast"], "unknown engine 'fast'"),
        (["--n-jobs", "-3"], "--n-jobs must be 0 (every core) or a positive"),
    ):
        result = CliRunner().invoke(app, ["cbma", str(src), "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_cli_engines_threads_and_mkda_agree_with_the_api(
    tmp_path: Path, no_glass_brains: None
) -> None:
    """Each --engine and --method value and --n-jobs through the CLI gives the Python
    API's numbers."""
    table = read_coordinates(NIDM_PAIN)
    api = {
        m: CoordinateMetaAnalysis(method=m, iterations=30, random_state=2).fit(table).result_
        for m in ("ale", "mkda")
    }
    assert len(api["ale"].clusters) > 0  # 30 iterations: p can go below 0.05
    cases = (
        ("ale", ["--engine", "nimare"]),
        ("ale", ["--engine", "brainmatch", "--n-jobs", "2"]),
        ("mkda", ["--method", "mkda"]),
    )
    for i, (method, args) in enumerate(cases):
        out = tmp_path / f"o{i}"
        result = CliRunner().invoke(
            app,
            ["cbma", str(NIDM_PAIN), "--out", str(out), "--iterations", "30", "--seed", "2", *args],
        )
        assert result.exit_code == 0, result.output
        clusters = pd.read_csv(out / "clusters.tsv", sep="\t")
        assert len(clusters) == len(api[method].clusters)
        np.testing.assert_allclose(
            clusters["p_fwe"], api[method].clusters["p_fwe"].astype(float), rtol=1e-5
        )
        assert json.loads((out / "results.json").read_text())["method"] == method


def test_focus_outside_brain_is_an_error(tmp_path: Path) -> None:
    rows = [
        {"experiment": f"s{e}", "x": -20 + e, "y": 0, "z": 0, "space": "MNI", "n_subjects": 10}
        for e in range(3)
    ]
    rows.append({"experiment": "s1", "x": 20, "y": 10, "z": 120, "space": "MNI", "n_subjects": 10})
    path = tmp_path / "f.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(
        BrainmatchInputError, match=r"row 5: focus \(20, 10, 120\).*'s1' lies outside the brain"
    ):
        CoordinateMetaAnalysis(iterations=5).fit(read_coordinates(path))


def test_sleuth_focus_outside_brain_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "foci.txt"
    path.write_text(
        "// Reference=MNI\n// A 2010: x\n// Subjects=10\n-24 -4 -18\n\n"
        "// B 2011: x\n// Subjects=12\n10 20 30\n-10 -90 -150\n"
    )
    with pytest.raises(BrainmatchInputError, match=r"line 9: focus \(-10, -90, -150\)"):
        CoordinateMetaAnalysis(iterations=5).fit(read_coordinates(path))


# --------------------------------------------------------------------------- outputs and CLI


SLEUTH = "// Reference=Talairach\n" + "\n".join(
    f"// Study{e} et al., 20{10 + e}: task\n// Subjects={10 + e}\n"
    f"-22 -4 -16\n{10 * e - 40} 20 30\n30 {-60 + 5 * e} 10\n"
    for e in range(8)
)


def test_cli_writes_every_output(tmp_path: Path) -> None:
    src = tmp_path / "foci.txt"
    src.write_text(SLEUTH)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["cbma", str(src), "--out", str(out), "--iterations", "20"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    for key in (
        "n_experiments",
        "n_foci",
        "iterations",
        "voxel_thresh",
        "clusters",
        "description",
        "references",
        "notes",
    ):
        assert key in summary
    assert summary["n_experiments"] == 8
    assert any("Talairach" in n for n in summary["notes"])  # converted, and said so
    # 8 < 17 experiments: warned in the terminal, results.json and the report
    assert "warning:" in result.output and "Eickhoff et al. 2016" in result.output
    assert any("only 8 experiments" in w for w in summary["warnings"])
    clusters = pd.read_csv(out / "clusters.tsv", sep="\t")
    assert {
        "cluster_id",
        "x",
        "y",
        "z",
        "volume_mm3",
        "peak_stat",
        "p_fwe",
        "label",
        "affect_overlap",
    } <= set(clusters.columns)
    for name in (
        "desc-stat_map.nii.gz",
        "desc-z_map.nii.gz",
        "desc-logpClusterFWE_map.nii.gz",
        "desc-zClusterFWE_map.nii.gz",
        "report.html",
        "desc-glass_figure.png",
        "experiments.tsv",
    ):
        assert (out / name).is_file(), name
    assert nib.load(out / "desc-z_map.nii.gz").shape == (91, 109, 91)
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Lancaster" in html and "Eickhoff" in html
    assert "Warning:</b> only 8 experiments" in html
    # self-contained: figures inline, nothing fetched from elsewhere
    assert "<img" not in html and 'href="http' not in html and "<link" not in html
    # wide tables scroll inside their box instead of overflowing the page
    assert "overflow-x: auto" in html
    assert '<div class="table-wrap">' in html
    # no raw tqdm bar leaked (NiMARE's bars are replaced by brainmatch's)
    assert "it/s" not in result.output
    # another command never writes into cbma's folder; a cbma rerun updates it in place
    before = (out / "results.json").read_bytes()
    other = CliRunner().invoke(
        app, ["meta", str(src), "--out", str(out), "--effect", "x", "--se", "y"]
    )
    assert other.exit_code == 2 and "outputs of `brainmatch cbma`" in other.output
    assert (out / "results.json").read_bytes() == before
    again = CliRunner().invoke(app, ["cbma", str(src), "--out", str(out), "--iterations", "20"])
    assert again.exit_code == 0, again.output


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "foci.csv"
    src.write_text("experiment,x,y,z,n_subjects\na,1,2,3,10\n")
    result = CliRunner().invoke(app, ["cbma", str(src), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "error:" in result.output and "missing column(s) space" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.slow
def test_cli_versus_writes_contrast_and_conjunction(tmp_path: Path) -> None:
    """One table, two selections: both main effects, the subtraction and the conjunction."""
    simulate_foci(tmp_path, "amy", 12, AMYGDALA_L, 1.0, seed=4)
    simulate_foci(tmp_path, "dl", 12, DLPFC_R, 1.0, seed=5)
    both = pd.concat(
        [
            pd.read_csv(tmp_path / "amy.tsv", sep="\t").assign(group="therapy"),
            pd.read_csv(tmp_path / "dl.tsv", sep="\t").assign(group="medication"),
        ]
    )
    src = tmp_path / "both.csv"
    both.to_csv(src, index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "cbma",
            str(src),
            "--select",
            "group=therapy",
            "--versus",
            str(src),
            "--versus-select",
            "group=medication",
            "--iterations",
            "20",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    assert set(summary) == {"A", "B", "contrast", "conjunction"}
    contrast = pd.read_csv(out / "contrast_clusters.tsv", sep="\t")
    up = contrast[contrast["direction"] == "+"].iloc[0]
    down = contrast[contrast["direction"] == "-"].iloc[0]
    assert _distance(up, AMYGDALA_L) < 12 and _distance(down, DLPFC_R) < 12
    assert pd.read_csv(out / "conjunction_clusters.tsv", sep="\t").empty
    assert "therapy > medication" in result.output
    html = (out / "report.html").read_text()
    assert "Conjunction" in html
    # an empty conjunction gets a sentence, not a blank glass brain
    assert not (out / "conjunction_desc-glass_figure.svg").exists()
    assert "nothing to draw" in html
    assert "it/s" not in result.output
    assert "two main effects and their contrast" not in result.output  # no bar off a terminal
    # 12 < 17 experiments per set: warned for each set
    assert "only 12 experiments" in result.output
    assert summary["A"]["warnings"] and summary["contrast"]["warnings"]
    # the same comparison from Python: the library holds the two-set workflow
    from brainmatch.evidence.cbma import compare

    table = read_coordinates(src, select=["group=therapy"])
    other = read_coordinates(src, select=["group=medication"])
    comp = compare(table, other, name_a="therapy", name_b="medication", iterations=20)
    np.testing.assert_allclose(comp.contrast.clusters["p_fwe"], contrast["p_fwe"], rtol=1e-5)
    assert set(comp.to_dict()) == {"A", "B", "contrast", "conjunction"}
    assert "therapy" in comp._repr_html_()


@pytest.mark.slow
def test_mkda_density_equals_nimare() -> None:
    from nimare.dataset import Dataset
    from nimare.meta.cbma import MKDADensity

    res = CoordinateMetaAnalysis(method="mkda", iterations=5).fit(read_coordinates(NIDM_PAIN))
    with _quiet(), warnings.catch_warnings():  # _quiet: see test_maps_and_cluster_p_...
        warnings.simplefilter("ignore")
        ds = Dataset(str(NIDM_PAIN), target="mni152_2mm")
        ref = MKDADensity(null_method="approximate", random_state=0).fit(ds)
        theirs = np.asarray(ref.get_map("stat").dataobj)
    np.testing.assert_allclose(np.asarray(res.result_.maps["stat"].dataobj), theirs)
    assert "Wager" in res.result_.description and res.result_.method == "mkda"


def test_study_name_strips_contrast_tags() -> None:
    """Two contrasts of one study (pyALE blocks) are recognised as sharing subjects."""
    from brainmatch.evidence.cbma import _study_name

    assert _study_name("Abdallah_2017 [Untreated<Treated]") == "Abdallah_2017"
    assert _study_name("Smith 2010: task #2") == "Smith 2010: task"
    assert _study_name("Cheng_2016") == "Cheng_2016"
