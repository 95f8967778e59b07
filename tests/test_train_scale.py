"""Scale machinery of the selection validation (issue 11, item 6).

References: the kernel (dual) algebra of :class:`KernelRidgeLOO` (the primal path must
give the same penalties, leave-one-out errors and predictions), brute-force leave-one-out
refits of the explicit kernel-ridge system, scikit-learn ``RidgeCV`` (per-arm model in the
primal regime), column-by-column fits (chunked permutation columns), and the serial run
(folds, permutations and bootstrap refits on a real ``distributed.LocalCluster``).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainmatch.errors import BrainmatchInputError
from brainmatch.selection import _ridge, train, validate
from brainmatch.selection._ridge import LAMBDA_GRID, KernelRidgeLOO
from brainmatch.selection.pipeline import ArmModels, arm_design, interaction_factor
from brainmatch.selection.train import PERMUTATION_BUDGET, _ridge_null_repeats
from brainmatch.validation.regimes import draw_regime


def _problem(n: int, p: int, k: int, q: int, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, p))
    Z[:, 1] = Z[:, 0]  # collinear columns: a rank-deficient factor
    t = np.arange(n) % k
    rng.shuffle(t)
    C = rng.normal(size=(n, q))
    Y = rng.normal(size=(n, 5)) + Z[:, :3] @ rng.normal(size=(3, 5))
    return Z, C, t, Y


def _dual(model: str, Z, C, t, k, Y):  # type: ignore[no-untyped-def]
    """The kernel (n x n) algebra that the primal path replaces."""
    p = Z.shape[1]
    m = ArmModels(model)
    m.k_, m.p_, m.Z_, m.t_, m.primal_ = k, p, Z, t, False
    G = Z @ Z.T / p
    if model == "per-arm":
        m.solvers_ = []
        for a in range(k):
            rows = np.flatnonzero(t == a)
            D = arm_design(C[rows], a, k, model)
            m.solvers_.append(KernelRidgeLOO(G[np.ix_(rows, rows)], D).fit(Y[rows]))
    else:
        same = (t[:, None] == t[None, :]).astype(float)
        D = np.column_stack([np.eye(k)[t], C])
        m.solvers_ = [KernelRidgeLOO(G * (1.0 + same), D).fit(Y)]
    return m


def test_interaction_factor_reproduces_the_kernel() -> None:
    Z, _, t, _ = _problem(50, 7, 3, 1)
    F = interaction_factor(Z, t, 3)
    assert F.shape == (50, 21)  # rank k p, not (k + 1) p
    same = (t[:, None] == t[None, :]).astype(float)
    np.testing.assert_allclose(F @ F.T, Z @ Z.T / 7 * (1 + same), atol=1e-12)


@pytest.mark.parametrize("model", ["interaction", "per-arm"])
@pytest.mark.parametrize(("n", "p", "k", "q"), [(240, 30, 2, 2), (300, 25, 3, 0)])
def test_primal_path_equals_kernel_path(model: str, n: int, p: int, k: int, q: int) -> None:
    """Same penalties, LOO errors (1e-12), predictions and coefficients (1e-10)."""
    Z, C, t, Y = _problem(n, p, k, q)
    primal = ArmModels(model).fit(Z, C, t, k, Y)
    assert primal.primal_
    dual = _dual(model, Z, C, t, k, Y)
    for sp, sd in zip(primal.solvers_, dual.solvers_, strict=True):
        np.testing.assert_array_equal(sp.choice, sd.choice)
        np.testing.assert_allclose(sp.loo_mse, sd.loo_mse, rtol=1e-12)
        np.testing.assert_allclose(sp.lambdas, sd.lambdas, rtol=1e-12)
    Zt, Ct = (
        np.random.default_rng(1).normal(size=(40, p)),
        np.random.default_rng(2).normal(size=(40, q)),
    )
    np.testing.assert_allclose(primal.predict(Zt, Ct), dual.predict(Zt, Ct), atol=1e-10)
    for col in (0, 4):
        a, b = primal.primal(col), dual.primal(col)
        for key in ("coef", "intercept", "cov_coef"):
            np.testing.assert_allclose(a[key], b[key], atol=1e-10)


def test_loo_equals_brute_force_refits() -> None:
    """The primal solver's leave-one-out MSE at every penalty equals n explicit refits of
    the kernel ridge system ``[K + lam I, D; D', 0] [c; a] = [y; 0]``."""
    Z, C, t, Y = _problem(40, 6, 2, 1, seed=3)
    k, y = 2, Y[:, 0]
    F = interaction_factor(Z, t, k)
    D = np.column_stack([np.eye(k)[t], C])
    K = F @ F.T
    solver = KernelRidgeLOO(None, D, factor=F).fit(y[:, None])
    n, q = D.shape
    mse = []
    for lam in solver.lambdas:
        err = []
        for i in range(n):
            keep = np.arange(n) != i
            A = np.block([[K[np.ix_(keep, keep)] + lam * np.eye(n - 1), D[keep]], [D[keep].T,
                          np.zeros((q, q))]])  # fmt: skip
            sol = np.linalg.solve(A, np.concatenate([y[keep], np.zeros(q)]))
            err.append(y[i] - K[i, keep] @ sol[: n - 1] - D[i] @ sol[n - 1 :])
        mse.append(np.mean(np.square(err)))
    assert solver.loo_mse[0] == pytest.approx(min(mse), rel=1e-8)
    assert solver.choice[0] == int(np.argmin(mse))


def test_chunked_columns_equal_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Permuted target columns solved in chunks = each column solved alone."""
    monkeypatch.setattr(_ridge, "CHUNK", 3)
    Z, C, t, _ = _problem(200, 20, 2, 1)
    Y = np.random.default_rng(5).normal(size=(200, 8))
    F = interaction_factor(Z, t, 2)
    D = np.column_stack([np.eye(2)[t], C])
    together = KernelRidgeLOO(None, D, factor=F).fit(Y)
    for j in range(8):
        alone = KernelRidgeLOO(None, D, factor=F).fit(Y[:, j : j + 1])
        assert alone.choice[0] == together.choice[j]
        assert alone.loo_mse[0] == pytest.approx(together.loo_mse[j], rel=1e-12)
        np.testing.assert_allclose(alone.w[:, 0], together.w[:, j], atol=1e-12)


def test_per_arm_primal_equals_sklearn_ridgecv() -> None:
    """Per-arm model with more patients per arm than features (primal path) = scikit-learn
    ``RidgeCV`` (efficient LOO over the same grid) on each arm's rows."""
    from sklearn.linear_model import RidgeCV

    rng = np.random.default_rng(7)
    n, p = 300, 12
    Z = rng.normal(size=(n, p))
    t = np.repeat([0, 1], n // 2)
    y = Z[:, 0] * (1 - 2 * t) + rng.normal(size=n)
    C = np.zeros((n, 0))
    m = ArmModels("per-arm").fit(Z, C, t, 2, y[:, None])
    assert m.primal_
    Zt = rng.normal(size=(20, p))
    got = m.predict(Zt, np.zeros((20, 0)))[:, :, 0]
    for a in range(2):
        rows = t == a
        Zc = Z[rows] - Z[rows].mean(0)
        scale = (Zc**2).sum() / p / (rows.sum() - 1)
        ref = RidgeCV(alphas=LAMBDA_GRID * scale).fit(Z[rows] / np.sqrt(p), y[rows])
        np.testing.assert_allclose(got[:, a], ref.predict(Zt / np.sqrt(p)), atol=1e-8)


def test_permutation_budget() -> None:
    """All repeats for small trials, one repeat at n = 10,000 x 1,000 features."""
    from brainmatch.selection.data import TrainingData

    def data(n: int, p: int) -> TrainingData:
        return TrainingData(
            ids=np.arange(n).astype(str), X=np.zeros((n, p)), feature_names=[""] * p,
            treatment=np.repeat(["A", "B"], n // 2), arms=["A", "B"], y=np.zeros(n),
            binary=False, covariates=pd.DataFrame(index=range(n)), sites=None,
        )  # fmt: skip

    assert _ridge_null_repeats(data(400, 50), "interaction", 5, 1001, 50) is None
    assert _ridge_null_repeats(data(2000, 1000), "interaction", 5, 1001, 50) is None
    assert _ridge_null_repeats(data(10_000, 1000), "interaction", 5, 1001, 50) == 1
    per_repeat = 5 * 13 * 3200 * 2000 * 1001
    assert _ridge_null_repeats(data(4000, 1000), "interaction", 5, 1001, 50) == int(
        PERMUTATION_BUDGET // per_repeat
    )


def test_permutation_repeats_option() -> None:
    r = draw_regime(120, 10, "sparse", 2, seed=2)
    kw = dict(treatment_column="arm", outcome_column="y", better="higher", n_repeats=3,
              n_permutations=19, learning_curve=False, select="none")  # fmt: skip
    res = validate(r.features, r.outcomes, permutation_repeats=1, **kw)
    assert res.metrics["selection"]["permutation_cv_repeats"] == 1
    full = validate(r.features, r.outcomes, **kw)
    assert full.metrics["selection"]["permutation_cv_repeats"] == 3
    # the estimates use every repeat either way
    # (to rounding: the observed outcome is solved in one batch with the permuted ones, and
    # the batch's width can change the BLAS kernel's summation order in the last bits)
    assert res.metrics["selection"]["policy_gain"] == pytest.approx(
        full.metrics["selection"]["policy_gain"], rel=1e-12, abs=1e-12
    )
    with pytest.raises(BrainmatchInputError, match="permutation_repeats=0"):
        validate(r.features, r.outcomes, permutation_repeats=0, **kw)


# ---------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def cluster():  # type: ignore[no-untyped-def]
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as c:
        yield c


@pytest.fixture(scope="module")
def regime():  # type: ignore[no-untyped-def]
    return draw_regime(150, 12, "sparse", 2, sites=2, seed=4, missing=0.05)


def _same(a: object, b: object) -> None:
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def test_validate_on_dask_equals_serial(cluster, regime) -> None:  # type: ignore[no-untyped-def]
    kw = dict(treatment_column="arm", outcome_column="y", site_column="site", better="higher",
              n_repeats=2, n_permutations=49, learning_curve=True)  # fmt: skip
    serial = validate(regime.features, regime.outcomes, **kw)
    dask = validate(regime.features, regime.outcomes, scheduler=cluster.scheduler_address, **kw)
    pd.testing.assert_frame_equal(serial.predictions, dask.predictions, check_exact=True)
    for key in ("per_arm", "selection", "selection_other_model", "learning_curve", "conformal"):
        _same(serial.metrics[key], dask.metrics[key])
    assert serial.metrics["selection"]["permutation_p"] is not None


def test_rerandomised_null_on_dask_equals_serial(cluster, regime) -> None:  # type: ignore[no-untyped-def]
    """The re-randomised trials' cross-validations run on the cluster: same p-values."""
    kw = dict(treatment_column="arm", outcome_column="y", site_column="site", better="higher",
              n_repeats=1, n_permutations=9, learning_curve=False, n_boot=50,
              permutation_null="rerandomise")  # fmt: skip
    serial = validate(regime.features, regime.outcomes, **kw)
    dask = validate(regime.features, regime.outcomes, scheduler=cluster.scheduler_address, **kw)
    _same(serial.metrics["selection"], dask.metrics["selection"])
    assert serial.metrics["selection"]["permutation_null_method"] == "rerandomise"
    assert serial.metrics["selection"]["permutation_p"] is not None


def test_train_on_dask_equals_serial(cluster, regime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The final model's bootstrap refits run on the cluster too: identical model file."""
    kw = dict(treatment_column="arm", outcome_column="y", better="higher", n_repeats=1,
              n_permutations=9, learning_curve=False)  # fmt: skip
    a = train(regime.features, regime.outcomes, out_dir=tmp_path / "a", **kw)
    b = train(
        regime.features, regime.outcomes, out_dir=tmp_path / "b",
        scheduler=cluster.scheduler_address, **kw,
    )  # fmt: skip
    za, zb = np.load(a.model_path), np.load(b.model_path)
    for key in ("coef", "boot_coef", "boot_intercept", "boot_cov_coef"):
        np.testing.assert_array_equal(za[key], zb[key])
    _same(a.metrics["selection"], b.metrics["selection"])


def test_other_learner_on_dask_equals_serial(cluster, regime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Learners that refit every permutation: the permuted columns of a fold are split into
    tasks of LEARNER_CHUNK columns on the cluster; the results equal the serial run's."""
    import importlib

    train_module = importlib.import_module("brainmatch.selection.train")
    monkeypatch.setattr(train_module, "LEARNER_CHUNK", 2)
    kw = dict(treatment_column="arm", outcome_column="y", better="higher", n_repeats=1,
              n_permutations=3, learning_curve=False, model="t-linear")  # fmt: skip
    serial = validate(regime.features, regime.outcomes, **kw)
    dask = validate(regime.features, regime.outcomes, scheduler=cluster.scheduler_address, **kw)
    pd.testing.assert_frame_equal(serial.predictions, dask.predictions, check_exact=True)
    _same(serial.metrics["selection"], dask.metrics["selection"])
    assert serial.metrics["selection"]["permutation_cv_repeats"] == 1


def test_process_workers_see_the_drivers_screen_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Worker *processes* import their own modules: a setting the user changed in the
    driver (``screen.CRITERION``, ``screen.SCREEN_SE``, documented knobs) must reach them,
    or the cluster silently runs the defaults (a review's repro: folds chose 5-10 features
    serially and all 200 on process workers)."""
    from distributed import LocalCluster

    from brainmatch.selection import screen

    r = draw_regime(150, 200, "dense", 2, seed=0)
    kw = dict(treatment_column="arm", outcome_column="y", better="higher", n_repeats=1,
              n_permutations=0, learning_curve=False)  # fmt: skip
    monkeypatch.setattr(screen, "CRITERION", "mse")
    monkeypatch.setattr(screen, "SCREEN_SE", 0.0)
    serial = validate(r.features, r.outcomes, **kw)
    assert set(serial.extras["fold_k"]) != {200}  # the changed settings screen here
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as c:
        dask = validate(r.features, r.outcomes, scheduler=c.scheduler_address, **kw)
    assert dask.extras["fold_k"] == serial.extras["fold_k"]
    pd.testing.assert_frame_equal(serial.predictions, dask.predictions, check_exact=True)


def test_unreachable_scheduler_is_one_error_line(regime, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from brainmatch.cli.main import app
    from brainmatch.selection import parallel

    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(BrainmatchInputError, match=r"scheduler='tcp://127.0.0.1:9': cannot reach"):
        validate(regime.features, regime.outcomes, treatment_column="arm", outcome_column="y",
                 scheduler="tcp://127.0.0.1:9")  # fmt: skip
    regime.features.to_csv(tmp_path / "f.csv", index=False)
    regime.outcomes.to_csv(tmp_path / "o.csv", index=False)
    res = CliRunner().invoke(
        app,
        ["train", "--features", str(tmp_path / "f.csv"), "--outcomes", str(tmp_path / "o.csv"),
         "--treatment-column", "arm", "--outcome-column", "y", "--out", str(tmp_path / "m"),
         "--scheduler", "tcp://127.0.0.1:9"],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--scheduler 'tcp://127.0.0.1:9': cannot reach" in lines[0], (
        res.output
    )
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("model", "select"), [("interaction", "none"), ("interaction", "auto"),
                                               ("t-linear", "none")])  # fmt: skip
def test_learning_curve_reuses_the_main_run(model: str, select: str) -> None:
    """The full-sample point of the learning curve reuses the main run's first repeats:
    the same figures as recomputing them."""
    from brainmatch.selection.train import _learning_curve

    r = draw_regime(100, 8, "sparse", 2, seed=6)
    res = validate(
        r.features, r.outcomes, treatment_column="arm", outcome_column="y", better="higher",
        n_repeats=2, n_permutations=3, model=model, select=select,
    )  # fmt: skip
    data, splits = res.extras["data"], res.extras["splits"]
    fresh = _learning_curve(data, model=model, harmonize=False, sign=1.0, seed=0, select=select)
    # equal up to rounding: the main run solved column 0 together with the permuted ones
    got = res.metrics["learning_curve"]
    assert [sorted(p) for p in got] == [sorted(p) for p in fresh]
    for a, b in zip(got, fresh, strict=True):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)
    assert fresh[-1]["fraction"] == 1.0 and len(splits) == 10
