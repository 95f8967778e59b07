"""brainmatch's Monte Carlo FWE engine against NiMARE's (the reference implementation).

- same seed: the null distributions (maximum ALE / MKDA density, maximum cluster size and
  mass per iteration) equal NiMARE's value for value, and so do the FWE maps;
- other seeds: two-sample Kolmogorov-Smirnov tests against NiMARE's nulls (same number
  of iterations) for several seed pairs;
- threads and a Dask cluster give the same null as one thread;
- the shared antidepressant contrast: the same maps and clusters as NiMARE, and the
  published cluster's FWE p within Monte Carlo error of NiMARE's 5,000-iteration value;
- the jackknife table against NiMARE's ``Jackknife`` and ``FocusCounter``.
"""

from __future__ import annotations

import importlib.resources
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from brainmatch.cli.main import app
from brainmatch.evidence import ale_engine
from brainmatch.evidence.cbma import CoordinateMetaAnalysis, _dataset, _quiet
from brainmatch.evidence.cbma_io import read_coordinates

NIDM_PAIN = Path(str(importlib.resources.files("nimare") / "resources" / "nidm_pain_dset.json"))
FWE_KEYS = {
    "max_stat": "values_level-voxel_corr-fwe_method-montecarlo",
    "max_size": "values_desc-size_level-cluster_corr-fwe_method-montecarlo",
    "max_mass": "values_desc-mass_level-cluster_corr-fwe_method-montecarlo",
}


def _nimare_null(method: str, table: Any, iterations: int, seed: int) -> tuple[Any, Any]:
    """NiMARE's estimator fit and FWECorrector null (the reference)."""
    from nimare.correct import FWECorrector
    from nimare.meta.cbma import ALE, MKDADensity

    cls = ALE if method == "ale" else MKDADensity
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = cls(null_method="approximate", random_state=seed)
        res = est.fit(_dataset(table))
        corrected = FWECorrector(
            method="montecarlo", voxel_thresh=0.001, n_iters=iterations
        ).transform(res)
    return est, corrected


def _our_null(est: Any, iterations: int, seed: int, **kw: Any) -> ale_engine.NullDistributions:
    plan = ale_engine.plan_from_estimator(est, float(est._p_to_summarystat(0.001)))
    return ale_engine.run_null(plan, iterations, seed, **kw)


@pytest.fixture(scope="module")
def pain() -> Any:
    return read_coordinates(NIDM_PAIN)


def test_ale_null_equals_nimare_value_for_value(pain: Any) -> None:
    """Same seed, same draws, same arithmetic: every iteration's maximum ALE, maximum
    cluster size and maximum cluster mass equal NiMARE's exactly."""
    est, corrected = _nimare_null("ale", pain, 25, seed=3)
    ours = _our_null(est, 25, seed=3)
    nd = corrected.estimator.null_distributions_
    for field, key in FWE_KEYS.items():
        np.testing.assert_array_equal(getattr(ours, field), np.asarray(nd[key], np.float32))
    assert ours.max_size.max() > 0  # the null is not trivially empty


@pytest.mark.slow
def test_mkda_null_equals_nimare_value_for_value(pain: Any) -> None:
    est, corrected = _nimare_null("mkda", pain, 20, seed=5)
    ours = _our_null(est, 20, seed=5)
    nd = corrected.estimator.null_distributions_
    for field, key in FWE_KEYS.items():
        np.testing.assert_array_equal(getattr(ours, field), np.asarray(nd[key], np.float32))


def test_fwe_maps_equal_nimare(pain: Any) -> None:
    """The whole pipeline: stat, z, voxel- and cluster-level FWE maps equal NiMARE's."""
    res = CoordinateMetaAnalysis(iterations=20, random_state=7).fit(pain).result_
    _, corrected = _nimare_null("ale", pain, 20, seed=7)
    with _quiet():  # nilearn's gc.collect() per image loaded, without rescanning the heap
        theirs = {
            ours: np.asarray(corrected.get_map(name).dataobj, dtype=np.float32)
            for ours, name in (
                ("stat", "stat"),
                ("z", "z"),
                ("logp_cluster_fwe", "logp_desc-size_level-cluster_corr-FWE_method-montecarlo"),
                ("logp_voxel_fwe", "logp_level-voxel_corr-FWE_method-montecarlo"),
            )
        }
    for ours, reference in theirs.items():
        np.testing.assert_array_equal(
            np.asarray(res.maps[ours].dataobj, dtype=np.float32), reference, err_msg=ours
        )


@pytest.mark.slow
def test_null_equal_in_distribution_to_nimare_across_seeds(pain: Any) -> None:
    """Independent seeds (ours s, NiMARE s + 100), 150 iterations each: two-sample KS
    p > 0.05 for the maximum ALE and the maximum cluster size, for three seed pairs."""
    from nimare.meta.cbma import ALE

    with _quiet():
        est = ALE(null_method="approximate").fit(_dataset(pain)).estimator
    for seed in (1, 2, 3):
        ours = _our_null(est, 150, seed=seed)
        _, corrected = _nimare_null("ale", pain, 150, seed=seed + 100)
        nd = corrected.estimator.null_distributions_
        for field in ("max_stat", "max_size"):
            p = stats.ks_2samp(getattr(ours, field), nd[FWE_KEYS[field]]).pvalue
            assert p > 0.05, (seed, field, p)


def test_threads_give_the_same_null(pain: Any) -> None:
    from nimare.meta.cbma import ALE

    with _quiet():
        est = ALE(null_method="approximate").fit(_dataset(pain)).estimator
    one = _our_null(est, 40, seed=2, n_jobs=1)
    calls: list[tuple[int, int]] = []
    two = _our_null(est, 40, seed=2, n_jobs=2, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_array_equal(one.max_size, two.max_size)
    np.testing.assert_array_equal(one.max_stat, two.max_stat)
    assert calls[0] == (0, 40) and calls[-1] == (40, 40)


@pytest.mark.slow
def test_dask_scheduler_gives_the_same_null(pain: Any, tmp_path: Path) -> None:
    from distributed import LocalCluster
    from nimare.meta.cbma import ALE

    with _quiet():
        est = ALE(null_method="approximate").fit(_dataset(pain)).estimator
    local = _our_null(est, 30, seed=4)
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        remote = _our_null(est, 30, seed=4, scheduler=cluster.scheduler_address, chunk_size=10)
        # and through the CLI: --scheduler gives the API's cluster p-values
        out = tmp_path / "out"
        result = CliRunner().invoke(
            app,
            [
                *("cbma", str(NIDM_PAIN), "--out", str(out), "--iterations", "30"),
                *("--seed", "4", "--scheduler", cluster.scheduler_address),
            ],
        )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(local.max_size, remote.max_size)
    np.testing.assert_array_equal(local.max_stat, remote.max_stat)
    api = CoordinateMetaAnalysis(iterations=30, random_state=4).fit(pain).result_
    cli = pd.read_csv(out / "clusters.tsv", sep="\t")
    # clusters.tsv holds 6 significant digits (%.6g): up to 5e-6 relative rounding
    np.testing.assert_allclose(cli["p_fwe"], api.clusters["p_fwe"], rtol=5e-6)


def test_unreachable_scheduler_is_one_clear_error(
    pain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brainmatch.errors import BrainmatchInputError

    # nothing listens on port 9: waiting the default 20 s would only prove the timeout works
    monkeypatch.setattr(ale_engine, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(BrainmatchInputError, match="cannot reach the Dask scheduler"):
        CoordinateMetaAnalysis(iterations=5, scheduler="tcp://127.0.0.1:9").fit(pain)


def test_draws_are_nimares() -> None:
    """The relocations are NiMARE's: its generator for the FWE stream, the same call."""
    from nimare.utils import _check_random_state

    rng = _check_random_state(11, stream=ale_engine.FWE_STREAM)
    np.testing.assert_array_equal(
        ale_engine.fwe_draws(11, 1000, 7, 9), rng.choice(1000, size=(7, 9))
    )


# --------------------------------------------------------------------------- shared data


@pytest.mark.slow
def test_antidepressant_same_maps_and_clusters_as_nimare(shared_data: Path) -> None:
    """Saberi et al. 2025 (Untreated<Treated): the engine's maps and cluster table equal
    NiMARE's with the same seed; the DLPFC cluster's p_fwe at 2,000 iterations lies within
    three Monte Carlo standard errors of NiMARE's 5,000-iteration p = 0.0136."""
    path = shared_data / "antidepressant-ale" / "Contrast" / "coordinates.xlsx"
    if not path.is_file():
        pytest.skip(
            f"{path} absent: the coordinates of Saberi et al. 2025 (Mol Psychiatry; "
            "github.com/amnsbr/antidepressants_meta) are only in the workplace's shared data"
        )
    table = read_coordinates(path, select=["Contrast=Untreated<Treated"])
    res = CoordinateMetaAnalysis(iterations=100, random_state=0).fit(table).result_
    _, corrected = _nimare_null("ale", table, 100, seed=0)
    with _quiet():  # nilearn's gc.collect() without rescanning the heap
        theirs = corrected.get_map("logp_desc-size_level-cluster_corr-FWE_method-montecarlo")
    np.testing.assert_array_equal(
        np.asarray(res.maps["logp_cluster_fwe"].dataobj, dtype=np.float32),
        np.asarray(theirs.dataobj, dtype=np.float32),
    )
    assert len(res.clusters) == 1
    top = res.clusters.iloc[0]
    assert (top["x"], top["y"], top["z"]) == (-36.0, 32.0, 28.0)
    assert top["n_voxels"] == 112
    many = CoordinateMetaAnalysis(iterations=2000, random_state=1).fit(table).result_
    p = float(many.clusters.iloc[0]["p_fwe"])
    se = np.sqrt(0.0136 * (1 - 0.0136) / 2000)
    assert abs(p - 0.0136) < 3 * se
    # which experiments drive it: contributions are shares and foci are counted
    contrib = many.contributions
    assert set(contrib["cluster_id"]) == {1}
    assert contrib["contribution"].between(0, 1).all()
    assert contrib["n_foci_in_cluster"].sum() >= 3


@pytest.mark.slow
def test_jackknife_equals_nimare(pain: Any) -> None:
    """Contribution of each experiment to each cluster as NiMARE's Jackknife (which
    refits the analysis once per experiment), foci counts as its FocusCounter."""
    from nimare.diagnostics import FocusCounter, Jackknife

    est = CoordinateMetaAnalysis(iterations=20, random_state=0).fit(pain)
    ours = est.result_.contributions
    _, corrected = _nimare_null("ale", pain, 20, seed=0)
    target = "z_desc-size_level-cluster_corr-FWE_method-montecarlo"
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jk = Jackknife(target_image=target, voxel_thresh=None).transform(corrected)
        fc = FocusCounter(target_image=target, voxel_thresh=None).transform(corrected)
    jk_table = next(v for k, v in jk.tables.items() if "Jackknife_tab-counts" in k)
    fc_table = next(v for k, v in fc.tables.items() if "FocusCounter_tab-counts" in k)
    jk_table = jk_table.set_index("id")
    fc_table = fc_table.set_index("id")
    # match clusters by their contribution vectors' agreement (NiMARE numbers clusters
    # in its own order)
    for cid, block in ours.groupby("cluster_id"):
        vec = block.set_index("experiment")["contribution"]
        ids = [f"{e}-1" for e in vec.index]
        best = min(
            jk_table.columns,
            key=lambda c: float(
                np.abs(jk_table.loc[ids, c].to_numpy(float) - vec.to_numpy()).max()
            ),
        )
        np.testing.assert_allclose(
            jk_table.loc[ids, best].to_numpy(float), vec.to_numpy(), atol=1e-5, err_msg=str(cid)
        )
        counts = block.set_index("experiment")["n_foci_in_cluster"]
        np.testing.assert_array_equal(fc_table.loc[ids, best].to_numpy(int), counts.to_numpy())
