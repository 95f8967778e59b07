"""Shared checks of the default's non-linear families (RBF ridge, hinges, products).

``train_cli`` runs ``brainmatch train`` through the CLI on a drawn trial;
``assert_recommend_reproduces`` runs ``brainmatch recommend`` through the CLI on the
trained model and checks it against the same model fitted in Python.  The
``no_product_basis`` fixture switches the product basis off for a module that tests
another family on trials where the products would compete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from brainmatch.selection import screen
from brainmatch.selection.estimator import TreatmentSelector
from brainmatch.selection.modelfile import load_model


@pytest.fixture(scope="module")
def no_product_basis():
    """The product basis (which also fits the non-linear regime's ``x_1 x_2``) is not
    offered while the module runs (``test_product.py`` tests it and its competition)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(screen, "PRODUCT_MAX_P", 0)
        yield


def train_cli(d: Path, r: Any) -> str:
    """``brainmatch train`` (the CLI) on trial ``r`` into ``d / "model"``; its output."""
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    r.features.to_csv(d / "features.csv", index=False)
    r.outcomes.to_csv(d / "outcomes.csv", index=False)
    out = CliRunner().invoke(
        app,
        [
            "train",
            "--features", str(d / "features.csv"),
            "--outcomes", str(d / "outcomes.csv"),
            "--treatment-column", "arm",
            "--outcome-column", "y",
            "--better", "higher",
            "--n-repeats", "1",
            "--n-permutations", "19",
            "--no-learning-curve",
            "--out", str(d / "model"),
        ],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    return str(out.output)


def assert_recommend_reproduces(d: Path, r: Any, out_dir: Path, chosen: str) -> dict[str, Any]:
    """``brainmatch recommend`` (the CLI) on the first 4 patients equals the model fitted
    in Python (``TreatmentSelector``, which must choose ``chosen``), clipped to the
    outcome's range; the drivers of a non-linear model say so; every advantage interval
    is ordered.  Returns ``recommend.json``."""
    from typer.testing import CliRunner

    from brainmatch.cli.main import app

    _, meta = load_model(d / "model" / "model.npz")
    r.features.head(4).to_csv(out_dir / "new.csv", index=False)
    out = CliRunner().invoke(
        app,
        ["recommend", str(d / "model" / "model.npz"), str(out_dir / "new.csv"),
         "--out", str(out_dir / "rec")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rj: dict[str, Any] = json.loads((out_dir / "rec" / "recommend.json").read_text())
    X = r.features.iloc[:, 1:]
    sel = TreatmentSelector(better="higher").fit(X, r.outcomes["arm"], r.outcomes["y"])
    assert sel.chosen_learner_ == chosen
    want = np.clip(sel.predict_outcomes(X.head(4)).to_numpy(), *meta["outcome_range"])
    got = np.array([[p["predicted"][a]["value"] for a in r.arms] for p in rj["patients"]])
    np.testing.assert_allclose(got, want, atol=1e-9)
    for p in rj["patients"]:
        assert "non-linear model" in p["drivers_note"] or not p["drivers"]
        lo, hi = p["advantage_interval"]
        assert lo <= hi
    return rj
