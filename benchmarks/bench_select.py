"""Treatment selection against the anchors, side by side, and null-trial calibration.

Part 1 (grid): trials from :func:`brainmatch.validation.regimes.draw_regime` (a generator
independent of ``brainmatch simulate``, with known potential outcomes), in regimes of n,
p, interaction type (none / sparse / dense / nonlinear), arms, sites and missing values.
For each, the share of the oracle's gain over the best single arm recovered out of fold
(5 folds, the same folds for every method) by

- brainmatch ``interaction`` (ridge PAI: the default ``train`` model), ``auto`` (learner,
  or convex stack of learners, chosen by inner CV on the doubly robust CATE error, among
  ``interaction``, ``t-linear``, ``enet-interaction`` and ``x-hgb``) and ``x-hgb`` (the
  boosted X-learner alone);
- the anchors, run in this process: a lasso T-learner in scikit-learn (median imputation +
  ``StandardScaler`` + ``LassoCV`` per arm, as published PAI baselines do), EconML's
  ``DRLearner`` and ``CausalForestDML`` (defaults except a known propensity).

Part 2 (calibration): >= 200 null trials (no treatment-by-feature interaction): coverage
of 0 by the policy gain's 95 % CI (with its Clopper-Pearson interval), the rate of false
claims (lower end > 0), the coverage of the *true* gain of the cross-validated policy
(known from the generator), and a KS test of the permutation p-values.

``python benchmarks/bench_select.py`` (``make bench``) runs a reduced grid (5 seeds per
regime) and 200 null trials of 150 x 20; ``--full`` the issue's full grid (n in {150, 400,
1500} x p in {10, 200, 2000} x 4 interactions x 2 or 4 arms, sites and missing values
with 4 arms; hours on 2 cores), ``--extra`` the rows it leaves out (3 arms; 2 arms with
sites and missing values), ``--binary`` the same trials with a 0/1 outcome (the lasso T
anchor then an L1 logistic per arm), and ``--null-designs 150x20,300x200`` the wide null
design (hours; ``--null-binary``: 0/1 outcomes).  Every grid row also prints its per-seed
shares, which ``summarize_select.py`` pairs seed by seed.  Timings are from a shared,
loaded machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from brainmatch.selection import validate
from brainmatch.selection.learners import econml_available
from brainmatch.validation.regimes import Regime, draw_regime, oracle_share
from brainmatch.validation.splits import outer_splits

REDUCED = [
    # (n, p, interaction, arms, sites, missing)
    (150, 10, "sparse", 2, 1, 0.0),
    (400, 50, "sparse", 2, 1, 0.0),
    (400, 50, "dense", 2, 1, 0.0),
    (400, 50, "nonlinear", 2, 1, 0.0),
    (400, 50, "sparse", 3, 3, 0.05),
    (500, 1000, "sparse", 2, 1, 0.0),
]


def full_grid() -> list[tuple[int, int, str, int, int, float]]:
    """The issue's grid (2 and 4 arms; sites and missing values with 4 arms)."""
    grid = []
    for n, p, inter, arms in itertools.product(
        (150, 400, 1500), (10, 200, 2000), ("none", "sparse", "dense", "nonlinear"), (2, 4)
    ):
        grid.append((n, p, inter, arms, 3 if arms > 2 else 1, 0.05 if arms > 2 else 0.0))
    return grid


def extra_grid() -> list[tuple[int, int, str, int, int, float]]:
    """Rows the issue's grid leaves out: 3 arms, and 2 arms with sites and missing values
    (in :func:`full_grid` sites come only with 4 arms), at n = 400."""
    grid = []
    for p, inter, (arms, sites, missing) in itertools.product(
        (10, 200), ("sparse", "dense", "nonlinear"), ((3, 1, 0.0), (2, 3, 0.05))
    ):
        grid.append((400, p, inter, arms, sites, missing))
    return grid


def binary_grid() -> list[tuple[int, int, str, int, int, float]]:
    """Rows for a 0/1 outcome (``--binary``): n in {400, 1500}, p in {10, 200, 2000}, the
    three interaction types, 2 arms (below 400 patients a 0/1 outcome carries too little to
    choose by)."""
    return [
        (n, p, inter, 2, 1, 0.0)
        for n, p, inter in itertools.product(
            (400, 1500), (10, 200, 2000), ("sparse", "dense", "nonlinear")
        )
    ]


def _arrays(r: Regime) -> tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.float64]]:
    X = r.features.iloc[:, 1:].to_numpy(dtype=float)
    t = np.searchsorted(r.arms, r.outcomes["arm"].to_numpy())
    return X, t, r.outcomes["y"].to_numpy(dtype=float)


def lasso_t_anchor(r: Regime, splits: list[Any]) -> NDArray[np.intp]:
    """Published-PAI-style baseline: one LassoCV per arm, out of fold, no harmonisation
    (a 0/1 outcome: one L1 ``LogisticRegressionCV`` per arm, penalty by log loss, its
    predicted probability)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LassoCV, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, t, y = _arrays(r)
    binary = set(np.unique(y).tolist()) <= {0.0, 1.0}
    k = len(r.arms)
    pred = np.zeros((len(y), k))
    for _, tr, te in splits:
        for a in range(k):
            rows = tr[t[tr] == a]
            est: Any = (
                # log loss, not accuracy, chooses the penalty; saga leaves the intercept
                # unpenalised (liblinear's penalised intercept tied the arms on noise)
                LogisticRegressionCV(
                    Cs=10,
                    cv=5,
                    penalty="l1",
                    solver="saga",
                    scoring="neg_log_loss",
                    max_iter=1000,
                    tol=1e-3,
                )
                if binary
                else LassoCV(cv=5, max_iter=2000)
            )
            m = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), est)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.fit(X[rows], y[rows])
            pred[te, a] = m.predict_proba(X[te])[:, 1] if binary else m.predict(X[te])
    return np.asarray(pred.argmax(axis=1))


def econml_anchor(r: Regime, splits: list[Any], which: str) -> NDArray[np.intp]:
    """EconML DRLearner / CausalForestDML: recommend the arm with the largest effect."""
    from econml.dml import CausalForestDML
    from econml.dr import DRLearner
    from sklearn.dummy import DummyClassifier
    from sklearn.impute import SimpleImputer

    X, t, y = _arrays(r)
    k = len(r.arms)
    rec = np.zeros(len(y), dtype=int)
    for _, tr, te in splits:
        imp = SimpleImputer(strategy="median").fit(X[tr])
        Xtr, Xte = imp.transform(X[tr]), imp.transform(X[te])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if which == "dr":
                est: Any = DRLearner(
                    model_propensity=DummyClassifier(strategy="prior"), cv=2, random_state=0
                )
            else:
                est = CausalForestDML(
                    model_t=DummyClassifier(strategy="prior"),
                    discrete_treatment=True,
                    cv=2,
                    n_estimators=200,
                    n_jobs=1,
                    random_state=0,
                )
            est.fit(y[tr], t[tr], X=Xtr)
            eff = np.column_stack(
                [np.zeros(len(te))] + [np.ravel(est.effect(Xte, T0=0, T1=a)) for a in range(1, k)]
            )
        rec[te] = eff.argmax(axis=1)
    return rec


def brainmatch_policy(
    r: Regime, model: str, select: str | None = None, features: pd.DataFrame | None = None
) -> NDArray[np.intp]:
    """Out-of-fold recommendations of ``validate`` (one repeat, no permutations) on the
    regime's features, or on ``features`` (the probes' expanded tables)."""
    res = validate(
        r.features if features is None else features,
        r.outcomes,
        treatment_column="arm",
        outcome_column="y",
        site_column="site" if r.outcomes["site"].nunique() > 1 else None,
        better="higher",
        model=model,
        select=select,
        n_repeats=1,
        n_permutations=0,
        learning_curve=False,
    )
    return np.searchsorted(r.arms, res.predictions["recommended"].to_numpy())


def outcome_criterion_policy(r: Regime) -> NDArray[np.intp]:
    """The default with the screen chosen by the outcome's prediction error
    (``screen.CRITERION = "mse"``, the default before the doubly robust treatment-effect
    error replaced it)."""
    from brainmatch.selection import screen

    saved = screen.CRITERION
    screen.CRITERION = "mse"
    try:
        return brainmatch_policy(r, "interaction")
    finally:
        screen.CRITERION = saved


def ridge_oracle_penalty_ceiling(r: Regime, splits: list[Any]) -> NDArray[np.intp]:
    """Diagnostic, not a method: the ridge interaction model (scikit-learn ``Ridge`` on
    ``[X, X * 1(arm = a)]`` plus the arm indicators scaled by 1000, so their penalty is
    negligible) whose single penalty is chosen with the *true* potential outcomes (best
    out-of-fold share over 26 penalties).  With Gaussian interaction weights, as in the
    ``dense`` regime, a ridge is close to the Bayes rule for the effects; as the best of
    26 realised shares this ceiling is optimistic, not a bound on every method."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    X, t, y = _arrays(r)
    k = len(r.arms)
    best, best_rec = -np.inf, np.zeros(len(y), dtype=int)
    for alpha in np.logspace(-1, 4, 26):
        rec = np.zeros(len(y), dtype=int)
        for _, tr, te in splits:
            imp = SimpleImputer(strategy="median").fit(X[tr])
            sc = StandardScaler().fit(imp.transform(X[tr]))
            Ztr, Zte = sc.transform(imp.transform(X[tr])), sc.transform(imp.transform(X[te]))
            design = np.hstack([Ztr] + [Ztr * (t[tr] == a)[:, None] for a in range(k)])
            onehot = np.eye(k)[t[tr]]
            m = Ridge(alpha=alpha).fit(np.hstack([design, 1e3 * onehot]), y[tr])
            pred = np.column_stack(
                [
                    m.predict(
                        np.hstack(
                            [Zte]
                            + [Zte * (a == b) for b in range(k)]
                            + [1e3 * np.tile(np.eye(k)[a], (len(te), 1))]
                        )
                    )
                    for a in range(k)
                ]
            )
            rec[te] = pred.argmax(axis=1)
        share = oracle_share(r.mu, rec)
        if share > best:
            best, best_rec = share, rec
    return best_rec


def rbf_probe(r: Regime, splits: list[Any], choose: bool) -> NDArray[np.intp]:
    """Diagnostic (the probe that led to the default's RBF candidate, which differs: the
    fold's own preprocessing, at most 50 features, a one-SE margin): the interaction ridge
    on 500 random Fourier features of an RBF kernel (bandwidth^2 = p on the standardised
    features; median imputation, no site handling), fitted by brainmatch's exact-LOO
    ridge; with ``choose``, per outer fold either it or the default's screened ridge, by
    the default's doubly robust treatment-effect criterion on the training rows.  It asked
    whether a kernel candidate in the default would close the non-linear rows."""
    from brainmatch.selection.pipeline import ArmModels
    from brainmatch.selection.screen import ScreenedArmModels, _dr_loss, dr_pseudo_outcomes

    X, t, y = _arrays(r)
    n, p = X.shape
    k = len(r.arms)
    rec = np.zeros(n, dtype=int)
    C0 = np.zeros((n, 0))
    for _, tr, te in splits:
        med = np.nanmedian(X[tr], axis=0)
        Xf = np.where(np.isnan(X), med, X)
        Z = (Xf - Xf[tr].mean(axis=0)) / (Xf[tr].std(axis=0) + 1e-12)
        rng = np.random.default_rng(0)
        F = np.cos(Z @ rng.normal(size=(p, 500)) / np.sqrt(p) + rng.uniform(0, 2 * np.pi, 500))
        F = (F - F[tr].mean(axis=0)) / (F[tr].std(axis=0) + 1e-12)
        rbf = ArmModels("interaction").fit(F[tr], C0[tr], t[tr], k, y[tr, None])
        pred = rbf.predict(F[te], C0[te])[:, :, 0]
        if choose:
            lin = ScreenedArmModels("interaction", "auto").fit(Z[tr], C0[tr], t[tr], k, y[tr, None])
            kk = int(lin.k_[0])
            if kk == p:
                assert lin.full_ is not None
                mu_lin = lin.full_.loo_predict(y[tr, None])
            else:
                mu_lin = lin._inner_cv(Z[tr], C0[tr], t[tr], k, y[tr, None], [kk])[0]
            mu_rbf = rbf.loo_predict(y[tr, None])
            rows = np.arange(tr.size)
            err = [float(((y[tr] - m[rows, t[tr], 0]) ** 2).sum()) for m in (mu_lin, mu_rbf)]
            G = dr_pseudo_outcomes(mu_lin if err[0] <= err[1] else mu_rbf, t[tr], y[tr, None])
            if _dr_loss(G, mu_lin.astype(float))[0] <= _dr_loss(G, mu_rbf)[0]:
                pred = lin.predict(Z[te], C0[te])[:, :, 0]
        rec[te] = pred.argmax(axis=1)
    return rec


def hinge_probe(r: Regime, splits: list[Any]) -> NDArray[np.intp]:
    """Diagnostic, not a method (not in brainmatch): the default on the features plus three
    hinge functions of each, ``max(0, x - q)`` at its quartiles ``q`` (knots from all rows:
    no outcome is used).  It asks whether a per-feature non-linear basis, screened like the
    linear features, would catch threshold effects among hundreds of features, where the
    RBF candidate is not offered."""
    X = r.features.iloc[:, 1:]
    cols: dict[str, Any] = {"participant_id": r.features["participant_id"]}
    for c in X.columns:
        cols[c] = X[c]
        for q in (0.25, 0.5, 0.75):
            cols[f"{c}_h{int(q * 100)}"] = np.maximum(0.0, X[c] - X[c].quantile(q))
    return brainmatch_policy(r, "interaction", features=pd.DataFrame(cols))


def product_probe(r: Regime, splits: list[Any]) -> NDArray[np.intp]:
    """Diagnostic, not a method (not in brainmatch): the default on the features plus every
    pairwise product ``z_i z_j`` of the features standardised on all rows (no outcome is
    used; a missing value gives a missing product, imputed by the default's pipeline).  It
    asks whether a product basis, screened like the features, would catch effect modifiers
    that act jointly (the non-linear regime's ``x_1 x_2`` term), which neither the
    features, their hinges nor an isotropic kernel over hundreds of features do."""
    X = r.features.iloc[:, 1:].to_numpy(float)
    p = X.shape[1]
    Z = (X - np.nanmean(X, axis=0)) / np.nanstd(X, axis=0)
    i, j = np.triu_indices(p, 1)
    products = pd.DataFrame(
        Z[:, i] * Z[:, j],
        columns=[
            f"{r.features.columns[1 + a]}_x_{r.features.columns[1 + b]}"
            for a, b in zip(i, j, strict=True)
        ],
    )
    return brainmatch_policy(r, "interaction", features=pd.concat([r.features, products], axis=1))


def fallback_probe(r: Regime, splits: list[Any]) -> NDArray[np.intp]:
    """Diagnostic, not a method (not in brainmatch): the default, except that in an outer
    fold whose training rows' own cross-validated policy gain (``validate`` on the
    training rows, 5-fold, doubly robust) is not above 0, every test patient gets the arm
    with the best mean outcome in the training rows.  It asks whether falling back to the
    best single arm would lift the rows where every method's share is negative."""
    from brainmatch import TreatmentSelector

    sites = r.outcomes["site"] if r.outcomes["site"].nunique() > 1 else None
    X = r.features.iloc[:, 1:]
    arm, y = r.outcomes["arm"], r.outcomes["y"]
    rec = np.zeros(len(y), dtype=int)
    for _, tr, te in splits:
        inner = validate(
            r.features.iloc[tr],
            r.outcomes.iloc[tr],
            treatment_column="arm",
            outcome_column="y",
            site_column="site" if sites is not None else None,
            better="higher",
            n_repeats=1,
            n_permutations=0,
            learning_curve=False,
        )
        if inner.metrics["selection"]["policy_gain"] > 0:
            sel = TreatmentSelector(better="higher").fit(
                X.iloc[tr], arm.iloc[tr], y.iloc[tr],
                sites=None if sites is None else sites.iloc[tr],
            )  # fmt: skip
            out = sel.recommend(X.iloc[te], sites=None if sites is None else sites.iloc[te])
            rec[te] = np.searchsorted(r.arms, out["recommended"].to_numpy())
        else:
            means = y.iloc[tr].groupby(arm.iloc[tr]).mean()
            rec[te] = int(np.searchsorted(r.arms, means.idxmax()))
    return rec


METHODS = {
    "bm default (interaction, select auto)": lambda r, s: brainmatch_policy(r, "interaction"),
    "bm screen by outcome error (previous default)": lambda r, s: outcome_criterion_policy(r),
    "bm auto": lambda r, s: brainmatch_policy(r, "auto"),
    "bm x-hgb": lambda r, s: brainmatch_policy(r, "x-hgb"),
    "anchor ridge interaction (all features)": lambda r, s: brainmatch_policy(
        r, "interaction", "none"
    ),
    "anchor lasso T": lasso_t_anchor,
    "anchor EconML DR": lambda r, s: econml_anchor(r, s, "dr"),
    "anchor EconML CF": lambda r, s: econml_anchor(r, s, "cf"),
    "ceiling: ridge, oracle penalty": ridge_oracle_penalty_ceiling,
    "probe: select auto on a 0/1 outcome (linear-probability screens)": lambda r, s: (
        brainmatch_policy(r, "interaction", "auto")
    ),
    "probe: RBF interaction ridge": lambda r, s: rbf_probe(r, s, False),
    "probe: default or RBF ridge, by the DR criterion": lambda r, s: rbf_probe(r, s, True),
    "probe: default, best single arm when its inner policy gain <= 0": fallback_probe,
    "probe: default on features + quartile hinges": hinge_probe,
    "probe: default on features + pairwise products": product_probe,
}


def grid(
    regimes: list[tuple[int, int, str, int, int, float]],
    seeds: int,
    only: list[str] | None = None,
    heavy: bool = False,
    outcome: str = "continuous",
) -> None:
    methods = dict(METHODS)
    if only:
        methods = {k: v for k, v in methods.items() if any(o in k for o in only)}
    else:  # the probes are diagnostics for the non-linear rows: only when asked for
        methods = {k: v for k, v in methods.items() if not k.startswith("probe")}
    if not econml_available():
        methods = {k: v for k, v in methods.items() if "EconML" not in k}
        print("EconML not installed: its anchors are skipped")
    names = list(methods)
    print(
        "share of the oracle's gain recovered out of fold (mean +- Monte-Carlo SE over "
        f"{seeds} seeds); seconds per trial in brackets"
    )
    print("| regime | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for n, p, inter, arms, sites, missing in regimes:
        shares: dict[str, list[float]] = {m: [] for m in names}
        times: dict[str, list[float]] = {m: [] for m in names}
        for seed in range(seeds):
            r = draw_regime(
                n, p, inter, arms, sites=sites, missing=missing, effect=1.0, seed=seed,
                outcome=outcome,
            )  # fmt: skip
            # the folds validate() makes (stratified by arm, and by site when there are
            # sites), so every method is scored on the same folds
            site = r.outcomes["site"].to_numpy() if sites > 1 else None
            splits = outer_splits(
                r.outcomes["arm"].to_numpy(), n_splits=5, n_repeats=1, sites=site, seed=0
            )
            for m in names:
                if "EconML" in m and p >= 1000 and not heavy:
                    continue  # minutes per fit at p = 1000 on 2 shared cores: --full runs it
                if m.startswith("ceiling") and p >= 1000:
                    continue  # a diagnostic for the dense regime (26 penalties x 5 folds)
                if ("RBF" in m or "hinges" in m or "products" in m) and p > 200:
                    continue  # an RBF over hundreds of features learned nothing; 4 p hinges
                start = time.perf_counter()
                rec = methods[m](r, splits)
                times[m].append(time.perf_counter() - start)
                shares[m].append(oracle_share(r.mu, rec))
        label = (
            f"n={n} p={p} {inter} {arms} arms"
            + (f" {sites} sites {int(100 * missing)}% missing" if sites > 1 else "")
            + (" 0/1 outcome" if outcome == "binary" else "")
        )
        cells = []
        for m in names:
            if not shares[m]:
                cells.append(
                    "not run (p > 200)"
                    if "RBF" in m or "hinges" in m or "products" in m
                    else "not run (p >= 1000)"
                    if m.startswith("ceiling")
                    else "not run (p >= 1000; --full)"
                )
                continue
            v = np.array(shares[m])
            se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
            cells.append(f"{v.mean():.2f} +- {se:.2f} [{np.mean(times[m]):.0f} s]")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        # per-seed shares, so that summarize_select.py can pair the default with an anchor
        # seed by seed (the Monte-Carlo error of their difference)
        print(
            f"per-seed shares of {label}: "
            + json.dumps({m: [round(x, 6) for x in shares[m]] for m in names if shares[m]}),
            flush=True,
        )


def null_calibration(
    n_trials: int,
    n_pat: int = 150,
    p: int = 20,
    select: str | None = None,
    permutation_null: str = "auto",
    first: int = 0,
    out: str | None = None,
    repeats: int = 2,
    arms: int = 2,
    sites: int = 1,
    missing: float = 0.0,
    outcome: str = "continuous",
) -> None:
    """Coverage of the policy gain's interval on null trials, and permutation p-values.

    Trials ``first`` .. ``first + n_trials - 1`` (seed ``10000 + index``); ``out`` also
    writes every trial's results as JSON, which ``--null-merge`` summarises together (two
    halves of one run in two processes).  ``repeats`` CV repeats (the default's 10 cost
    5x the benchmark's 2); ``arms``, ``sites`` (ComBat and site-stratified folds) and
    ``missing`` and ``outcome`` (0/1: ``binary``) as in :func:`draw_regime`."""
    start = time.perf_counter()
    cover0, false_claim, cover_true, ps, ps_gain = [], [], [], [], []
    methods: dict[str, int] = {}
    for s in range(first, first + n_trials):
        r = draw_regime(
            n_pat, p, "none", arms, sites=sites, missing=missing, seed=10_000 + s,
            outcome=outcome,
        )  # fmt: skip
        res = validate(
            r.features,
            r.outcomes,
            treatment_column="arm",
            outcome_column="y",
            site_column="site" if sites > 1 else None,
            better="higher",
            n_repeats=repeats,
            n_permutations=99,
            learning_curve=False,
            seed=s,
            select=select,
            permutation_null=permutation_null,
        )
        sel = res.metrics["selection"]
        key = f"{sel['n_permutations']} {sel['permutation_null_method']}"
        methods[key] = methods.get(key, 0) + 1
        lo, hi = sel["policy_gain_ci"]
        cover0.append(lo <= 0 <= hi)
        false_claim.append(lo > 0)
        ps.append(sel["permutation_p"])
        ps_gain.append(sel["policy_gain_permutation_p"])
        # true gain of the cross-validated policy over the training-fold best arm
        _, t, y = _arrays(r)
        by_repeat = res.extras["by_repeat"]
        total, count = np.zeros(len(y)), np.zeros(len(y))
        for rep, tr, te in res.extras["splits"]:
            comp = int(np.argmax([y[tr][t[tr] == a].mean() for a in range(arms)]))
            pol = by_repeat[rep, te].argmax(axis=1)
            total[te] += r.mu[te, pol] - r.mu[te, comp]
            count[te] += 1
        true_gain = float((total / count).mean())
        cover_true.append(lo <= true_gain <= hi)
    elapsed = time.perf_counter() - start
    records = {
        "n_pat": n_pat, "p": p, "select": select, "methods": methods, "elapsed": elapsed,
        "repeats": repeats, "arms": arms, "sites": sites, "missing": missing,
        "outcome": outcome, "first": first, "cover0": [bool(v) for v in cover0],
        "cover_true": [bool(v) for v in cover_true],
        "false_claim": [bool(v) for v in false_claim],
        "ps": [float(v) for v in ps], "ps_gain": [float(v) for v in ps_gain],
    }  # fmt: skip
    if out:
        Path(out).write_text(json.dumps(records))
    null_summary([records])


def null_summary(parts: list[dict[str, Any]]) -> None:
    """Print the null calibration of one or more runs' trial records (same design)."""
    n_pat, p, select = parts[0]["n_pat"], parts[0]["p"], parts[0]["select"]

    def design(q: dict[str, Any]) -> tuple[Any, ...]:
        # files written before these keys existed: 2 repeats, 2 arms, no sites
        return (
            q["n_pat"], q["p"], q["select"], q.get("repeats", 2), q.get("arms", 2),
            q.get("sites", 1), q.get("missing", 0.0), q.get("outcome", "continuous"),
        )  # fmt: skip

    first = design(parts[0])
    other = [design(q) for q in parts if design(q) != first]
    if other:
        raise SystemExit(
            "--null-merge: the files hold different designs (n, p, select, repeats, arms, "
            f"sites, missing, outcome: {first} and {other[0]})"
        )
    _, _, _, repeats, arms, sites, missing, outcome = first
    methods: dict[str, int] = {}
    for part in parts:
        for key, count in part["methods"].items():
            methods[key] = methods.get(key, 0) + count
    cover0, cover_true, false_claim, ps, ps_gain = (
        [v for part in parts for v in part[key]]
        for key in ("cover0", "cover_true", "false_claim", "ps", "ps_gain")
    )
    elapsed = sum(part["elapsed"] for part in parts)
    n = len(ps)

    def cp(k: int) -> str:
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        return f"{k / n:.3f} (95% CI {ci.low:.3f}-{ci.high:.3f})"

    print(
        f"\n{n} null trials (n = {n_pat}, p = {p}, {arms} arms"
        + (f", {sites} sites" if sites > 1 else "")
        + (f", {100 * missing:.0f}% missing" if missing else "")
        + (", 0/1 outcome" if outcome == "binary" else "")
        + f", draw_regime 'none'; "
        f"{'the default model' if select is None else f'select={select!r}'}, "
        f"5-fold x {repeats} repeats; permutations: {methods}) in {elapsed:.0f} s"
        + (f" (sum over {len(parts)} runs)" if len(parts) > 1 else "")
    )
    print(f"  policy-gain 95% CI covers 0:            {cp(int(np.sum(cover0)))}")
    print(f"  covers the true gain of the CV policy:  {cp(int(np.sum(cover_true)))}")
    print(f"  false claim of a gain (lower end > 0):  {cp(int(np.sum(false_claim)))}")
    for label, values in (("permutation p", ps), ("policy-gain permutation p", ps_gain)):
        ps_a = np.array(values)
        print(
            f"  {label} <= 0.05: {cp(int((ps_a <= 0.05).sum()))}; KS test of uniformity "
            f"p = {stats.kstest(ps_a, 'uniform').pvalue:.3f}; deciles "
            f"{np.round(np.quantile(ps_a, np.linspace(0.1, 0.9, 9)), 2).tolist()}, "
            f"mean {ps_a.mean():.3f}"
        )
    print("  (the selection-benefit d has no interval any more: see docs/train.md)")


def scale_one(n: int, p: int, learning_curve: bool, scheduler: str | None) -> dict[str, Any]:
    """One full default validation (``interaction``: 5-fold x 10 repeats, 1000
    permutations) at ``n`` x ``p``; wall and CPU seconds and peak resident memory."""
    import resource

    r = draw_regime(n, p, "sparse", 2, seed=0)
    cluster = None
    if scheduler and scheduler.startswith("local:"):
        from distributed import LocalCluster

        cluster = LocalCluster(
            n_workers=int(scheduler.split(":")[1]),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )
        scheduler = cluster.scheduler_address
    start, cpu = time.perf_counter(), time.process_time()
    res = validate(
        r.features,
        r.outcomes,
        treatment_column="arm",
        outcome_column="y",
        better="higher",
        learning_curve=learning_curve,
        scheduler=scheduler,
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if cluster is not None:
        cluster.close()  # worker processes end: their CPU and peak memory become visible
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += children.ru_utime + children.ru_stime
        peak = max(peak, children.ru_maxrss / 1e6)
    sel = res.metrics["selection"]
    return {
        "n": n,
        "wall": wall,
        "cpu": cpu,
        "peak_gb": peak,
        "permutation_cv_repeats": sel["permutation_cv_repeats"],
        "permutation_p": sel["permutation_p"],
        "policy_gain": sel["policy_gain"],
        "share": oracle_share(
            r.mu, np.searchsorted(res.metrics["arms"], res.predictions["recommended"])
        ),
    }


def fold_cost_one(n: int, p: int, m: int) -> str:
    """One fit of the default's screened models (``ScreenedArmModels``, every family the
    design offers) on ``m`` target columns (the outcome and ``m - 1`` permutations of it)
    of an ``n x p`` training set: CPU seconds and peak resident memory of this process."""
    import resource

    from brainmatch.selection import screen
    from brainmatch.selection.screen import ScreenedArmModels

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(n, p))
    t = np.arange(n) % 2
    y = Z[:, 0] + t * Z[:, 1] * Z[:, 2] + rng.normal(size=n)
    Y = np.column_stack([y] + [y[rng.permutation(n)] for _ in range(m - 1)])
    cpu = time.process_time()
    ScreenedArmModels().fit(Z, np.zeros((n, 0)), t, 2, Y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return (
        f"n={n} p={p} columns={m}, products {'on' if screen.PRODUCT_MAX_P else 'off'}: "
        f"CPU {time.process_time() - cpu:.1f} s, peak {peak:.2f} GB"
    )


def fold_cost(n: int, p: int, m: int) -> None:
    """:func:`fold_cost_one` with and without the product candidate, each in a fresh
    process (so each peak memory is its own)."""
    import subprocess
    import sys

    for maxp in (200, 0):
        out = subprocess.run(
            [sys.executable, __file__, "--fold-cost-one", f"{n},{p},{m}",
             "--product-max-p", str(maxp)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        print(out.stdout.strip(), flush=True)


def advantage_coverage(trials: int, n_train: int = 150, n_new: int = 200, p: int = 20) -> None:
    """Per-patient 95 % advantage intervals of ``recommend`` against the truth: each trial
    trains the default on ``n_train`` patients (one CV repeat, no permutations: the final
    model and its bootstrap refits are what matter) and recommends for ``n_new`` others;
    the share of them whose interval covers the true advantage of the recommended arm
    over the next best, and the share with an interval above 0 when the true advantage
    is not (a confident wrong choice), for each way of making the interval
    (``recommend.ADVANTAGE_INTERVAL``), on null and sparse trials."""
    import importlib
    import tempfile

    from brainmatch.selection import recommend, train

    rec_module = importlib.import_module("brainmatch.selection.recommend")
    saved = rec_module.ADVANTAGE_INTERVAL
    print(
        f"\nper-patient advantage intervals: {trials} trials per regime, {n_train} training "
        f"patients, {p} features, 2 arms, {n_new} new patients each"
    )
    try:
        for inter in ("none", "sparse"):
            cover: dict[str, list[float]] = {"t": [], "percentile": []}
            wrong: dict[str, list[float]] = {"t": [], "percentile": []}
            for s in range(trials):
                r = draw_regime(n_train + n_new, p, inter, 2, seed=30000 + s)
                tr, te = slice(0, n_train), slice(n_train, n_train + n_new)
                with tempfile.TemporaryDirectory() as d:
                    res = train(
                        r.features.iloc[tr], r.outcomes.iloc[tr], treatment_column="arm",
                        outcome_column="y", better="higher", out_dir=Path(d) / "m",
                        n_repeats=1, n_permutations=0, learning_curve=False,
                    )  # fmt: skip
                    for how in cover:
                        rec_module.ADVANTAGE_INTERVAL = how
                        got = recommend(res.model_path, r.features.iloc[te].reset_index(drop=True))
                        c, w = [], []
                        for i, pt in enumerate(got.patients):
                            b = r.arms.index(pt["recommended"])
                            nx = r.arms.index(pt["next_best"])
                            truth = r.mu[n_train + i, b] - r.mu[n_train + i, nx]
                            lo, hi = pt["advantage_interval"]
                            c.append(lo <= truth <= hi)
                            w.append(lo > 0 and truth <= 0)
                        cover[how].append(float(np.mean(c)))
                        wrong[how].append(float(np.mean(w)))
            for how in cover:
                v = np.array(cover[how])
                se = v.std(ddof=1) / np.sqrt(v.size)
                print(
                    f"  {inter:6s} {how:10s}: covers the true advantage for "
                    f"{v.mean():.3f} of patients (SE over trials {se:.3f}); "
                    f"confident wrong choice {np.mean(wrong[how]):.4f}",
                    flush=True,
                )
    finally:
        rec_module.ADVANTAGE_INTERVAL = saved


def scale(
    sizes: list[int],
    p: int = 1000,
    learning_curve: bool = True,
    scheduler: str | None = None,
    forward: list[str] | None = None,
) -> None:
    """Full default validation as n grows at p features: each size in a fresh process (so
    its peak memory is its own), wall and CPU time and the ratios to the first n given.
    ``forward``: options of this script passed on to each process (the screen's settings)."""
    import os
    import subprocess
    import sys

    print(
        f"\nscale: validate(model='interaction'), p = {p}, 5-fold x 10 repeats, 1000 "
        f"permutations, learning curve {'on' if learning_curve else 'off'}"
        + (f", scheduler {scheduler}" if scheduler else ", serial (1 BLAS thread)")
    )
    print(f"  load before: {os.getloadavg()[0]:.2f} (1-min load average, 2 cores)")
    base = None
    for n in sizes:
        cmd = [sys.executable, __file__, "--scale-one", str(n), "--scale-p", str(p)]
        if not learning_curve:
            cmd.append("--no-learning-curve")
        if scheduler:
            cmd += ["--scheduler", scheduler]
        cmd += forward or []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        base = base or row
        print(
            f"  n = {n:>6}: wall {row['wall']:7.1f} s (x{row['wall'] / base['wall']:.1f}), "
            f"CPU {row['cpu']:7.1f} s (x{row['cpu'] / base['cpu']:.1f}) for "
            f"x{n / base['n']:.1f} patients; peak RSS {row['peak_gb']:.2f} GB; permutations "
            f"refitted in {row['permutation_cv_repeats']} of 10 repeats; p = "
            f"{row['permutation_p']:.4f}, policy gain {row['policy_gain']:.3f}, share of the "
            f"oracle's gain {row['share']:.2f}; load {os.getloadavg()[0]:.2f}",
            flush=True,
        )


def cost(designs: list[tuple[int, int]]) -> None:
    """CPU time of a full default validation (5-fold x 10 repeats, 1000 permutations,
    learning curve) against the plain ridge over all features, same trial, same process."""
    print(
        "\ncost of the default (screened ridge) against the plain ridge: full validate, "
        "5-fold x 10 repeats, 1000 permutations, learning curve; CPU seconds (1 BLAS thread)"
    )
    for n, p in designs:
        r = draw_regime(n, p, "sparse", 2, seed=0)
        row = []
        for select in (None, "none"):
            cpu = time.process_time()
            res = validate(
                r.features,
                r.outcomes,
                treatment_column="arm",
                outcome_column="y",
                better="higher",
                select=select,
            )
            sel = res.metrics["selection"]
            share = oracle_share(
                r.mu, np.searchsorted(res.metrics["arms"], res.predictions["recommended"])
            )
            row.append((time.process_time() - cpu, share, sel["permutation_cv_repeats"]))
        (c1, s1, r1), (c0, s0, r0) = row
        print(
            f"  n = {n}, p = {p}: default {c1:.1f} s (share {s1:.2f}, permutations in {r1} "
            f"repeats), plain ridge {c0:.1f} s (share {s0:.2f}, {r0} repeats): x{c1 / c0:.1f}",
            flush=True,
        )


def main() -> None:
    """Run the reduced (default) or full grid, then the null calibration."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the full grid (hours)")
    ap.add_argument(
        "--seeds", type=int, default=5, help="trials per row (5: the tables in docs/train.md)"
    )
    ap.add_argument("--null-trials", type=int, default=200)
    ap.add_argument(
        "--null-designs",
        default="150x20",
        help="n x p of the null trials (default 150x20, about 20 minutes for 200 trials; "
        "add 300x200, where the default's test is a re-randomisation, for the wide design: "
        "80-100 s per trial, hours)",
    )
    ap.add_argument("--null-repeats", type=int, default=2, help="CV repeats of the null trials")
    ap.add_argument("--null-arms", type=int, default=2, help="arms of the null trials")
    ap.add_argument(
        "--null-sites", type=int, default=1, help="sites of the null trials (ComBat, site folds)"
    )
    ap.add_argument(
        "--null-missing", type=float, default=0.0, help="share of missing feature values"
    )
    ap.add_argument("--null-binary", action="store_true", help="null trials with a 0/1 outcome")
    ap.add_argument(
        "--null-first", type=int, default=0, help="index of the first null trial (its seed - 10000)"
    )
    ap.add_argument("--null-out", default=None, help="also write the null trials' results (JSON)")
    ap.add_argument(
        "--null-merge",
        default=None,
        help="only summarise these --null-out files together (comma-separated)",
    )
    ap.add_argument(
        "--null-permutation",
        default="auto",
        help="permutation_null= of the null trials (auto: the default)",
    )
    ap.add_argument(
        "--rerandomise-raw",
        action="store_true",
        help="re-randomised null trials without re-centring the arm means (the plain "
        "plug-in; RERANDOMISE_CENTRE = False), for comparison",
    )
    ap.add_argument(
        "--null-select", default=None, help="select= of the null trials (default: the default)"
    )
    ap.add_argument("--skip-grid", action="store_true")
    ap.add_argument(
        "--binary",
        action="store_true",
        help="rows with a 0/1 outcome (n in {400, 1500}, p in {10, 200, 2000}, 2 arms; the "
        "lasso T anchor is then an L1 logistic per arm); --regimes indexes them",
    )
    ap.add_argument(
        "--extra",
        action="store_true",
        help="the rows the full grid leaves out (n = 400: 3 arms; 2 arms with 3 sites and "
        "5 %% missing); --regimes indexes them",
    )
    ap.add_argument("--regimes", default=None, help="comma-separated row numbers of the grid")
    ap.add_argument("--methods", default=None, help="comma-separated parts of method names")
    ap.add_argument("--scale", default=None, help="comma-separated n for the timing (p=1000)")
    ap.add_argument(
        "--econml-high-p", action="store_true", help="run the EconML anchors at p >= 1000 too"
    )
    ap.add_argument("--scale-p", type=int, default=1000, help="features of --scale")
    ap.add_argument(
        "--cost", default=None, help="n x p designs for the cost of the default, e.g. 120x14"
    )
    ap.add_argument("--scale-one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-learning-curve", action="store_true", help="--scale without it")
    ap.add_argument(
        "--scheduler",
        default=None,
        help="--scale on this Dask scheduler, or local:N for a LocalCluster of N worker "
        "processes started for each n (CPU then includes the workers'; peak memory is the "
        "largest single process, driver or worker, not their sum)",
    )
    ap.add_argument(
        "--rbf-max-p",
        type=int,
        default=None,
        help="screen.RBF_MAX_P for this run (0: the default without its RBF candidate)",
    )
    ap.add_argument(
        "--hinge-max-p",
        type=int,
        default=None,
        help="screen.HINGE_MAX_P for this run (0: the default without its hinge candidates)",
    )
    ap.add_argument(
        "--product-max-p",
        type=int,
        default=None,
        help="screen.PRODUCT_MAX_P for this run (0: the default without its product basis)",
    )
    ap.add_argument(
        "--screen-se",
        type=float,
        default=None,
        help="screen.SCREEN_SE for this run: standard errors by which a screen must beat "
        "the all-features ridge",
    )
    ap.add_argument(
        "--advantage-coverage",
        type=int,
        default=0,
        help="trials per regime (null, sparse) for the coverage of recommend's per-patient "
        "advantage intervals (t and percentile; about 5 s per trial)",
    )
    ap.add_argument(
        "--fold-cost",
        default=None,
        help="n,p,m: CPU and peak memory of one screened fit on m target columns, with and "
        "without the product candidate",
    )
    ap.add_argument("--fold-cost-one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    from brainmatch.selection import screen

    if args.product_max_p is not None:
        screen.PRODUCT_MAX_P = args.product_max_p
    if args.screen_se is not None:
        screen.SCREEN_SE = args.screen_se
    if args.fold_cost_one:
        print(fold_cost_one(*(int(v) for v in args.fold_cost_one.split(","))))
        return
    if args.rbf_max_p is not None:
        screen.RBF_MAX_P = args.rbf_max_p
    if args.hinge_max_p is not None:
        screen.HINGE_MAX_P = args.hinge_max_p
    if args.null_merge:
        null_summary([json.loads(Path(f).read_text()) for f in args.null_merge.split(",")])
        return
    if args.scale_one:
        row = scale_one(args.scale_one, args.scale_p, not args.no_learning_curve, args.scheduler)
        print(json.dumps(row))
        return
    print("timings measured on a shared, loaded 2-core machine")
    if not args.skip_grid:
        regimes = (
            binary_grid()
            if args.binary
            else extra_grid()
            if args.extra
            else full_grid()
            if args.full
            else REDUCED
        )
        if args.regimes:
            regimes = [regimes[int(i)] for i in args.regimes.split(",")]
        grid(
            regimes,
            args.seeds,
            args.methods.split(",") if args.methods else None,
            heavy=args.full or args.extra or args.binary or args.econml_high_p,
            outcome="binary" if args.binary else "continuous",
        )
    if args.rerandomise_raw:
        import importlib

        importlib.import_module("brainmatch.selection.train").RERANDOMISE_CENTRE = False
    if args.null_trials:
        if args.null_out and "," in args.null_designs:
            ap.error("--null-out takes one --null-designs design (each run's file holds one)")
        for design in args.null_designs.split(","):
            n_pat, p_feat = (int(v) for v in design.lower().split("x"))
            null_calibration(
                args.null_trials,
                n_pat,
                p_feat,
                args.null_select,
                args.null_permutation,
                first=args.null_first,
                out=args.null_out,
                repeats=args.null_repeats,
                arms=args.null_arms,
                sites=args.null_sites,
                missing=args.null_missing,
                outcome="binary" if args.null_binary else "continuous",
            )
    if args.advantage_coverage:
        advantage_coverage(args.advantage_coverage)
    if args.cost:
        cost([tuple(int(v) for v in d.lower().split("x")) for d in args.cost.split(",")])  # type: ignore[misc]
    if args.fold_cost:
        fold_cost(*(int(v) for v in args.fold_cost.split(",")))
    if args.scale:
        scale(
            [int(v) for v in args.scale.split(",")],
            args.scale_p,
            not args.no_learning_curve,
            args.scheduler,
            [
                arg
                for flag, v in (
                    ("--rbf-max-p", args.rbf_max_p),
                    ("--hinge-max-p", args.hinge_max_p),
                    ("--product-max-p", args.product_max_p),
                    ("--screen-se", args.screen_se),
                )
                if v is not None
                for arg in (flag, str(v))
            ],
        )


if __name__ == "__main__":
    main()
