"""Boosted trees from the safe model file against scikit-learn's own predict.

brainmatch stores fitted ``HistGradientBoosting*`` models as plain node arrays
(:mod:`brainmatch.selection.trees`) and predicts with its own vectorised traversal, so a
model file never needs unpickling.  This benchmark fits scikit-learn's models (the peer,
in this process), exports them, and prints the largest absolute difference between the
two predictions (missing values included) and the prediction-time ratio.  Timings are from
a shared, loaded 2-core machine.

``python benchmarks/bench_trees.py``
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from brainmatch.selection.trees import Components, export_hgb


def _best(fn: object, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def _row(kind: str, n: int, p: int, rng: np.random.Generator) -> str:
    X = rng.normal(size=(n, p))
    X[rng.random(X.shape) < 0.05] = np.nan
    signal = np.nan_to_num(X[:, 0]) * 2 + np.sin(3 * np.nan_to_num(X[:, 1]))
    y = signal + rng.normal(size=n)
    Xt = rng.normal(size=(1000, p))
    Xt[rng.random(Xt.shape) < 0.1] = np.nan
    with threadpool_limits(1):
        if kind == "regressor":
            reg = HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05, random_state=0)
            est: object = reg.fit(X, y)

            def peer() -> np.ndarray:
                return np.asarray(reg.predict(Xt))
        else:
            clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.05, random_state=0)
            est = clf.fit(X, y > 0)

            def peer() -> np.ndarray:
                return np.asarray(clf.predict_proba(Xt)[:, 1])

        pool = Components.from_arrays(export_hgb(est).to_arrays(), p, ValueError)

        def ours() -> np.ndarray:
            return pool.evaluate(Xt)[:, 0]

        diff = float(np.abs(ours() - peer()).max())
        t_peer, t_ours = _best(peer), _best(ours)
    return (
        f"| {kind} (150 trees) | {n} x {p} | 1000 | {diff:.1e} | {t_peer:.4f} | "
        f"{t_ours:.4f} (x{t_ours / t_peer:.1f}) |"
    )


def main() -> None:
    """Equality and speed on regressors / classifiers of the meta-learners' settings."""
    print("timings measured on a shared, loaded 2-core machine (one thread each)")
    print("| model | n_train x p | rows predicted | max abs difference | sklearn s | ours s |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for kind, n, p in (("regressor", 400, 50), ("classifier", 400, 50), ("regressor", 2000, 1000)):
        print(_row(kind, n, p, rng), flush=True)


if __name__ == "__main__":
    main()
