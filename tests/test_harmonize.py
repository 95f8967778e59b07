"""ComBat transformer: equivalence with neuroHarmonize, single patients, unseen sites."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainmatch.errors import BrainmatchInputError
from brainmatch.harmonize import ComBat


def _data(seed: int = 0, n_per_site: int = 30, p: int = 25):
    rng = np.random.default_rng(seed)
    sites = np.repeat(["a", "b", "c"], n_per_site)
    n = sites.size
    age = rng.uniform(20, 60, n)
    shift = {"a": 0.0, "b": 1.0, "c": -0.7}
    scale = {"a": 1.0, "b": 1.6, "c": 0.7}
    X = np.array([rng.normal(shift[s], scale[s], p) for s in sites]) + 0.05 * age[:, None]
    return X, sites, age


def test_learn_matches_neuroharmonize():
    from neuroHarmonize import harmonizationLearn

    X, sites, age = _data()
    _, expected = harmonizationLearn(X, pd.DataFrame({"SITE": sites, "age": age}))
    got = ComBat().fit_transform(X, sites=sites, covariates=age[:, None])
    # neuroHarmonize builds its design in float32, hence ~1e-6 differences
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    assert np.abs(got - X).max() > 0.1  # it did change the data


def test_apply_matches_neuroharmonize_and_single_patients():
    from neuroHarmonize import harmonizationApply, harmonizationLearn

    X, sites, age = _data()
    model, _ = harmonizationLearn(X, pd.DataFrame({"SITE": sites, "age": age}))
    cb = ComBat().fit(X, sites=sites, covariates=age[:, None])
    Xn, sn, agen = _data(seed=1, n_per_site=4)
    expected = harmonizationApply(Xn, pd.DataFrame({"SITE": sn, "age": agen}), model)
    got = cb.transform(Xn, sites=sn, covariates=agen[:, None])
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # one patient at a time gives the same as the batch (neuroHarmonize cannot do this)
    for i in (0, 5, 11):
        one = cb.transform(Xn[i : i + 1], sites=sn[i : i + 1], covariates=agen[i : i + 1, None])
        np.testing.assert_allclose(one[0], got[i], atol=1e-12)


def test_unseen_site_estimated_or_left_alone():
    X, sites, _ = _data()
    cb = ComBat().fit(X, sites=sites)
    rng = np.random.default_rng(5)
    Xd = rng.normal(3.0, 2.5, (12, X.shape[1]))  # a new scanner: shifted and scaled
    assert cb.site_status(np.array(["d"] * 12)) == {"d": "estimated"}
    out = cb.transform(Xd, sites=np.array(["d"] * 12))
    # the new site's location and scale are brought to the training reference
    assert np.abs(out.mean(axis=0) - cb.grand_mean_).mean() < 0.3
    assert abs(np.mean(out.std(axis=0) / np.sqrt(cb.var_pooled_)) - 1) < 0.3
    one = cb.transform(Xd[:1], sites=np.array(["d"]))
    assert cb.site_status(np.array(["d"])) == {"d": "unadjusted"}
    np.testing.assert_allclose(one, Xd[:1], atol=1e-10)  # gamma 0, delta 1: unchanged
    with pytest.raises(BrainmatchInputError, match="not seen in training"):
        ComBat(unseen_site="error").fit(X, sites=sites).transform(Xd, sites=np.array(["d"] * 12))


def test_bad_input():
    X, sites, _ = _data()
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(BrainmatchInputError, match="impute first"):
        ComBat().fit(Xn, sites=sites)
    with pytest.raises(BrainmatchInputError, match="at least 2 patients per site"):
        ComBat().fit(X[:61], sites=sites[:61])
    with pytest.raises(BrainmatchInputError, match="site labels"):
        ComBat().fit(X, sites=sites[:10])
