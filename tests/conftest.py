"""Shared test fixtures.

- ``shared_data``: path to ``../shared/data`` (real published data); tests using it skip
  with a clear reason when it is absent, as it is in a user's clone.
- ``small_trial``: one small simulated trial (built once per test session) for tests that
  only read it.  Tests that modify a dataset must simulate their own into ``tmp_path``.
- ``no_product_basis`` (from ``_basis_models.py``): the default model without its
  product candidate, for modules that test another non-linear family.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _basis_models import no_product_basis  # noqa: F401  (a shared fixture)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _model_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Sign and check model files with a key of this test session, never the user's own."""
    key_file = tmp_path_factory.mktemp("key") / "model.key"
    names = ("BRAINMATCH_MODEL_KEY", "BRAINMATCH_MODEL_KEY_FILE")
    saved = {k: os.environ.pop(k, None) for k in names}
    os.environ["BRAINMATCH_MODEL_KEY_FILE"] = str(key_file)
    yield key_file
    for k, v in saved.items():
        os.environ.pop(k, None)
        if v is not None:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _frozen_heap() -> Iterator[None]:
    """Freeze the objects alive before each test (``gc.freeze``) for its duration.

    nilearn calls ``gc.collect()`` for every image it loads; in a pytest worker that has
    run hundreds of tests each call scans a large heap (0.1-0.3 s). Frozen, the collections
    inside a test scan only the test's own objects (measured: 48 s of the suite's CPU went
    to these calls). Unfrozen afterwards, so nothing is kept alive longer than one test.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder beside the clone (``../shared/data``); skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"needs real published data in {SHARED_DATA}, which is not shipped (licences): "
            "Metapsy psychotherapy trials (data-depression-psyctr commit ceeabb7, "
            "doi:10.5281/zenodo.7254845, folder metapsy-psyctr/), antidepressant ALE "
            "coordinates of Saberi et al. 2025 (github.com/amnsbr/antidepressants_meta commit "
            "d233216, folder antidepressant-ale/); put them there to run this test "
            "(see tests/README.md)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_trial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small two-arm, two-site simulated trial at 4 mm with 60 volumes (read-only)."""
    from brainmatch.simulate import TrialSpec, simulate_trial

    out = tmp_path_factory.mktemp("trial") / "bids"
    spec = TrialSpec(
        n_subjects=8,
        n_sites=2,
        arms=("CBT", "SSRI"),
        resolution=4,
        n_volumes=60,
        seed=7,
        effect_size=1.0,
    )
    return simulate_trial(spec, out, n_jobs=1)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the lines tests record with ``record_property("terminal_summary", line)``:
    measurements such as the web load test's latencies (works under pytest-xdist, where a
    test's own prints are not shown)."""
    lines = [
        value
        for report in terminalreporter.stats.get("passed", [])
        if getattr(report, "when", "call") == "call"
        for key, value in getattr(report, "user_properties", [])
        if key == "terminal_summary"
    ]
    if lines:
        terminalreporter.section("measurements")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests marked ``slow`` first (in their collected order, so a module's tests
    stay together): under pytest-xdist a long test started last leaves the other worker
    idle at the end of the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
