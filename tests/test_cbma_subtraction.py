"""ALE subtraction, conjunction and the observed ALE map on brainmatch's engine, against
NiMARE (the reference implementation).

- the observed ALE map and the modelled-activation rows equal NiMARE's (NiMARE's shipped
  pain dataset, a small simulated set and, when present, the shared antidepressant data);
- same seed: the subtraction's permutation nulls (largest |difference|, largest cluster
  size and mass), its cluster-forming threshold and every map (difference, z,
  uncorrected p, voxel- and cluster-level FWE) equal NiMARE's ``ALESubtraction`` +
  ``FWECorrector`` value for value; one thread or two give the same result;
- other seeds: two-sample Kolmogorov-Smirnov tests against NiMARE's nulls with the same
  number of permutations, three seed pairs;
- the API (``subtract``) and the CLI (``--versus``) give NiMARE's clusters;
- the conjunction is NiMARE's ``conjunction_analysis`` (minimum statistic) of the two
  thresholded maps.
"""

from __future__ import annotations

import importlib.resources
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.evidence import ale_engine, ale_subtraction
from brainmatch.evidence.cbma import (
    CoordinateMetaAnalysis,
    _dataset,
    _observed_ma,
    _quiet,
    brain_mask,
    conjunction,
    subtract,
)
from brainmatch.evidence.cbma_io import CoordinateTable, read_coordinates

NIDM_PAIN = Path(str(importlib.resources.files("nimare") / "resources" / "nidm_pain_dset.json"))
NULL_KEYS = {
    "max_abs": "values_level-voxel_corr-fwe_method-montecarlo",
    "max_size": "values_desc-size_level-cluster_corr-fwe_method-montecarlo",
    "max_mass": "values_desc-mass_level-cluster_corr-fwe_method-montecarlo",
}
THRESH_KEY = "summary_stat_thresh_level-voxel_corr-fwe_method-montecarlo"


@pytest.fixture(scope="module")
def pain_sets() -> tuple[CoordinateTable, CoordinateTable]:
    """NiMARE's pain dataset split in two sets (11 and 10 experiments)."""
    table = read_coordinates(NIDM_PAIN)
    names = sorted(table.foci["experiment"].unique())

    def part(keep: list[str]) -> CoordinateTable:
        rows = table.foci[table.foci["experiment"].isin(keep)].reset_index(drop=True)
        return CoordinateTable(rows, table.source, [])

    return part(names[:11]), part(names[11:])


def _nimare_subtraction(a: Any, b: Any, iterations: int, seed: int) -> tuple[Any, Any]:
    from nimare.correct import FWECorrector
    from nimare.meta.cbma import ALESubtraction

    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ALESubtraction(
            n_iters=iterations, voxel_thresh=0.001, vfwe_only=False, random_state=seed
        )
        res = est.fit(_dataset(a), _dataset(b))
        corrected = FWECorrector(
            method="montecarlo", n_iters=iterations, voxel_thresh=0.001
        ).transform(res)
    return est, corrected


# Reports without rendering their glass brains (about 1 s of CPU a figure), for CLI runs
# whose test checks numbers or terminal output only; the figures themselves are checked in
# tests/test_cbma.py (test_cli_writes_every_output, test_cli_versus_writes_contrast_and_...).
def _no_glass_brain(*args: Any, **kwargs: Any) -> tuple[str, bytes]:
    return "<svg></svg>", b""


NO_GLASS_BRAINS = (
    "import brainmatch.reports.cbma as r; "
    "r._glass_brain_svg = lambda *a, **k: ('<svg></svg>', b''); "
    "from brainmatch.cli.main import main; main()"
)


def _plan(a: Any, b: Any) -> ale_subtraction.SubtractionPlan:
    ma1, mask3d = _observed_ma(a)
    ma2, _ = _observed_ma(b)
    return ale_subtraction.subtraction_plan(ma1, ma2, mask3d)


def _simulated(tmp_path: Path) -> CoordinateTable:
    """Six experiments of 2-6 foci spread through the brain, sample sizes 8-40."""
    rng = np.random.default_rng(3)
    mask = brain_mask()
    ijk = np.argwhere(np.asarray(mask.dataobj) > 0)
    rows = []
    for e in range(6):
        pts = nib.affines.apply_affine(mask.affine, ijk[rng.integers(0, len(ijk), 2 + e % 5)])
        n = int(rng.integers(8, 41))
        rows += [
            {"experiment": f"sim{e}", "x": p[0], "y": p[1], "z": p[2], "space": "MNI"}
            | {"n_subjects": n}
            for p in pts
        ]
    path = tmp_path / "sim.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return read_coordinates(path)


# --------------------------------------------------------------------------- observed map


def _assert_ale_map_equals_nimare(table: CoordinateTable) -> None:
    from nimare.meta.cbma import ALE

    with _quiet():
        est = ALE(null_method="approximate")
        res = est.fit(_dataset(table))
    plan = ale_engine.plan_from_estimator(est, 0.01)
    ma, ids = ale_engine.observed_ma(est, plan)
    reference = est.kernel_transformer.transform(
        est.inputs_["coordinates"], masker=est.masker, return_type="sparse"
    ).tocsr()
    assert ids == [str(i) for i in est.inputs_["id"]]
    assert (ma != reference).nnz == 0  # modelled activation, entry for entry
    ours = ale_engine.ale_values(ma).astype(np.float64)
    theirs = res.get_map("stat", return_type="array").astype(np.float64)
    assert np.abs(ours - theirs).max() <= 1e-10 * np.abs(theirs).max()
    # and through the estimator: the map it reports is the engine's
    fitted = CoordinateMetaAnalysis(iterations=5, random_state=0, jackknife=False).fit(table)
    np.testing.assert_array_equal(
        np.asarray(fitted.result_.maps["stat"].dataobj)[np.asarray(brain_mask().dataobj) > 0],
        ours.astype(np.float32),
    )


def test_ale_map_equals_nimare_pain_and_simulated(tmp_path: Path) -> None:
    """The engine's ALE map of NiMARE's shipped pain dataset (21 experiments, one sample
    size per experiment) and of a small simulated set equals NiMARE's ALE map (max
    absolute difference < 1e-10 relative; in fact bit for bit)."""
    _assert_ale_map_equals_nimare(read_coordinates(NIDM_PAIN))
    _assert_ale_map_equals_nimare(_simulated(tmp_path))


def test_ale_map_equals_nimare_antidepressant(shared_data: Path) -> None:
    path = shared_data / "antidepressant-ale" / "Contrast" / "coordinates.xlsx"
    if not path.is_file():
        pytest.skip(
            f"{path} absent: the coordinates of Saberi et al. 2025 (Mol Psychiatry; "
            "github.com/amnsbr/antidepressants_meta) are only in the workplace's shared data"
        )
    _assert_ale_map_equals_nimare(read_coordinates(path, select=["Contrast=Untreated<Treated"]))


# --------------------------------------------------------------------------- subtraction


def test_subtraction_equals_nimare_value_for_value(pain_sets: Any) -> None:
    """Same seed, NiMARE's permutations: the nulls, the cluster-forming threshold and every
    map equal NiMARE's ALESubtraction + FWECorrector exactly; two threads give the same."""
    a, b = pain_sets
    est, corrected = _nimare_subtraction(a, b, 30, seed=1)
    plan = _plan(a, b)
    null = ale_subtraction.run_subtraction(plan, 30, 1)
    nd = est.null_distributions_
    for field, key in NULL_KEYS.items():
        np.testing.assert_array_equal(getattr(null, field), np.asarray(nd[key], np.float32))
    assert null.max_size.max() > 0
    assert np.float32(null.threshold) == np.float32(nd[THRESH_KEY])
    maps = ale_subtraction.subtraction_maps(plan, null)
    names = list(corrected.maps)
    reference = {
        "stat": "stat_desc-group1MinusGroup2",
        "z": "z_desc-group1MinusGroup2",
        "p": "p_desc-group1MinusGroup2",
        "logp_voxel_fwe": next(k for k in names if k.startswith("logp_desc-group1MinusGroup2_")),
        "logp_cluster_fwe": next(k for k in names if "group1MinusGroup2Size" in k and "logp" in k),
    }
    for ours, theirs in reference.items():
        np.testing.assert_array_equal(
            maps[ours], corrected.get_map(theirs, return_type="array"), err_msg=ours
        )
    calls: list[tuple[int, int]] = []
    two = ale_subtraction.run_subtraction(
        plan, 30, 1, n_jobs=2, chunk_size=8, progress=lambda d, t: calls.append((d, t))
    )
    for field in ("max_abs", "max_size", "max_mass", "upper", "lower"):
        np.testing.assert_array_equal(getattr(two, field), getattr(null, field), err_msg=field)
    assert two.threshold == null.threshold
    assert calls[0] == (0, 30) and calls[-1] == (30, 30)


def test_permutations_are_nimares() -> None:
    from nimare.meta.cbma import ALESubtraction

    est = ALESubtraction(random_state=9)
    seeds = est._iteration_seeds(4, stream=ale_subtraction.PERMUTATION_STREAM)
    expected = [est._permute_pairwise_group_indices(12, 5, s) for s in seeds]
    ours = ale_subtraction.permutations(9, 12, 4)
    for row, (g1, g2) in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(row, np.r_[g1, g2])


@pytest.mark.slow
def test_subtraction_null_equal_in_distribution_across_seeds(pain_sets: Any) -> None:
    """Independent seeds (ours s, NiMARE s + 100), 60 permutations each: two-sample KS
    p > 0.05 for the largest |difference| and the largest cluster, three seed pairs; the
    cluster-forming thresholds agree within 5 %."""
    a, b = pain_sets
    plan = _plan(a, b)
    for seed in (1, 2, 3):
        ours = ale_subtraction.run_subtraction(plan, 60, seed, n_jobs=2)
        est, _ = _nimare_subtraction(a, b, 60, seed=seed + 100)
        nd = est.null_distributions_
        for field in ("max_abs", "max_size"):
            p = stats.ks_2samp(getattr(ours, field), nd[NULL_KEYS[field]]).pvalue
            assert p > 0.05, (seed, field, p)
        assert ours.threshold == pytest.approx(float(nd[THRESH_KEY]), rel=0.05)


@pytest.mark.slow
def test_subtract_api_and_cli_equal_nimare_engine(
    pain_sets: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``subtract`` on the engine and on NiMARE (same seed): the same maps and clusters;
    ``brainmatch cbma --versus`` gives the API's contrast clusters."""
    from brainmatch.reports import cbma as report

    monkeypatch.setattr(report, "_glass_brain_svg", _no_glass_brain)
    a, b = pain_sets
    ours = subtract(a, b, iterations=40, random_state=2)
    ref = subtract(a, b, iterations=40, random_state=2, engine="nimare")
    for key in ("stat", "z", "logp_cluster_fwe", "logp_voxel_fwe"):
        np.testing.assert_array_equal(
            np.asarray(ours.maps[key].dataobj, dtype=np.float32),
            np.asarray(ref.maps[key].dataobj, dtype=np.float32),
            err_msg=key,
        )
    pd.testing.assert_frame_equal(ours.clusters, ref.clusters)
    assert ours.params["engine"] == "brainmatch" and ref.params["engine"] == "nimare"
    assert ours.params["cluster_forming_threshold"] == pytest.approx(
        ref.params["cluster_forming_threshold"], rel=1e-6
    )
    # through the CLI, one file holding both sets
    both = pd.concat(
        [a.foci.assign(group="first"), b.foci.assign(group="second")], ignore_index=True
    )[["experiment", "x", "y", "z", "space", "n_subjects", "group"]]
    src = tmp_path / "pain.tsv"
    both.to_csv(src, sep="\t", index=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            *("cbma", str(src), "--select", "group=first", "--versus", str(src)),
            *("--versus-select", "group=second", "--iterations", "40", "--seed", "2"),
            *("--out", str(out)),
        ],
    )
    assert result.exit_code == 0, result.output
    cli = pd.read_csv(out / "contrast_clusters.tsv", sep="\t")
    assert len(cli) == len(ours.clusters)
    np.testing.assert_allclose(cli["p_fwe"], ours.clusters["p_fwe"], rtol=1e-6)
    assert "it/s" not in result.output


def test_subtract_bad_engine(pain_sets: Any) -> None:
    from brainmatch.errors import BrainmatchInputError

    a, b = pain_sets
    with pytest.raises(BrainmatchInputError, match="unknown engine 'gpu'"):
        subtract(a, b, iterations=5, engine="gpu")


# --------------------------------------------------------------------------- conjunction


def test_conjunction_is_nimares_minimum_statistic(pain_sets: Any) -> None:
    """The conjunction map is NiMARE's ``conjunction_analysis`` of the two main effects'
    ALE maps thresholded at cluster-level FWE (the minimum statistic where both pass):
    half of the pain experiments against all of them."""
    from nimare.workflows.misc import conjunction_analysis

    a, _ = pain_sets
    ra = CoordinateMetaAnalysis(iterations=40, random_state=0).fit(a, name="a").result_
    full = read_coordinates(NIDM_PAIN)
    rb = CoordinateMetaAnalysis(iterations=40, random_state=1).fit(full, name="b").result_
    assert ra.n_significant and rb.n_significant
    both = conjunction(ra, rb)

    def thresholded(r: Any) -> nib.Nifti1Image:
        keep = np.asarray(r.maps["z_fwe_cluster"].dataobj) > 0
        data = np.asarray(r.maps["stat"].dataobj, dtype=np.float32) * keep
        return nib.Nifti1Image(data, r.maps["stat"].affine)

    with _quiet():
        reference = conjunction_analysis([thresholded(ra), thresholded(rb)])
    np.testing.assert_allclose(
        np.asarray(both.maps["stat"].dataobj), reference.get_fdata(), rtol=0, atol=1e-7
    )
    assert (np.asarray(both.maps["stat"].dataobj) > 0).any()


# --------------------------------------------------------------------------- progress bar


def _run_in_terminal(args: list[str]) -> str:
    """Run ``args`` with stdout/stderr on a pseudo-terminal; return what it printed."""
    import os
    import pty
    import subprocess

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(args, stdout=follower, stderr=follower, stdin=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_progress_bar_in_a_terminal_only(pain_sets: Any, tmp_path: Path) -> None:
    """``brainmatch cbma --versus`` in a terminal shows the one Rich bar (two main effects
    and the contrast), never NiMARE's tqdm bars.  (The CLI's ``main`` run by ``python -c``
    with the report's glass brains not drawn: they are not what this test checks.)"""
    import sys

    a, b = pain_sets
    src = tmp_path / "pain.tsv"
    pd.concat([a.foci.assign(group="first"), b.foci.assign(group="second")])[
        ["experiment", "x", "y", "z", "space", "n_subjects", "group"]
    ].to_csv(src, sep="\t", index=False)
    args = [
        *(sys.executable, "-c", NO_GLASS_BRAINS),
        *("cbma", str(src), "--select", "group=first", "--versus", str(src)),
        *("--versus-select", "group=second", "--iterations", "10"),
    ]
    shown = _run_in_terminal([*args, "--out", str(tmp_path / "tty")])
    assert "cbma: two main effects and their contrast" in shown
    assert "30/30" in shown  # 3 analyses x 10 iterations, as one bar
    assert "it/s" not in shown and "%|" not in shown  # no tqdm
    assert "cbma subtraction" in shown
    # piped (not a terminal) there is no bar: CliRunner in
    # tests/test_cbma.py::test_cli_versus_writes_contrast_and_conjunction
