"""Every enumerated CLI option value the other test files do not already run (issue 19).

Each case runs ``brainmatch <command>`` through ``typer.testing.CliRunner`` on tiny data,
checks the exit status, and compares one number with the Python API on the same input:

- ``simulate --resolution 2/3/4``, ``--sessions 1/2``, ``--effect-size null/realistic/strong/X``:
  the image shape / session layout, and ``ground_truth.tsv`` equal to ``simulate_trial``;
- ``extract --atlas`` (every built-in atlas), ``--denoise none/simple/scrubbing/compcor``,
  ``--connectivity correlation/partial/tangent``, band-pass ``--low-pass/--high-pass``,
  ``--freesurfer``, ``--standardize``, ``--detrend/--no-detrend``, ``--scheduler``: the
  feature table equal to ``extract_dataset`` with the same option (``--modalities anat``
  without ``--freesurfer``: exit 2, one ``error:`` line);
- ``train --cv``, ``--select-features none/auto/K``, ``--model per-arm``, ``--better``,
  ``--permutation-null auto/freedman-lane/rerandomise/within-arm``,
  ``--scheduler`` (a Dask LocalCluster): the policy gain in ``metrics.json`` equal to
  ``validate``;
- ``cbma --tal-transform spm/fsl/other``: the statistic map equal to
  ``CoordinateMetaAnalysis`` on ``read_coordinates(..., tal_transform=...)``.

Already covered elsewhere (not repeated here): ``meta --method/--measure/--multiarm`` and
``nma --method`` (test_meta_nma_cli.py), ``meta --test/--schema`` (test_meta_cli.py),
``train --model`` for every learner (test_train_learners.py), ``cbma --method/--engine``
(test_cbma.py), ``change --engine/--site-effect`` (test_change.py), ``--modalities``
(test_extract_modalities.py, test_extract_dwi.py), ``--task-noise-model``/``--task-hrf``
(test_extract_task.py), ``--dwi-fit-method``/``--dwi-tracts`` (test_extract_dwi.py),
``normative fit --noise/--likelihood`` (test_profile.py), ``sessions --method`` and
``simulate-sessions --augmentation-type/--timing/--effect-size`` (test_sessions_cli.py),
``change --method`` (test_change.py), ``durability --model/--penalizer``
(test_durability.py), ``modalities --format`` (test_modalities.py), ``cbma --scheduler``
(test_cbma_engine.py), ``recommend MODEL BIDS_DIR --participant-label`` on a simulated
BIDS + fMRIPrep subject (test_recommend.py, equal to ``recommend`` on the same folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.evidence.cbma import CoordinateMetaAnalysis
from brainmatch.evidence.cbma_io import read_coordinates
from brainmatch.features import extract_dataset
from brainmatch.simulate import TrialSpec, simulate_trial
from brainmatch.simulate.model import EFFECT_SIZES

runner = CliRunner()


def _invoke(*args: str) -> None:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINMATCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five subjects, two sites, 4 mm, 40 volumes, with FreeSurfer aseg: built by the CLI."""
    out = tmp_path_factory.mktemp("cliopt") / "bids"
    _invoke(
        "simulate", str(out), "--n-subjects", "5", "--sites", "2", "--resolution", "4",
        "--n-volumes", "40", "--seed", "11", "--n-jobs", "1",
    )  # fmt: skip
    return out


# ---------------------------------------------------------------- simulate


def _truth(path: Path) -> pd.DataFrame:
    return pd.read_csv(path / "ground_truth.tsv", sep="\t")


@pytest.mark.parametrize(
    "effect", ["null", "realistic", "strong", "0.8"], ids=lambda e: f"effect-{e}"
)
def test_simulate_effect_size_equals_api(tmp_path: Path, effect: str) -> None:
    out = tmp_path / "cli"
    _invoke(
        "simulate", str(out), "--n-subjects", "4", "--sites", "2", "--resolution", "4",
        "--n-volumes", "20", "--seed", "5", "--effect-size", effect, "--n-jobs", "1",
    )  # fmt: skip
    spec = TrialSpec(
        n_subjects=4, n_sites=2, resolution=4, n_volumes=20, seed=5,
        effect_size=EFFECT_SIZES[effect] if effect in EFFECT_SIZES else float(effect),
    )  # fmt: skip
    simulate_trial(spec, tmp_path / "api", n_jobs=1)
    cli, api = _truth(out), _truth(tmp_path / "api")
    pd.testing.assert_frame_equal(cli, api)
    # the option reaches the data: no heterogeneity of the CBT - SSRI advantage under null
    spread = (cli["mu__CBT"] - cli["mu__SSRI"]).std()
    assert (spread == 0) == (spec.effect_size == 0), spread


@pytest.mark.parametrize(
    ("resolution", "shape"),
    [(2, (97, 115, 97)), (3, (65, 77, 65)), (4, (49, 58, 49))],
    ids=["res-2", "res-3", "res-4"],
)
def test_simulate_resolution_sets_image_grid(tmp_path: Path, resolution: int, shape: tuple) -> None:
    out = tmp_path / "sim"
    _invoke(
        "simulate", str(out), "--n-subjects", "2", "--sites", "1", "--resolution",
        str(resolution), "--n-volumes", "20", "--n-jobs", "1",
    )  # fmt: skip
    bold = next((out / "derivatives" / "fmriprep" / "sub-001").rglob("*_bold.nii.gz"))
    assert f"res-{resolution}" in bold.name
    img: Any = nib.load(bold)
    assert img.shape == (*shape, 20)
    np.testing.assert_allclose(img.header.get_zooms()[:3], (resolution,) * 3)


@pytest.mark.parametrize("sessions", [1, 2], ids=["sessions-1", "sessions-2"])
def test_simulate_sessions(tmp_path: Path, sessions: int) -> None:
    out = tmp_path / "sim"
    _invoke(
        "simulate", str(out), "--n-subjects", "2", "--sites", "1", "--resolution", "4",
        "--n-volumes", "20", "--sessions", str(sessions), "--n-jobs", "1",
    )  # fmt: skip
    bolds = sorted((out / "derivatives" / "fmriprep" / "sub-001").rglob("*_bold.nii.gz"))
    assert len(bolds) == sessions
    if sessions == 2:
        assert {b.name.split("_")[1] for b in bolds} == {"ses-pre", "ses-post"}
    spec = TrialSpec(n_subjects=2, n_sites=1, resolution=4, n_volumes=20, sessions=sessions)
    simulate_trial(spec, tmp_path / "api", n_jobs=1)
    pd.testing.assert_frame_equal(_truth(out), _truth(tmp_path / "api"))


# ---------------------------------------------------------------- extract

_EXTRACT_CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    # id: (CLI flags, extract_dataset keyword arguments)
    "atlas-harvard-oxford": (["--atlas", "harvard-oxford"], {"atlas": "harvard-oxford"}),
    "atlas-aal": (["--atlas", "aal"], {"atlas": "aal"}),
    "atlas-desikan-killiany": (["--atlas", "desikan-killiany"], {"atlas": "desikan-killiany"}),
    "atlas-destrieux": (["--atlas", "destrieux"], {"atlas": "destrieux"}),
    "atlas-affect": (["--atlas", "affect"], {"atlas": "affect"}),
    "denoise-none": (["--denoise", "none"], {"denoise": "none"}),
    "denoise-simple": (["--denoise", "simple"], {"denoise": "simple"}),
    "denoise-scrubbing": (
        ["--denoise", "scrubbing", "--fd-threshold", "0.3"],
        {"denoise": "scrubbing", "fd_threshold": 0.3},
    ),
    "denoise-compcor": (["--denoise", "compcor"], {"denoise": "compcor"}),
    "connectivity-partial-tangent": (
        ["--connectivity", "correlation,partial,tangent"],
        {"connectivity": ("correlation", "partial", "tangent")},
    ),
    "band-pass": (
        ["--low-pass", "0.08", "--high-pass", "0.01"],
        {"low_pass": 0.08, "high_pass": 0.01},
    ),
    "freesurfer": (["--freesurfer", "{fs}"], {"freesurfer": "{fs}"}),
    "standardize-zscore": (["--standardize", "zscore"], {"standardize": "zscore"}),
    "standardize-none": (["--standardize", "none"], {"standardize": "none"}),
    "detrend": (["--detrend"], {"detrend": True}),
    "no-detrend": (["--no-detrend"], {"detrend": False}),
}


@pytest.mark.parametrize("case", list(_EXTRACT_CASES), ids=list(_EXTRACT_CASES))
def test_extract_option_equals_api(trial: Path, tmp_path: Path, case: str) -> None:
    flags, kwargs = _EXTRACT_CASES[case]
    fs = str(trial / "derivatives" / "freesurfer")
    flags = [f.replace("{fs}", fs) for f in flags]
    kwargs = {k: (fs if v == "{fs}" else v) for k, v in kwargs.items()}
    if "--atlas" not in flags:
        flags = ["--atlas", "affect", *flags]
        kwargs.setdefault("atlas", "affect")
    deriv = trial / "derivatives" / "fmriprep"
    common = ["--participant-label", "001,002", "--n-jobs", "1", "--no-qc-reports"]
    _invoke("extract", str(trial), str(tmp_path / "cli"), "participant",
            "--derivatives", str(deriv), *flags, *common)  # fmt: skip
    api = extract_dataset(
        trial, tmp_path / "api", derivatives=deriv, participant_label=["001", "002"],
        n_jobs=1, qc_reports=False, **kwargs,
    )  # fmt: skip
    assert api.failures.empty
    cli = pd.read_parquet(tmp_path / "cli" / "features.parquet")
    ref = pd.read_parquet(api.features_path)
    assert len(cli) == 2 and list(cli.columns) == list(ref.columns)
    num = [c for c in ref.columns if pd.api.types.is_float_dtype(ref[c])]
    assert num
    np.testing.assert_allclose(cli[num].to_numpy(), ref[num].to_numpy(), rtol=1e-6)
    # the region time series too (what --standardize changes; features are scale-free)
    series = sorted((tmp_path / "api").rglob("*_timeseries.tsv"))
    assert series
    for f in series:
        twin = tmp_path / "cli" / f.relative_to(tmp_path / "api")
        a, b = (pd.read_csv(x, sep="\t").to_numpy(dtype=float) for x in (f, twin))
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
    if case == "connectivity-partial-tangent":
        assert any(c.startswith("pconn__") for c in cli.columns), list(cli.columns)[:20]
        assert any(c.startswith("tconn__") for c in cli.columns)
    if case == "freesurfer":
        assert any(c.startswith("vol__") for c in cli.columns), list(cli.columns)


# ---------------------------------------------------------------- train


@pytest.fixture(scope="module")
def regime_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """80 patients, 3 sites, 20 features, a planted sparse interaction (draw_regime)."""
    from brainmatch.validation.regimes import draw_regime

    r = draw_regime(80, 20, "sparse", 2, sites=3, seed=9, effect=1.5)
    d = tmp_path_factory.mktemp("regime")
    r.features.to_csv(d / "f.csv", index=False)
    r.outcomes.to_csv(d / "o.tsv", sep="\t", index=False)
    return d / "f.csv", d / "o.tsv", r


_TRAIN_CASES: dict[str, tuple[list[str], dict[str, Any]]] = {
    # id: (CLI flags, validate keyword arguments)
    "cv-repeated-kfold": (["--cv", "repeated-kfold"], {"cv": "repeated-kfold"}),
    "cv-leave-site-out": (
        ["--cv", "leave-site-out", "--site-column", "site"],
        {"cv": "leave-site-out", "site_column": "site"},
    ),
    "no-harmonize": (
        ["--cv", "leave-site-out", "--site-column", "site", "--no-harmonize"],
        {"cv": "leave-site-out", "site_column": "site", "harmonize": False},
    ),
    "select-features-none": (["--select-features", "none"], {"select": "none"}),
    "select-features-auto": (["--select-features", "auto"], {"select": "auto"}),
    "select-features-K": (["--select-features", "5"], {"select": 5}),
    "model-per-arm": (["--model", "per-arm"], {"model": "per-arm"}),
    "better-lower": (["--better", "lower"], {"better": "lower"}),
    **{
        f"permutation-null-{v}": (["--permutation-null", v], {"permutation_null": v})
        for v in ("auto", "freedman-lane", "rerandomise", "within-arm")
    },
}


@pytest.mark.parametrize("case", list(_TRAIN_CASES), ids=list(_TRAIN_CASES))
def test_train_option_equals_api(regime_files, tmp_path: Path, case: str) -> None:  # type: ignore[no-untyped-def]
    from brainmatch.selection import validate

    features, outcomes, r = regime_files
    flags, kwargs = _TRAIN_CASES[case]
    _invoke(
        "train", "--features", str(features), "--outcomes", str(outcomes),
        "--treatment-column", "arm", "--outcome-column", "y",
        "--n-repeats", "1", "--n-permutations", "3", "--out", str(tmp_path / "m"),
        "--no-report", "--no-learning-curve", *(flags if "--better" in flags else
        [*flags, "--better", "higher"]),
    )  # fmt: skip
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    kwargs = {"better": "higher", **kwargs}
    api = validate(
        r.features, r.outcomes, treatment_column="arm", outcome_column="y",
        n_repeats=1, n_permutations=3, learning_curve=False, **kwargs,
    )  # fmt: skip
    gain = m["selection"]["policy_gain"]
    assert np.isfinite(gain)
    assert gain == pytest.approx(api.metrics["selection"]["policy_gain"])
    if case in ("cv-leave-site-out", "no-harmonize"):
        assert m["cv"]["scheme"] == "leave-site-out" and m["cv"]["n_splits"] == 3
        assert m["options"]["harmonize"] is (case != "no-harmonize")
    if case == "no-harmonize":
        # the features were not harmonised: the model needs no site for a new patient
        from brainmatch.selection import recommend

        got = recommend(tmp_path / "m" / "model.npz", r.features.iloc[:2])
        assert got.model["site_harmonisation"] is False and len(got.patients) == 2
    if "permutation_null" in kwargs:
        want = {"auto": "freedman-lane"}.get(kwargs["permutation_null"], kwargs["permutation_null"])
        assert m["selection"]["permutation_null_method"] == want
        assert m["selection"]["permutation_p"] == pytest.approx(
            api.metrics["selection"]["permutation_p"]
        )


def test_train_scheduler_equals_api(regime_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``train --scheduler`` (folds, permutations, bootstrap on a LocalCluster) = serial API."""
    from distributed import LocalCluster

    from brainmatch.selection import validate

    features, outcomes, r = regime_files
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        _invoke(
            "train", "--features", str(features), "--outcomes", str(outcomes),
            "--treatment-column", "arm", "--outcome-column", "y", "--better", "higher",
            "--n-repeats", "1", "--n-permutations", "19", "--out", str(tmp_path / "m"),
            "--no-report", "--no-learning-curve", "--scheduler", cluster.scheduler_address,
        )  # fmt: skip
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    api = validate(
        r.features, r.outcomes, treatment_column="arm", outcome_column="y", better="higher",
        n_repeats=1, n_permutations=19, learning_curve=False,
    )  # fmt: skip
    # the CSV round trip of the inputs changes the last digit; test_train_scale.py checks
    # bitwise equality with the serial run on the same inputs
    assert m["selection"]["policy_gain"] == pytest.approx(api.metrics["selection"]["policy_gain"])
    assert m["selection"]["permutation_p"] == pytest.approx(
        api.metrics["selection"]["permutation_p"]
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-permutations", "-5"], "--n-permutations -5: must be a whole number >= 0"),
        (["--threshold", "-1"], "--threshold -1.0: the clinically meaningful difference"),
        (["--covariates", "sitee"], "--covariates 'sitee': no such column in the outcomes table"),
        (["--covariates", "y"], "--covariates 'y' is the outcome (--outcome-column)"),
        (["--baseline-column", "y"], "--baseline-column 'y' is the outcome (--outcome-column)"),
        (["--site-column", "arm"], "--site-column 'arm' is the treatment (--treatment-column)"),
        (
            ["--covariates", "site,site"],
            "--covariates 'site' is given twice (also as --covariates 'site')",
        ),
    ],
    ids=[
        "n-permutations",
        "threshold",
        "no-such-covariate",
        "covariates-outcome",
        "baseline-outcome",
        "site-arm",
        "twice",
    ],
)
def test_train_refuses_bad_roles_naming_the_flag(  # type: ignore[no-untyped-def]
    regime_files, tmp_path: Path, flags: list[str], message: str
) -> None:
    features, outcomes, _ = regime_files
    res = CliRunner().invoke(
        app,
        [
            "train", "--features", str(features), "--outcomes", str(outcomes),
            "--treatment-column", "arm", "--outcome-column", "y", "--out", str(tmp_path / "m"),
            "--no-report", *flags,
        ],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- cbma


@pytest.fixture(scope="module")
def tal_foci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten Talairach-space experiments with foci around the left amygdala."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "experiment": f"s{e}", "x": -22 + rng.normal(0, 3), "y": -4 + rng.normal(0, 3),
            "z": -16 + rng.normal(0, 3), "space": "TAL", "n_subjects": 15 + e,
        }
        for e in range(10)
        for _ in range(3)
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("foci") / "foci.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("transform", ["spm", "fsl", "other"], ids=lambda t: f"tal-{t}")
def test_cbma_tal_transform_equals_api(tal_foci: Path, tmp_path: Path, transform: str) -> None:
    out = tmp_path / "o"
    _invoke("cbma", str(tal_foci), "--out", str(out), "--iterations", "10", "--seed", "1",
            "--n-jobs", "1", "--tal-transform", transform)  # fmt: skip
    table = read_coordinates(tal_foci, tal_transform=transform)
    api = CoordinateMetaAnalysis(iterations=10, random_state=1).fit(table).result_
    stat: Any = nib.load(out / "desc-stat_map.nii.gz")
    cli = np.asarray(stat.dataobj)
    ref = np.asarray(api.maps["stat"].dataobj)
    np.testing.assert_allclose(cli, ref, rtol=1e-5, atol=1e-8)
    notes = json.loads((out / "results.json").read_text())["notes"]
    assert any(f"tal2icbm_{transform}" in n for n in notes)
    # the transforms differ: the peak sits in a different voxel or has a different value
    other = {"spm": "fsl", "fsl": "other", "other": "spm"}[transform]
    alt = CoordinateMetaAnalysis(iterations=10, random_state=1).fit(
        read_coordinates(tal_foci, tal_transform=other)
    )
    assert not np.allclose(np.asarray(alt.result_.maps["stat"].dataobj), ref)


def test_extract_scheduler_equals_api(trial: Path, tmp_path: Path) -> None:
    """``extract --scheduler`` (a Dask LocalCluster in this process) = the serial API."""
    from distributed import LocalCluster

    deriv = trial / "derivatives" / "fmriprep"
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        _invoke("extract", str(trial), str(tmp_path / "cli"), "participant",
                "--derivatives", str(deriv), "--atlas", "affect", "--participant-label",
                "001,002", "--no-qc-reports", "--scheduler", cluster.scheduler_address)  # fmt: skip
    api = extract_dataset(
        trial, tmp_path / "api", derivatives=deriv, atlas="affect",
        participant_label=["001", "002"], n_jobs=1, qc_reports=False,
    )  # fmt: skip
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "cli" / "features.parquet"), pd.read_parquet(api.features_path)
    )


def test_extract_anat_without_freesurfer_is_refused(trial: Path, tmp_path: Path) -> None:
    """``--modalities anat`` needs ``--freesurfer``: exit 2 with one ``error:`` line."""
    res = runner.invoke(
        app,
        ["extract", str(trial), str(tmp_path / "o"), "participant", "--derivatives",
         str(trial / "derivatives" / "fmriprep"), "--atlas", "affect", "--modalities", "anat"],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--freesurfer" in errors[0], res.output
    assert "Traceback" not in res.output


def test_train_bad_permutation_null_names_the_flag(regime_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    features, outcomes, _ = regime_files
    base = ["train", "--features", str(features), "--outcomes", str(outcomes),
            "--treatment-column", "arm", "--n-permutations", "3"]  # fmt: skip
    res = runner.invoke(
        app,
        [
            *base,
            "--outcome-column",
            "y",
            "--permutation-null",
            "bogus",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert res.exit_code == 2
    assert "--permutation-null 'bogus'" in res.output and "Traceback" not in res.output
    res = runner.invoke(
        app,
        [
            *base,
            "--time-column",
            "y",
            "--permutation-null",
            "rerandomise",
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert res.exit_code == 2 and "--permutation-null: not used with --time-column" in res.output


def test_installed_console_script_runs() -> None:
    """The ``brainmatch`` command the package installs (``[project.scripts]``) is the one
    the README and ``make demo`` use: it starts, and a bad option exits 2 with one line."""
    import subprocess
    import sys

    from brainmatch import __version__

    exe = Path(sys.executable).with_name("brainmatch")
    if not exe.exists():
        pytest.skip(f"no installed console script beside {sys.executable}")
    ok = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == f"brainmatch {__version__}"
    bad = subprocess.run(
        [str(exe), "train", "--no-such-flag"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
    assert len(bad.stderr.strip().splitlines()) == 1
