"""Frequentist network meta-analysis (contrast-based, random effects, multi-arm aware).

The model is the one R's ``netmeta`` fits (Rücker 2012; its graph-theoretical
estimate equals the generalised-least-squares estimate below, Rücker & Schwarzer
2014):

``y = X d + delta + eps``, where ``y`` stacks each study's contrasts against a
baseline arm, ``X`` maps them onto the basic parameters ``d_t`` (treatment ``t``
versus the reference), ``eps ~ N(0, S)`` with ``S`` the within-study covariance
(contrasts of one multi-arm study that share an arm are correlated by that arm's
variance), and ``delta ~ N(0, tau^2 U)`` with ``U`` = 1 on the diagonal and 1/2
between contrasts of one study (a common heterogeneity variance, as netmeta).

Multi-arm studies.  Each contrast's variance is split into arm variances
(``v_ab = s_a + s_b``): exactly when all pairs of a study are given (Rücker's
reduced-variance approach), or from the shared control's size when only the
comparisons against a shared control are given (``s_c = 1/n_c``, the control's
contribution to the variance of a standardised mean difference).

tau^2: generalised DerSimonian-Laird (``(Q - df) / tr(P U)``; Jackson, White &
Riley 2012; equal to netmeta's ``method.tau = "DL"`` when every study has two arms,
while netmeta's multi-arm weighting may differ slightly) or REML.
Ranking: P-scores (Rücker & Schwarzer 2015).  Inconsistency: design-by-treatment
interaction Q (Higgins et al. 2012; Krahn, Binder & König 2013), splitting the total
Q into within-design heterogeneity and between-design inconsistency.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import optimize, stats

from brainmatch._io import json_safe
from brainmatch.errors import BrainmatchInputError

FloatArray = NDArray[np.float64]


@dataclass
class _Study:
    name: str
    arms: list[str]  # arm ids
    treat: dict[str, str]  # arm id -> treatment
    pairs: list[tuple[str, str, float, float]]  # (arm a, arm b, y = a - b, var)
    shared_var: dict[str, float] = field(default_factory=dict)  # arm id -> known variance
    y: FloatArray = field(default_factory=lambda: np.zeros(0))
    S: FloatArray = field(default_factory=lambda: np.zeros((0, 0)))
    basis: list[tuple[str, str]] = field(default_factory=list)
    tree: tuple[list[tuple[str, str, float]], str] = field(default_factory=lambda: ([], ""))


@dataclass
class NMAResult:
    """Result of :func:`network_meta_analysis`.

    Attributes
    ----------
    treatments : list of str
        Treatments, reference first.
    reference : str
        Reference treatment.
    d_fixed, d_random : ndarray
        Effects of each treatment versus the reference (0 for the reference).
    cov_fixed, cov_random : ndarray
        Their covariance matrices (reference row/column zero).
    tau2 : float
        Between-study variance (common to all comparisons).
    Q, df, pval_Q, I2 : float, int, float, float
        Total heterogeneity/inconsistency statistic of the fixed-effect model.
    design_Q : dict
        Design-by-treatment decomposition: ``Q_het`` / ``df_het`` / ``p_het``
        (within designs), ``Q_inc`` / ``df_inc`` / ``p_inc`` (between designs, fixed
        effect) and ``Q_inc_random`` / ``p_inc_random`` (random effects, with
        ``tau2_within``: tau^2 of the full design-by-treatment interaction model, as
        netmeta's ``decomp.design``).
    pscore_fixed, pscore_random : dict
        P-scores.
    n_studies, n_comparisons : int
        Studies and pairwise comparisons (edges with data).
    edges : DataFrame
        One row per directly compared pair: ``treat1``, ``treat2``, ``n_studies``.
    larger_is_better : bool
        Orientation used by the P-scores.
    level : float
        Confidence level.
    method_tau : str
        tau^2 estimator.
    """

    treatments: list[str]
    reference: str
    d_fixed: FloatArray
    d_random: FloatArray
    cov_fixed: FloatArray
    cov_random: FloatArray
    tau2: float
    Q: float
    df: int
    pval_Q: float
    I2: float
    design_Q: dict[str, Any]
    pscore_fixed: dict[str, float]
    pscore_random: dict[str, float]
    n_studies: int
    n_comparisons: int
    edges: pd.DataFrame
    larger_is_better: bool
    level: float
    method_tau: str
    n_multiarm: int = 0
    multiarm_inconsistent: list[str] = field(default_factory=list)

    def comparison(self, a: str, b: str, model: str = "random") -> dict[str, float]:
        """Effect of ``a`` versus ``b`` with SE, CI and p-value.

        Parameters
        ----------
        a, b : str
            Treatments.
        model : {"random", "fixed"}
            Which model.

        Returns
        -------
        dict
            ``estimate``, ``se``, ``ci_lb``, ``ci_ub``, ``pval``.
        """
        i, j = self._index(a), self._index(b)
        d, c = (
            (self.d_random, self.cov_random)
            if model == "random"
            else (self.d_fixed, self.cov_fixed)
        )
        est = float(d[i] - d[j])
        var = float(c[i, i] + c[j, j] - 2 * c[i, j])
        se = math.sqrt(max(var, 0.0))
        z = stats.norm.ppf(0.5 + self.level / 2)
        p = float(2 * stats.norm.sf(abs(est) / se)) if se > 0 else float("nan")
        return {"estimate": est, "se": se, "ci_lb": est - z * se, "ci_ub": est + z * se, "pval": p}

    def _index(self, t: str) -> int:
        try:
            return self.treatments.index(t)
        except ValueError:
            raise BrainmatchInputError(
                f"unknown treatment {t!r}; the network has {', '.join(self.treatments)}"
            ) from None

    def league_table(self, model: str = "random", digits: int = 2) -> pd.DataFrame:
        """League table: cell (row i, column j) is the effect of i versus j [CI].

        Treatments are ordered by P-score (best first).

        Parameters
        ----------
        model : {"random", "fixed"}
            Which model.
        digits : int
            Rounding of the printed cells.

        Returns
        -------
        DataFrame
            Square table of strings; the diagonal holds the treatment names.
        """
        ps = self.pscore_random if model == "random" else self.pscore_fixed
        order = sorted(self.treatments, key=lambda t: -ps[t])
        table = pd.DataFrame(index=order, columns=order, dtype=object)
        for a in order:
            for b in order:
                if a == b:
                    table.loc[a, b] = a
                else:
                    c = self.comparison(a, b, model)
                    table.loc[a, b] = (
                        f"{c['estimate']:.{digits}f} "
                        f"[{c['ci_lb']:.{digits}f}; {c['ci_ub']:.{digits}f}]"
                    )
        return table

    def effects_table(self, model: str = "random") -> pd.DataFrame:
        """Every treatment versus the reference, with P-scores."""
        ps = self.pscore_random if model == "random" else self.pscore_fixed
        rows = []
        for t in self.treatments:
            c = (
                self.comparison(t, self.reference, model)
                if t != self.reference
                else {"estimate": 0.0, "se": 0.0, "ci_lb": 0.0, "ci_ub": 0.0, "pval": float("nan")}
            )
            rows.append({"treatment": t, "vs": self.reference, **c, "pscore": ps[t]})
        return pd.DataFrame(rows).sort_values("pscore", ascending=False).reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary."""

        eff = {m: json_safe(self.effects_table(m).to_dict("records")) for m in ("random", "fixed")}
        return {
            "treatments": self.treatments,
            "reference": self.reference,
            "n_studies": self.n_studies,
            "n_comparisons": self.n_comparisons,
            "n_multiarm_studies": self.n_multiarm,
            "method_tau": self.method_tau,
            "tau2": self.tau2,
            "tau": math.sqrt(self.tau2),
            "Q": self.Q,
            "df": self.df,
            "pval_Q": self.pval_Q,
            "I2": self.I2,
            "design_by_treatment": self.design_Q,
            "larger_is_better": self.larger_is_better,
            "pscore_random": self.pscore_random,
            "pscore_fixed": self.pscore_fixed,
            "effects_vs_reference": eff,
            "level": self.level,
        }


# --------------------------------------------------------------------------- building


def _arm_variances(st: _Study) -> dict[str, float]:
    """Split contrast variances into arm variances ``v_ab = s_a + s_b``.

    Uses the contrasts alone when they identify every arm's variance (e.g. all pairs
    of a three-arm study); otherwise adds the known variance of the shared arm.
    """
    arms = st.arms
    idx = {a: i for i, a in enumerate(arms)}
    rows, rhs = [], []
    for a, b, _, v in st.pairs:
        r = np.zeros(len(arms))
        r[idx[a]] = r[idx[b]] = 1.0
        rows.append(r)
        rhs.append(v)
    if np.linalg.matrix_rank(np.array(rows)) < len(arms):
        for arm, s in st.shared_var.items():
            r = np.zeros(len(arms))
            r[idx[arm]] = 1.0
            rows.append(r)
            rhs.append(s)
    A, bvec = np.array(rows), np.array(rhs)
    if np.linalg.matrix_rank(A) < len(arms):
        raise BrainmatchInputError(
            f"study {st.name!r}: {len(arms)} arms but the given comparisons cannot separate "
            "the shared arm's variance; give all pairwise comparisons of the study, or the "
            "shared control group's size (--n-control COL)"
        )
    s, *_ = np.linalg.lstsq(A, bvec, rcond=None)
    floor = 1e-6 * float(np.max(bvec))
    return {a: max(float(s[idx[a]]), floor) for a in arms}


#: netmeta's ``tol.multi``: contrasts of one multi-arm study must agree to this tolerance.
TOL_MULTI = 0.001


def _check_multiarm(st: _Study, tol: float) -> str | None:
    """Refuse a multi-arm study whose contrasts contradict each other (as netmeta does).

    Every arm's effect against the root arm follows from the spanning tree; each given
    contrast must equal the difference of its two arms' effects within netmeta's
    ``tol.multi`` of 0.001.  (Variances may legitimately disagree, e.g. Hedges' g
    variances depend on g; they are reconciled by least squares in ``_arm_variances``.)
    """
    chosen, root = st.tree
    if len(st.pairs) < len(st.arms):
        return None  # a tree: nothing to contradict
    to_root = {root: 0.0}
    parent = {a: (b, y) for a, b, y in chosen}  # y = a - b, b nearer the root
    for arm in st.arms:
        path, node, total = [], arm, 0.0
        while node not in to_root:
            nxt, y = parent[node]
            path.append(node)
            total += y
            node = nxt
        base = to_root[node]
        acc = total
        for nd in path:  # memoise every arm on the path
            to_root[nd] = base + acc
            acc -= parent[nd][1]
    for a, b, y, _ in st.pairs:
        implied = to_root[a] - to_root[b]
        if abs(y - implied) > tol:
            return (
                f"study {st.name!r}: inconsistent treatment effects in a multi-arm study "
                f"({st.treat[a]} vs {st.treat[b]} is {y:.4g}, but its other comparisons imply "
                f"{implied:.4g}; they must agree within {tol}, as netmeta requires)"
            )
    return None


def _prepare(st: _Study) -> None:
    """Choose basis contrasts (a spanning tree of the given pairs) and their covariance."""
    if len(st.pairs) == 1:
        a, b, y, v = st.pairs[0]
        st.basis, st.y, st.S = [(a, b)], np.array([y]), np.array([[v]])
        return
    svar = _arm_variances(st)
    deg: dict[str, int] = defaultdict(int)
    for a, b, _, _ in st.pairs:
        deg[a] += 1
        deg[b] += 1
    root = max(st.arms, key=lambda x: (deg[x], x))
    seen, frontier = {root}, [root]
    chosen: list[tuple[str, str, float]] = []
    while frontier:
        nxt = []
        for node in frontier:
            for a, b, y, _ in st.pairs:
                if a == node and b not in seen:
                    chosen.append((b, a, -y))
                    seen.add(b)
                    nxt.append(b)
                elif b == node and a not in seen:
                    chosen.append((a, b, y))
                    seen.add(a)
                    nxt.append(a)
        frontier = nxt
    if len(seen) != len(st.arms):
        raise BrainmatchInputError(f"study {st.name!r}: its comparisons do not connect all arms")
    st.basis = [(a, b) for a, b, _ in chosen]
    st.y = np.array([y for _, _, y in chosen])
    st.tree = (chosen, root)
    n = len(chosen)
    S = np.zeros((n, n))
    for i, (a1, b1) in enumerate(st.basis):
        for j, (a2, b2) in enumerate(st.basis):
            S[i, j] = (
                svar[a1] * (a1 == a2)
                - svar[a1] * (a1 == b2)
                - svar[b1] * (b1 == a2)
                + svar[b1] * (b1 == b2)
            )
    st.S = S


def _u_block(basis: list[tuple[str, str]]) -> FloatArray:
    n = len(basis)
    U = np.zeros((n, n))
    for i, (a1, b1) in enumerate(basis):
        for j, (a2, b2) in enumerate(basis):
            U[i, j] = 0.5 * ((a1 == a2) - (a1 == b2) - (b1 == a2) + (b1 == b2))
    return U


def _gls(y: FloatArray, X: FloatArray, V: FloatArray) -> tuple[FloatArray, FloatArray, float]:
    W = np.linalg.inv(V)
    XtW = X.T @ W
    cov: FloatArray = np.asarray(np.linalg.pinv(XtW @ X), dtype=np.float64)
    d = cov @ (XtW @ y)
    r = y - X @ d
    return d, cov, float(r @ W @ r)


def _connected(treatments: list[str], edges: set[tuple[str, str]]) -> list[set[str]]:
    parent = {t: t for t in treatments}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    comps: dict[str, set[str]] = defaultdict(set)
    for t in treatments:
        comps[find(t)].add(t)
    return list(comps.values())


def pscores(
    d: FloatArray, cov: FloatArray, treatments: list[str], larger_is_better: bool = True
) -> dict[str, float]:
    """P-scores (Rücker & Schwarzer 2015): mean certainty that a treatment beats each other.

    Parameters
    ----------
    d, cov : ndarray
        Effects versus the reference and their covariance.
    treatments : list of str
        Names, aligned with ``d``.
    larger_is_better : bool
        Orientation of the effect scale.

    Returns
    -------
    dict
        P-score in [0, 1] per treatment.
    """
    n = len(treatments)
    sign = 1.0 if larger_is_better else -1.0
    out = {}
    for i in range(n):
        acc = 0.0
        for j in range(n):
            if i == j:
                continue
            var = cov[i, i] + cov[j, j] - 2 * cov[i, j]
            se = math.sqrt(max(var, 1e-300))
            acc += float(stats.norm.cdf(sign * (d[i] - d[j]) / se))
        out[treatments[i]] = acc / (n - 1)
    return out


def network_meta_analysis(
    contrasts: pd.DataFrame,
    *,
    study: str = "study",
    treat1: str = "treat1",
    treat2: str = "treat2",
    effect: str = "TE",
    se: str | None = "seTE",
    variance: str | None = None,
    arm1: str | None = None,
    arm2: str | None = None,
    n_control: str | None = None,
    reference: str | None = None,
    method_tau: str = "DL",
    larger_is_better: bool = True,
    level: float = 0.95,
    tol_multi: float | None = 0.001,
) -> NMAResult:
    """Fit a frequentist random-effects network meta-analysis.

    Parameters
    ----------
    contrasts : DataFrame
        One row per pairwise comparison: ``effect`` is treatment 1 minus treatment 2.
    study, treat1, treat2, effect : str
        Column names.
    se, variance : str, optional
        Column with the standard error (or, if ``variance`` is given, the variance).
    arm1, arm2 : str, optional
        Columns identifying the arms within a study when one study has two arms of
        the same treatment (default: the treatment names).
    n_control : str, optional
        Size of arm 2, used for multi-arm studies that report only comparisons
        against a shared arm 2 (its variance share is taken as ``1 / n``).
    reference : str, optional
        Reference treatment (default: the most connected one).
    method_tau : {"DL", "REML"}
        tau^2 estimator.
    larger_is_better : bool
        Orientation for P-scores and the league table ordering.
    level : float
        Confidence level.
    tol_multi : float or None
        Contrasts of one multi-arm study must be consistent (``A-C = (A-B) + (B-C)``)
        within this tolerance, as in netmeta (0.001); a study that is not is refused,
        naming it.  None: accept it, use the contrasts of a spanning tree of its arms and
        list it in ``multiarm_inconsistent`` (for standardised effects such as Hedges' g,
        whose contrasts are not exactly additive).

    Returns
    -------
    NMAResult
    """
    method_tau = method_tau.upper()
    if method_tau not in ("DL", "REML"):
        raise BrainmatchInputError("NMA --method must be DL or REML")
    need = [study, treat1, treat2, effect] + [c for c in (se, variance) if c]
    missing = [c for c in need if c not in contrasts.columns]
    if missing:
        raise BrainmatchInputError(
            f"missing column(s) {', '.join(repr(m) for m in missing)}; the table has: "
            + ", ".join(map(str, contrasts.columns[:30]))
        )
    df = contrasts.copy()
    y = pd.to_numeric(df[effect], errors="coerce").to_numpy(dtype=float)
    if variance:
        v = pd.to_numeric(df[variance], errors="coerce").to_numpy(dtype=float)
    elif se:
        sev = pd.to_numeric(df[se], errors="coerce").to_numpy(dtype=float)
        if np.any(sev <= 0):
            i = int(np.flatnonzero(sev <= 0)[0])
            raise BrainmatchInputError(
                f"column {se!r} row {i + 2}: standard error {sev[i]:g}: standard errors must "
                "be positive"
            )
        v = sev**2
    else:
        raise BrainmatchInputError("give a standard-error or variance column")
    if not np.all(np.isfinite(y)):
        i = int(np.flatnonzero(~np.isfinite(y))[0])
        raise BrainmatchInputError(f"column {effect!r} row {i + 2} is not a number")
    if np.any(np.abs(y) > 1e12):
        i = int(np.flatnonzero(np.abs(y) > 1e12)[0])
        raise BrainmatchInputError(
            f"column {effect!r} row {i + 2}: effect {y[i]:.3g} is implausibly large"
        )
    ok_v = v[np.isfinite(v) & (v > 0)]
    if ok_v.size and (ok_v.max() > 1e100 or ok_v.max() / ok_v.min() > 1e12):
        i = int(np.argmin(np.where(np.isfinite(v) & (v > 0), v, np.inf)))
        raise BrainmatchInputError(
            f"row {i + 2}: standard error {math.sqrt(v[i]):.3g} is implausible next to the others "
            "(the variances span more than 1e12-fold, so weights would be dominated by rounding)"
        )
    if not np.all(np.isfinite(v) & (v > 0)):
        i = int(np.flatnonzero(~(np.isfinite(v) & (v > 0)))[0])
        raise BrainmatchInputError(
            f"row {i + 2}: sampling variances / standard errors must be positive numbers"
        )
    t1 = df[treat1].astype(str).str.strip().to_numpy()
    t2 = df[treat2].astype(str).str.strip().to_numpy()
    a1 = df[arm1].astype(str).to_numpy() if arm1 else t1
    a2 = df[arm2].astype(str).to_numpy() if arm2 else t2
    nc = pd.to_numeric(df[n_control], errors="coerce").to_numpy(dtype=float) if n_control else None
    studies: dict[str, _Study] = {}
    for i, s in enumerate(df[study].astype(str).to_numpy()):
        st = studies.setdefault(s, _Study(name=s, arms=[], treat={}, pairs=[]))
        aid1, aid2 = f"{a1[i]}", f"{a2[i]}"
        if aid1 == aid2:
            raise BrainmatchInputError(f"study {s!r} row {i + 2}: an arm compared with itself")
        for aid, tr in ((aid1, t1[i]), (aid2, t2[i])):
            if aid not in st.treat:
                st.arms.append(aid)
                st.treat[aid] = tr
            elif st.treat[aid] != tr:
                raise BrainmatchInputError(
                    f"study {s!r}: arm {aid!r} is labelled both {st.treat[aid]!r} and {tr!r}"
                )
        if any({p[0], p[1]} == {aid1, aid2} for p in st.pairs):
            raise BrainmatchInputError(
                f"study {s!r}: the comparison {aid1} vs {aid2} appears twice "
                "(combine outcomes first)"
            )
        st.pairs.append((aid1, aid2, float(y[i]), float(v[i])))
        if nc is not None and np.isfinite(nc[i]) and nc[i] > 0:
            st.shared_var[aid2] = 1.0 / float(nc[i])
    inconsistent: list[str] = []
    for st in studies.values():
        _prepare(st)
        problem = _check_multiarm(st, TOL_MULTI if tol_multi is None else tol_multi)
        if problem and tol_multi is not None:
            raise BrainmatchInputError(problem)
        if problem:
            inconsistent.append(problem)
    treatments_all = sorted({t for st in studies.values() for t in st.treat.values()})
    if len(treatments_all) < 2:
        raise BrainmatchInputError("the network needs at least two treatments")
    edge_count: dict[tuple[str, str], int] = defaultdict(int)
    for st in studies.values():
        tr_pairs = set()
        for aa in range(len(st.arms)):
            for bb in range(aa + 1, len(st.arms)):
                ta, tb = sorted((st.treat[st.arms[aa]], st.treat[st.arms[bb]]))
                if ta != tb:
                    tr_pairs.add((ta, tb))
        for e in tr_pairs:
            edge_count[e] += 1
    comps = _connected(treatments_all, set(edge_count))
    if len(comps) > 1:
        parts = "; ".join(", ".join(sorted(c)) for c in comps)
        raise BrainmatchInputError(f"the network is disconnected: {parts}")
    degree: dict[str, int] = defaultdict(int)
    for (ta, tb), n in edge_count.items():
        degree[ta] += n
        degree[tb] += n
    ref = reference if reference is not None else max(treatments_all, key=lambda t: (degree[t], t))
    if ref not in treatments_all:
        raise BrainmatchInputError(
            f"reference {ref!r} is not in the network ({', '.join(treatments_all)})"
        )
    treatments = [ref] + [t for t in treatments_all if t != ref]
    col = {t: i - 1 for i, t in enumerate(treatments) if t != ref}
    ys, Xs, Ss, Us, designs = [], [], [], [], []
    for st in studies.values():
        X = np.zeros((len(st.basis), len(treatments) - 1))
        for r, (a, b) in enumerate(st.basis):
            ta, tb = st.treat[a], st.treat[b]
            if ta != ref:
                X[r, col[ta]] += 1
            if tb != ref:
                X[r, col[tb]] -= 1
        ys.append(st.y)
        Xs.append(X)
        Ss.append(st.S)
        Us.append(_u_block(st.basis))
        designs.append(":".join(sorted(set(st.treat.values()))))
    yv = np.concatenate(ys)
    Xm = np.vstack(Xs)
    from scipy.linalg import block_diag

    S = block_diag(*Ss)
    U = block_diag(*Us)
    n_obs, n_par = Xm.shape
    df_q = n_obs - n_par
    if df_q < 0:
        raise BrainmatchInputError("fewer comparisons than treatments")
    d_fe, cov_fe, Q = _gls(yv, Xm, S)
    W = np.linalg.inv(S)
    P = W - W @ Xm @ np.linalg.pinv(Xm.T @ W @ Xm) @ Xm.T @ W
    if df_q == 0:
        tau2 = 0.0
    elif method_tau == "DL":
        tau2 = max(0.0, (Q - df_q) / float(np.trace(P @ U)))
    else:
        tau2 = _reml_tau2(yv, Xm, S, U)
    d_re, cov_re, _ = _gls(yv, Xm, S + tau2 * U)
    pad = np.zeros(1)
    d_fixed = np.concatenate([pad, d_fe])
    d_random = np.concatenate([pad, d_re])
    cf = np.zeros((len(treatments), len(treatments)))
    cr = cf.copy()
    cf[1:, 1:] = cov_fe
    cr[1:, 1:] = cov_re
    # design-by-treatment interaction
    design_Q = _design_by_treatment(ys, Xs, Ss, Us, designs, studies, treatments, Q, df_q)
    edges = pd.DataFrame(
        [{"treat1": a, "treat2": b, "n_studies": n} for (a, b), n in sorted(edge_count.items())]
    )
    return NMAResult(
        treatments=treatments,
        reference=ref,
        d_fixed=d_fixed,
        d_random=d_random,
        cov_fixed=cf,
        cov_random=cr,
        tau2=float(tau2),
        Q=float(Q),
        df=int(df_q),
        pval_Q=float(stats.chi2.sf(Q, df_q)) if df_q > 0 else float("nan"),
        I2=float(max(0.0, (Q - df_q) / Q) * 100) if Q > 0 and df_q > 0 else 0.0,
        design_Q=design_Q,
        pscore_fixed=pscores(d_fixed, cf, treatments, larger_is_better),
        pscore_random=pscores(d_random, cr, treatments, larger_is_better),
        n_studies=len(studies),
        n_comparisons=len(edge_count),
        edges=edges,
        larger_is_better=larger_is_better,
        level=level,
        method_tau=method_tau,
        n_multiarm=sum(1 for st in studies.values() if len(st.arms) > 2),
        multiarm_inconsistent=inconsistent,
    )


def _reml_tau2(y: FloatArray, X: FloatArray, S: FloatArray, U: FloatArray) -> float:
    def negll(t: float) -> float:
        V = S + t * U
        logdet = float(np.linalg.slogdet(V)[1])
        W = np.linalg.inv(V)
        XtWX = X.T @ W @ X
        d = np.linalg.solve(XtWX, X.T @ W @ y)
        r = y - X @ d
        return 0.5 * (logdet + float(np.linalg.slogdet(XtWX)[1]) + float(r @ W @ r))

    scale = float(np.var(y)) + float(np.mean(np.diag(S)))
    grid = np.concatenate([[0.0], np.geomspace(1e-6 * scale, 10 * scale, 60)])
    vals = [negll(t) for t in grid]
    i = int(np.argmin(vals))
    if i == 0:
        lo, hi = 0.0, grid[1]
    else:
        lo, hi = grid[i - 1], grid[min(i + 1, len(grid) - 1)]
    res = optimize.minimize_scalar(
        negll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12 * max(scale, 1e-12)}
    )
    best = float(res.x)
    return 0.0 if negll(0.0) <= negll(best) else best


def _design_by_treatment(
    ys: list[FloatArray],
    Xs: list[FloatArray],
    Ss: list[FloatArray],
    Us: list[FloatArray],
    designs: list[str],
    studies: dict[str, _Study],
    treatments: list[str],
    Q: float,
    df_q: int,
) -> dict[str, Any]:
    """Split Q into within-design heterogeneity and between-design inconsistency."""
    from scipy.linalg import block_diag

    # interaction model: each design has its own treatment effects
    blocks: dict[str, list[int]] = defaultdict(list)
    for i, dsg in enumerate(designs):
        blocks[dsg].append(i)
    n_rows = sum(len(y) for y in ys)
    cols: list[FloatArray] = []
    order: list[int] = []
    for idxs in blocks.values():
        order.extend(idxs)
    row_start = {}
    pos = 0
    for i in order:
        row_start[i] = pos
        pos += len(ys[i])
    for idxs in blocks.values():
        Xd = np.zeros((n_rows, Xs[0].shape[1]))
        for i in idxs:
            Xd[row_start[i] : row_start[i] + len(ys[i])] = Xs[i]
        keep = np.abs(Xd).sum(axis=0) > 0
        cols.append(Xd[:, keep])
    Xint = np.hstack(cols) if cols else np.zeros((n_rows, 0))
    y = np.concatenate([ys[i] for i in order])
    Xc = np.vstack([Xs[i] for i in order])
    S = block_diag(*[Ss[i] for i in order])
    U = block_diag(*[Us[i] for i in order])
    rank_int = int(np.linalg.matrix_rank(Xint)) if Xint.size else 0
    rank_c = int(np.linalg.matrix_rank(Xc))
    df_het = n_rows - rank_int
    df_inc = rank_int - rank_c

    def qstat(X: FloatArray, V: FloatArray) -> float:
        W = np.linalg.inv(V)
        if X.size == 0:
            return float(y @ W @ y)
        d = np.linalg.pinv(X.T @ W @ X) @ (X.T @ W @ y)
        r = y - X @ d
        return float(r @ W @ r)

    q_het = qstat(Xint, S)
    q_inc = Q - q_het
    # netmeta's decomp.design: the random-effects between-design Q uses tau^2 estimated
    # (generalised DerSimonian-Laird) in the full design-by-treatment interaction model,
    # netmeta's ``tau.within``, not the consistency model's tau^2
    W0 = np.linalg.inv(S)
    if Xint.size:
        P = W0 - W0 @ Xint @ np.linalg.pinv(Xint.T @ W0 @ Xint) @ Xint.T @ W0
    else:
        P = W0
    trace = float(np.trace(P @ U))
    tau2_within = max(0.0, (q_het - df_het) / trace) if trace > 0 else 0.0
    Vr = S + tau2_within * U
    q_inc_r = qstat(Xc, Vr) - qstat(Xint, Vr)
    by_design = []
    for dsg, idxs in blocks.items():
        yy = np.concatenate([ys[i] for i in idxs])
        XX = np.vstack([Xs[i] for i in idxs])
        SS = block_diag(*[Ss[i] for i in idxs])
        keep = np.abs(XX).sum(axis=0) > 0
        XX = XX[:, keep]
        W = np.linalg.inv(SS)
        if XX.size:
            dd = np.linalg.pinv(XX.T @ W @ XX) @ (XX.T @ W @ yy)
            r = yy - XX @ dd
            rk = int(np.linalg.matrix_rank(XX))
        else:
            r, rk = yy, 0
        by_design.append(
            {"design": dsg, "n_studies": len(idxs), "Q": float(r @ W @ r), "df": len(yy) - rk}
        )

    def p(qv: float, dfv: int) -> float | None:
        return float(stats.chi2.sf(qv, dfv)) if dfv > 0 else None

    return {
        "Q_total": Q,
        "df_total": df_q,
        "Q_het": q_het,
        "df_het": df_het,
        "p_het": p(q_het, df_het),
        "Q_inc": q_inc,
        "df_inc": df_inc,
        "p_inc": p(q_inc, df_inc),
        "Q_inc_random": q_inc_r,
        "p_inc_random": p(q_inc_r, df_inc),
        "tau2_within": tau2_within,
        "within_designs": by_design,
    }
