"""ComBat: equivalence with neuroCombat, reference site, single patients, unseen sites."""

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


def _neurocombat(X, sites, age, ref_batch=None, monkeypatch=None):
    """neuroCombat 0.2.12, Fortin's reference implementation that neuroHarmonize wraps."""
    from neuroCombat import neuroCombat

    if ref_batch is not None:
        # neuroCombat's ref_batch path calls np.int, removed in numpy 1.24; that is the only
        # numpy-2 incompatibility in it (measured: output otherwise bit-identical to numpy 1.26)
        monkeypatch.setattr(np, "int", int, raising=False)
    covars = pd.DataFrame({"SITE": sites, "age": age})
    return neuroCombat(X.T.copy(), covars, "SITE", continuous_cols=["age"], ref_batch=ref_batch)


def test_learn_matches_neurocombat():
    X, sites, age = _data()
    expected = _neurocombat(X, sites, age)["data"].T
    got = ComBat().fit_transform(X, sites=sites, covariates=age[:, None])
    # neuroCombat builds its design's continuous columns in float32, hence ~1e-6 differences
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    assert np.abs(got - X).max() > 0.1  # it did change the data
    # the non-EB (location/scale only) variant also agrees
    from neuroCombat import neuroCombat

    covars = pd.DataFrame({"SITE": sites, "age": age})
    plain = neuroCombat(X.T.copy(), covars, "SITE", continuous_cols=["age"], eb=False)
    got_plain = ComBat(eb=False).fit_transform(X, sites=sites, covariates=age[:, None])
    np.testing.assert_allclose(got_plain, plain["data"].T, rtol=0, atol=2e-5)
    assert np.abs(got_plain - got).max() > 1e-4  # EB made a difference


def test_apply_matches_neurocombat_and_single_patients():
    X, sites, age = _data()
    fit = _neurocombat(X, sites, age)
    cb = ComBat().fit(X, sites=sites, covariates=age[:, None])
    # applied to the training rows, the stored model gives neuroCombat's learn output
    again = cb.transform(X, sites=sites, covariates=age[:, None])
    np.testing.assert_allclose(again, fit["data"].T, rtol=0, atol=2e-5)
    # new patients: neuroCombatFromTraining fails on numpy 2 (int() of a 1-element array),
    # so apply neuroCombat's own estimates with its documented equations
    est = fit["estimates"]
    Xn, sn, agen = _data(seed=1, n_per_site=4)
    beta_age = est["mod.mean"][:, 0] / np.float32(age[0])  # mod.mean = age * beta (float32)
    level = {lab: i for i, lab in enumerate(np.unique(sites))}
    idx = np.array([level[s] for s in sn])
    sd = np.sqrt(est["var.pooled"][:, 0])
    mean = est["stand.mean"][:, 0] + np.outer(agen.astype(np.float32), beta_age)
    expected = ((Xn - mean) / sd - est["gamma.star"][idx]) / np.sqrt(est["delta.star"][idx])
    expected = expected * sd + mean
    got = cb.transform(Xn, sites=sn, covariates=agen[:, None])
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    assert np.abs(got - Xn).max() > 0.1
    # one patient at a time gives the same as the batch
    for i in (0, 5, 11):
        one = cb.transform(Xn[i : i + 1], sites=sn[i : i + 1], covariates=agen[i : i + 1, None])
        np.testing.assert_allclose(one[0], got[i], atol=1e-12)


def test_reference_site_matches_neurocombat(monkeypatch):
    X, sites, age = _data()
    expected = _neurocombat(X, sites, age, ref_batch="b", monkeypatch=monkeypatch)["data"].T
    cb = ComBat(ref_batch="b")
    got = cb.fit_transform(X, sites=sites, covariates=age[:, None])
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    assert cb.ref_site_ == "b"
    # the reference site is returned exactly as it was, in fit and in transform
    np.testing.assert_array_equal(got[sites == "b"], X[sites == "b"])
    again = cb.transform(X, sites=sites, covariates=age[:, None])
    np.testing.assert_array_equal(again[sites == "b"], X[sites == "b"])
    np.testing.assert_allclose(again, got, atol=1e-10)
    # a reference that differs from the pooled one: the other sites moved somewhere else
    pooled = ComBat().fit_transform(X, sites=sites, covariates=age[:, None])
    assert np.abs(pooled[sites == "a"] - got[sites == "a"]).max() > 0.1


def test_reference_site_published_equations():
    """Without covariates or EB, M-ComBat's equations (Stein 2015) give closed forms.

    grand mean = the reference site's mean, pooled variance = its variance (ddof 0); each
    other site j is standardised, shifted by its mean and scaled by its variance (ddof 1),
    so that after adjustment its mean equals the reference mean and its variance (ddof 1)
    equals the reference's variance (ddof 0).
    """
    X, sites, _ = _data(seed=3, p=6)
    got = ComBat(eb=False, ref_batch="c").fit_transform(X, sites=sites)
    ref = X[sites == "c"]
    np.testing.assert_array_equal(got[sites == "c"], ref)
    for other in ("a", "b"):
        adj = got[sites == other]
        np.testing.assert_allclose(adj.mean(axis=0), ref.mean(axis=0), atol=1e-12)
        np.testing.assert_allclose(adj.var(axis=0, ddof=1), ref.var(axis=0), rtol=1e-12)
    with pytest.raises(BrainmatchInputError, match="ref_batch='z' is not one of"):
        ComBat(ref_batch="z").fit(X, sites=sites)


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
