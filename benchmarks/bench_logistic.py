"""Batched ridge-logistic (brainmatch's binary ``interaction`` model) vs scikit-learn.

Fits the observed and 199 permuted binary targets of one training set at a fixed penalty
(all coefficients penalised, as scikit-learn's l2 ``LogisticRegression``) and reports the
largest coefficient difference and the speed ratio against refitting scikit-learn (lbfgs)
column by column; then the full path with the ALO penalty choice.  Then the oracle-gain
recovery of the ridge-logistic default vs the linear-probability ridge on simulated
trials whose remission follows a logistic arm-by-feature model (``validate``, 5-fold,
99 permutations).  Timings were measured on a shared, loaded 2-core machine.

Run: ``.venv/bin/python benchmarks/bench_logistic.py [n_seeds]``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from brainmatch.selection import _logistic
from brainmatch.selection._logistic import LogisticInteractionLOO, newton_logistic
from brainmatch.selection.train import validate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_train_logistic import (
    _logistic_truth_trial,
    _oracle_share,
    _remission_gain_share,
    _trial,
)


def main() -> None:
    n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rng = np.random.default_rng(0)
    n, r, m, lam = 300, 45, 200, 5.0
    X = rng.normal(size=(n, r))
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    Y = np.column_stack([y] + [rng.permutation(y) for _ in range(m - 1)])
    with threadpool_limits(1):
        t0 = time.perf_counter()
        ours = newton_logistic(X, Y, lam, np.ones(r))
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        sk = np.array(
            [
                LogisticRegression(C=1 / lam, fit_intercept=False, tol=1e-10, max_iter=5000)
                .fit(X, Y[:, j])
                .coef_[0]
                for j in range(m)
            ]
        )
        t_sk = time.perf_counter() - t0
        t0 = time.perf_counter()
        LogisticInteractionLOO(X, 0).fit(Y)
        t_path = time.perf_counter() - t0
    print(f"fixed penalty, n={n}, r={r}, {m} columns (1 thread; shared loaded machine)")
    print(f"  max |coef - sklearn| = {np.abs(ours - sk).max():.2e}")
    print(
        f"  batched Newton {t_ours:.2f} s, sklearn lbfgs per column {t_sk:.2f} s, "
        f"ratio {t_sk / t_ours:.1f}x"
    )
    print(f"  full ALO path ({_logistic.LOGIT_GRID.size} penalties): {t_path:.2f} s")
    print("oracle-gain share, logistic truth, n=400 (seed: logit / linear-probability)")
    shares = []
    for seed in range(1, n_seeds + 1):
        f, o, prob = _logistic_truth_trial(seed)
        kw = dict(treatment_column="arm", outcome_column="remission", site_column="site")
        kw.update(n_repeats=1, n_permutations=99, learning_curve=False, seed=seed)
        s_logit = _oracle_share(validate(f, o, **kw), o, prob)
        saved = _logistic.MAX_WIDTH
        _logistic.MAX_WIDTH = 0
        try:
            s_lp = _oracle_share(validate(f, o, **kw), o, prob)
        finally:
            _logistic.MAX_WIDTH = saved
        shares.append((s_logit, s_lp))
        print(f"  {seed}: {s_logit:.3f} / {s_lp:.3f}")
    a = np.array(shares)
    d = a[:, 0] - a[:, 1]
    _report(a, d)
    print("oracle-gain share, the simulator's remission (HAMD week 8 <= 7), n=400")
    shares = []
    for seed in range(1, n_seeds + 1):
        trial, f, o = _trial(n=400, effect=1.2, seed=seed, n_noise=20)
        kw = dict(treatment_column="arm", outcome_column="remission", site_column="site")
        kw.update(baseline_column="hamd_baseline", covariates=("age", "sex"))
        kw.update(n_repeats=1, n_permutations=199, learning_curve=False, seed=seed)
        s_logit = _remission_gain_share(trial, validate(f, o, **kw))
        saved = _logistic.MAX_WIDTH
        _logistic.MAX_WIDTH = 0
        try:
            s_lp = _remission_gain_share(trial, validate(f, o, **kw))
        finally:
            _logistic.MAX_WIDTH = saved
        shares.append((s_logit, s_lp))
        print(f"  {seed}: {s_logit:.3f} / {s_lp:.3f}")
    a = np.array(shares)
    _report(a, a[:, 0] - a[:, 1])


def _report(a: np.ndarray, d: np.ndarray) -> None:
    print(
        f"  mean {a[:, 0].mean():.3f} / {a[:, 1].mean():.3f}; "
        f"mean difference {np.mean(d):+.3f} (SD {np.std(d, ddof=1):.3f})"
    )


if __name__ == "__main__":
    main()
