"""How did each treatment change the brain?  Per-feature mixed models of pre/post scans.

For every feature the model is a linear mixed model with a random intercept per
participant (statsmodels ``MixedLM``, or brainmatch's exactly equal vectorised solver,
:mod:`brainmatch.change.mixed`)::

    y = sum_a arm_a (mu_a + sum_s session_s delta_as) + site + covariates + u_participant + e

so that ``delta_as`` is arm ``a``'s mean change from baseline to session ``s`` and the
arm-by-time interaction is ``delta_as - delta_bs``.  Participants who missed a follow-up
scan keep their baseline row (it informs the baseline means and variances; the mixed model
uses every scan, as an intention-to-treat analysis of the scans would).

Multiple comparisons:

- false discovery rate (Benjamini-Hochberg) across features, for each arm's change, each
  contrast and the omnibus interaction;
- family-wise error for the whole-brain claim by permuting arm labels between participants
  (within site, as randomisation was blocked by site) and taking, per permutation, the
  largest interaction statistic over all features (Nichols & Holmes 2002).  The
  permutation statistic is the interaction Wald chi-square at each feature's variance
  ratio estimated under the null model (no arm terms), which does not depend on the arm
  labels; fixed effects and scale are re-estimated for every permutation.

Circuits (the affect network and its prefrontal-control and limbic-reactivity parts) are
analysed the same way on circuit scores: the mean over the circuit's regions of each
region feature, each standardised by its baseline SD.  Brain change is correlated with
symptom change per arm (partial Pearson correlation given site): a correlational result,
not evidence that the brain change caused the improvement.
"""

from __future__ import annotations

import html
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats

from brainmatch._io import json_safe
from brainmatch.change.data import ID, ChangeData, load_change_data
from brainmatch.change.mixed import (
    RandomInterceptFit,
    _YPart,
    fit_random_intercept,
    missing_patterns,
    wald_at,
)
from brainmatch.change.regions import (
    REGION_MEASURES,
    atlas_for,
    circuit_membership,
    describe_features,
)
from brainmatch.errors import BrainmatchInputError

ENGINES = ("fast", "statsmodels")

REFERENCES = {
    "mixedlm": "Seabold S, Perktold J (2010). statsmodels: Econometric and statistical modeling "
    "with Python. Proc 9th Python in Science Conference.",
    "lme4": "Bates D, Mächler M, Bolker B, Walker S (2015). Fitting linear mixed-effects models "
    "using lme4. Journal of Statistical Software 67(1):1-48.",
    "bh": "Benjamini Y, Hochberg Y (1995). Controlling the false discovery rate: a practical and "
    "powerful approach to multiple testing. J R Stat Soc B 57(1):289-300.",
    "maxt": "Nichols TE, Holmes AP (2002). Nonparametric permutation tests for functional "
    "neuroimaging: a primer with examples. Human Brain Mapping 15(1):1-25.",
    "nord": "Nord CL, Barrett LF, Lindquist KA, et al. (2021). Neural effects of antidepressant "
    "medication and psychological treatments: a quantitative synthesis across three "
    "meta-analyses. Br J Psychiatry 219(4):546-550. doi:10.1192/bjp.2021.16",
}


# --------------------------------------------------------------------------- helpers


def _bh(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def _arm_classes(arms: list[str]) -> dict[str, str]:
    from brainmatch.simulate.arms import make_arms, n_other

    made = make_arms(arms, [(0.0, 0.0)] * n_other(arms))
    return {a.name: a.klass for a in made}


def default_contrast(arms: list[str]) -> tuple[str, str] | None:
    """Therapy minus medication when the arm names say which is which, else the two arms."""
    classes = _arm_classes(arms)
    therapy = [a for a in arms if classes[a] in ("psychotherapy", "mindfulness")]
    meds = [a for a in arms if classes[a] == "medication"]
    if len(therapy) == 1 and len(meds) == 1:
        return therapy[0], meds[0]
    if len(arms) == 2:
        return arms[0], arms[1]
    return None


@dataclass
class _Design:
    X: NDArray[np.float64]
    X0: NDArray[np.float64]
    names: list[str]
    change_index: dict[tuple[str, str], int]  # (arm, session) -> column
    arm_rows: NDArray[np.intp]  # arm code of each row
    session_rows: NDArray[np.intp]  # session index of each row
    n_arm_cols: int

    def with_arms(
        self, arm_rows: NDArray[np.intp], n_arms: int, n_sessions: int
    ) -> NDArray[np.float64]:
        """The design with other arm labels (rows keep their sessions and covariates)."""
        X = self.X.copy()
        X[:, : self.n_arm_cols] = _arm_block(arm_rows, self.session_rows, n_arms, n_sessions)
        return X


def _arm_block(
    arm_rows: NDArray[np.intp], ses_rows: NDArray[np.intp], n_arms: int, n_sessions: int
) -> NDArray[np.float64]:
    n = arm_rows.size
    block = np.zeros((n, n_arms * n_sessions))
    block[np.arange(n), arm_rows] = 1.0  # arm baseline means
    follow = ses_rows > 0
    col = n_arms + arm_rows * (n_sessions - 1) + (ses_rows - 1)
    block[np.flatnonzero(follow), col[follow]] = 1.0
    return block


def _participant_block(
    rows: pd.DataFrame, site: bool, covariates: list[str]
) -> tuple[NDArray[np.float64], list[str]]:
    cols: list[NDArray[np.float64]] = []
    names: list[str] = []
    if site:
        levels = sorted(rows["site"].unique())
        for lev in levels[1:]:
            cols.append((rows["site"] == lev).to_numpy(dtype=float))
            names.append(f"site[{lev}]")
    for c in covariates:
        v = rows[c]
        num = pd.to_numeric(v, errors="coerce")
        if num.notna().all() and not pd.api.types.is_bool_dtype(v):
            x = num.to_numpy(dtype=float)
            cols.append(x - x.mean())
            names.append(c)
        else:
            levels = sorted(v.astype(str).unique())
            for lev in levels[1:]:
                cols.append((v.astype(str) == lev).to_numpy(dtype=float))
                names.append(f"{c}[{lev}]")
    if not cols:
        return np.zeros((len(rows), 0)), names
    return np.column_stack(cols), names


def build_design(data: ChangeData, site_fixed: bool = True) -> _Design:
    """Cell-means design: arm baselines, arm x session changes, site, covariates.

    ``site_fixed=False`` leaves site out (it is then a random effect of the model).
    """
    rows = data.rows
    arm_code = {a: i for i, a in enumerate(data.arms)}
    arm_rows = rows["arm"].map(arm_code).to_numpy(dtype=np.intp)
    ses_rows = rows["__t"].to_numpy(dtype=np.intp)
    k, s = len(data.arms), len(data.sessions)
    block = _arm_block(arm_rows, ses_rows, k, s)
    names = [f"arm[{a}]" for a in data.arms]
    change_index: dict[tuple[str, str], int] = {}
    for i, a in enumerate(data.arms):
        for j, ses in enumerate(data.sessions[1:]):
            change_index[(a, ses)] = k + i * (s - 1) + j
            names.append(f"arm[{a}]:session[{ses}]")
    extra, extra_names = _participant_block(
        rows, site_fixed and data.site_column is not None, data.covariates
    )
    X = np.column_stack([block, extra])
    null_time = np.column_stack(
        [np.ones(len(rows))] + [(ses_rows == j).astype(float) for j in range(1, s)]
    )
    X0 = np.column_stack([null_time, extra])
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise BrainmatchInputError(
            "the design is rank-deficient: a covariate is constant or duplicates site or arm "
            f"(design columns: {', '.join(names + extra_names)})"
        )
    return _Design(X, X0, names + extra_names, change_index, arm_rows, ses_rows, k * s)


def _interaction_L(design: _Design, arms: list[str], sessions: list[str]) -> NDArray[np.float64]:
    """Rows of L: (arm_a - arm_ref) change at each follow-up session, a != ref."""
    p = design.X.shape[1]
    rows = []
    for ses in sessions[1:]:
        ref = design.change_index[(arms[0], ses)]
        for a in arms[1:]:
            r = np.zeros(p)
            r[design.change_index[(a, ses)]] = 1.0
            r[ref] = -1.0
            rows.append(r)
    return np.array(rows)


def _fit_statsmodels(
    X: NDArray[np.float64], Y: NDArray[np.float64], groups: NDArray[Any], reml: bool
) -> RandomInterceptFit:
    """statsmodels ``MixedLM`` per feature (the reference engine; slow for many features)."""
    import warnings

    from statsmodels.regression.mixed_linear_model import MixedLM

    n_out, p = Y.shape[1], X.shape[1]
    params = np.full((n_out, p), np.nan)
    cov = np.full((n_out, p, p), np.nan)
    scale, cov_re, llf = np.full(n_out, np.nan), np.full(n_out, np.nan), np.full(n_out, np.nan)
    n_obs = np.zeros(n_out, dtype=np.int64)
    n_groups = np.zeros(n_out, dtype=np.int64)
    for j in range(n_out):
        ok = np.isfinite(Y[:, j])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = MixedLM(Y[ok, j], X[ok], groups[ok]).fit(reml=reml)
            except Exception:
                continue
        params[j] = res.fe_params
        cov[j] = np.asarray(res.cov_params())[:p, :p]
        scale[j], cov_re[j], llf[j] = res.scale, float(np.asarray(res.cov_re)[0, 0]), res.llf
        n_obs[j], n_groups[j] = int(ok.sum()), len(np.unique(groups[ok]))
    return RandomInterceptFit(params, cov, scale, cov_re, llf, n_obs, n_groups, reml)


def _fit_statsmodels_nested(
    X: NDArray[np.float64],
    Y: NDArray[np.float64],
    groups: NDArray[Any],
    sites: NDArray[Any],
    reml: bool,
) -> tuple[RandomInterceptFit, NDArray[np.float64]]:
    """statsmodels ``MixedLM`` per feature with random site and participant-in-site intercepts.

    Returns the fit (``cov_re`` = participant variance) and the site variances.
    """
    import warnings

    from statsmodels.regression.mixed_linear_model import MixedLM

    n_out, p = Y.shape[1], X.shape[1]
    params = np.full((n_out, p), np.nan)
    cov = np.full((n_out, p, p), np.nan)
    scale, cov_re, llf = np.full(n_out, np.nan), np.full(n_out, np.nan), np.full(n_out, np.nan)
    site_var = np.full(n_out, np.nan)
    n_obs = np.zeros(n_out, dtype=np.int64)
    n_groups = np.zeros(n_out, dtype=np.int64)
    for j in range(n_out):
        ok = np.isfinite(Y[:, j])
        g, sit = groups[ok], sites[ok]
        # participants within site: one variance component, an indicator column each
        vc = {}
        for s_ in np.unique(sit):
            in_s = g[sit == s_]
            ids = np.unique(in_s)
            vc[s_] = (in_s[:, None] == ids[None, :]).astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                order = np.argsort(sit, kind="stable")
                res = MixedLM(
                    Y[ok, j][order],
                    X[ok][order],
                    sit[order],
                    exog_re=np.ones((int(ok.sum()), 1)),
                    exog_vc={"participant": vc},
                ).fit(reml=reml)
            except Exception:
                continue
        params[j] = res.fe_params
        cov[j] = np.asarray(res.cov_params())[:p, :p]
        scale[j], llf[j] = res.scale, res.llf
        site_var[j] = float(np.asarray(res.cov_re)[0, 0])
        cov_re[j] = float(np.asarray(res.vcomp)[0])
        n_obs[j], n_groups[j] = int(ok.sum()), len(np.unique(g))
    return RandomInterceptFit(params, cov, scale, cov_re, llf, n_obs, n_groups, reml), site_var


def _permute_within(blocks: NDArray[np.intp], rng: np.random.Generator) -> NDArray[np.intp]:
    """A permutation of participants that keeps each one within its block (site)."""
    perm = np.arange(blocks.size)
    for b in np.unique(blocks):
        idx = np.flatnonzero(blocks == b)
        perm[idx] = idx[rng.permutation(idx.size)]
    return perm


def _permutation_fwe(
    design: _Design,
    Y: NDArray[np.float64],
    pids: NDArray[np.intp],
    part_arm: NDArray[np.intp],
    part_block: NDArray[np.intp],
    L: NDArray[np.float64],
    n_arms: int,
    n_sessions: int,
    n_permutations: int,
    seed: int,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Observed fixed-gamma statistics, the max-statistic null and per-feature FWE p."""
    null = fit_random_intercept(design.X0, Y, pids, reml=True)
    gamma0 = np.nan_to_num(null.gamma, nan=0.0)
    groups = []
    for rows, cols in missing_patterns(Y):
        if rows.sum() <= design.X.shape[1]:
            continue
        _, codes = np.unique(pids[rows], return_inverse=True)
        groups.append((rows, cols, _YPart(Y[np.ix_(rows, cols)], codes)))

    def stat(arm_rows: NDArray[np.intp]) -> NDArray[np.float64]:
        X = design.with_arms(arm_rows, n_arms, n_sessions)
        out = np.full(Y.shape[1], np.nan)
        for rows, cols, ypart in groups:
            Xk = X[rows]
            if np.linalg.matrix_rank(Xk) < Xk.shape[1]:
                continue
            out[cols] = wald_at(Xk, ypart, gamma0[cols], L)
        return out

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    maxima = np.empty(n_permutations)
    with threadpool_limits(1):  # many small products: threads only add overhead
        observed = stat(design.arm_rows)
        for b in range(n_permutations):
            perm = _permute_within(part_block, rng)
            arm_rows = part_arm[perm][pids]
            maxima[b] = np.nanmax(stat(arm_rows), initial=0.0)
    sorted_max = np.sort(maxima)
    exceed = sorted_max.size - np.searchsorted(sorted_max, observed, side="left")
    p_fwe = (1.0 + exceed) / (1.0 + n_permutations)
    p_fwe[~np.isfinite(observed)] = np.nan
    return observed, maxima, p_fwe


def _abs_t(
    total: NDArray[np.float64], n: NDArray[np.float64], ss: NDArray[np.float64]
) -> NDArray[np.float64]:
    """|one-sample t| from the sum, count and sum of squares of paired differences."""
    mean = total / n
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (ss - n * mean**2) / (n - 1)
        return np.asarray(np.abs(mean) / np.sqrt(np.maximum(var, 1e-300) / n))


def _signflip_fwe(
    data: ChangeData, n_permutations: int, seed: int
) -> dict[tuple[str, str], NDArray[np.float64]]:
    """FWE p-values of each arm's change by sign-flipping paired differences (max |t|).

    Under the null of no change within an arm (and symmetric errors) each participant's
    follow-up-minus-baseline difference is as likely to have either sign; site and
    covariates cancel in the difference.  The statistic is the one-sample t of the
    differences; flipping signs leaves the sum of squares unchanged, so every permutation
    costs one matrix product.
    """
    rows = data.rows
    pid = rows[ID].to_numpy()
    t = rows["__t"].to_numpy()
    base = pd.Series(np.flatnonzero(t == 0), index=pid[t == 0])
    rng = np.random.default_rng([seed, 7])
    out: dict[tuple[str, str], NDArray[np.float64]] = {}
    for j, ses in enumerate(data.sessions[1:], start=1):
        fol = pd.Series(np.flatnonzero(t == j), index=pid[t == j])
        both = base.index.intersection(fol.index)
        arm_of = data.participants.set_index(ID).loc[both, "arm"].to_numpy()
        D_all = data.Y[fol.loc[both].to_numpy()] - data.Y[base.loc[both].to_numpy()]
        for arm in data.arms:
            D = D_all[arm_of == arm]
            if D.shape[0] < 3:
                continue
            ok = np.isfinite(D)
            n = ok.sum(axis=0).astype(float)
            Dz = np.where(ok, D, 0.0)
            ss = np.einsum("nf,nf->f", Dz, Dz)

            observed = _abs_t(Dz.sum(axis=0), n, ss)
            observed[n < 3] = np.nan
            maxima = np.empty(n_permutations)
            for b0 in range(0, n_permutations, 100):
                flips = rng.choice([-1.0, 1.0], size=(min(100, n_permutations - b0), D.shape[0]))
                stats_b = np.stack([_abs_t(f @ Dz, n, ss) for f in flips])
                stats_b[:, n < 3] = np.nan
                maxima[b0 : b0 + len(flips)] = np.nanmax(stats_b, axis=1)
            srt = np.sort(maxima)
            exceed = srt.size - np.searchsorted(srt, observed, side="left")
            pf = np.asarray((1.0 + exceed) / (1.0 + n_permutations), dtype=np.float64)
            pf[~np.isfinite(observed)] = np.nan
            out[(arm, ses)] = pf
    return out


# --------------------------------------------------------------------------- result


@dataclass
class ChangeResult:
    """Outcome of a change analysis (what ``brainmatch change`` writes).

    Attributes
    ----------
    table : DataFrame
        ``change.tsv``: one row per feature and effect -- ``change`` (an arm's mean change
        from baseline to a session, with CI), ``contrast`` (one arm's change minus
        another's: the arm-by-time interaction) and ``interaction`` (omnibus Wald test of
        equal change in every arm, with FDR and permutation FWE p).
    circuits : DataFrame
        The same for circuit scores (affect network and its parts).
    association : DataFrame
        Per arm and feature (and circuit): partial correlation of brain change with
        symptom change given site.
    model : DataFrame
        Per feature: variance components, log-likelihood and sample sizes.
    params : dict
        Options, counts and what was found (JSON-ready).
    notes : list of str
    excluded : dict of str to str
    description : str
        Methods paragraph.
    null_maxima : ndarray
        Permutation distribution of the largest interaction statistic.
    atlas : Atlas or None
        The atlas the features came from (for figures; not saved).
    """

    table: pd.DataFrame
    circuits: pd.DataFrame
    association: pd.DataFrame
    model: pd.DataFrame
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    description: str = ""
    null_maxima: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    atlas: Any = None
    circuit_members: dict[str, list[str]] = field(default_factory=dict)

    def interaction(self) -> pd.DataFrame:
        """The omnibus arm-by-time rows of :attr:`table`, most significant first."""
        t = self.table[self.table["effect"] == "interaction"]
        return t.sort_values("p").reset_index(drop=True)

    def significant(self, effect: str = "interaction", by: str = "p_fwe") -> pd.DataFrame:
        """Rows of ``effect`` with ``by`` (``p_fwe`` or ``p_fdr``) below ``alpha``."""
        t = self.table[self.table["effect"] == effect]
        return t[t[by] < self.params["alpha"]].reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``results.json``)."""

        def rows(df: pd.DataFrame) -> list[dict[str, Any]]:
            return df.replace({np.nan: None}).to_dict(orient="records")

        alpha = self.params["alpha"]
        sig = self.significant("interaction", "p_fwe")
        fdr = self.significant("interaction", "p_fdr")
        changes = {}
        for arm in self.params["arms"]:
            t = self.table[(self.table["effect"] == "change") & (self.table["arm"] == arm)]
            changes[arm] = rows(t[t["p_fdr"] < alpha].sort_values("p").head(50))
        return _json_safe(
            {
                **self.params,
                "n_significant_fwe": len(sig),
                "n_significant_fdr": len(fdr),
                "significant_fwe": rows(sig),
                "significant_fdr": rows(fdr.head(200)),
                "changes_fdr": changes,
                "circuits": rows(self.circuits),
                "circuit_members": self.circuit_members,
                "association_fdr": rows(
                    self.association[self.association["p_fdr"] < alpha].head(200)
                )
                if len(self.association)
                else [],
                "null_max_statistic_95th": float(np.quantile(self.null_maxima, 0.95))
                if self.null_maxima.size
                else None,
                "notes": list(self.notes),
                "excluded": self.excluded,
                "description": self.description,
                "references": list(REFERENCES.values()),
            }
        )

    def save(self, out_dir: str | Path) -> Path:
        """Write ``change.tsv``, ``circuits.tsv``, ``association.tsv``, ``model.tsv``,
        ``results.json`` and the glass-brain figure into ``out_dir`` (atomically).

        ``report.html`` is rendered from the result by
        :func:`brainmatch.reports.change.write_report` (``brainmatch change`` writes both).
        """
        from brainmatch.change.outputs import save_result

        return save_result(self, Path(out_dir))

    def _repr_html_(self) -> str:
        top = self.interaction().head(10)
        cells = "".join(
            f"<tr><td>{html.escape(str(r.feature))}</td><td>{r.stat:.2f}</td>"
            f"<td>{r.p:.2g}</td><td>{r.p_fdr:.2g}</td><td>{r.p_fwe:.2g}</td></tr>"
            for r in top.itertuples()
        )
        return (
            f"<p><b>brainmatch change</b>: {self.params['n_features']} features, "
            f"{self.params['n_participants']} participants, arms "
            f"{html.escape(', '.join(self.params['arms']))}; "
            f"{len(self.significant())} feature(s) with an arm-by-time interaction at FWE "
            f"p &lt; {self.params['alpha']}.</p><table><tr><th>feature</th><th>chi2</th>"
            f"<th>p</th><th>p FDR</th><th>p FWE</th></tr>{cells}</table>"
        )


#: JSON-safe copy: the one cleaner, :func:`brainmatch._io.json_safe`.
_json_safe = json_safe


# --------------------------------------------------------------------------- analysis


def _effects_table(
    fit: RandomInterceptFit,
    design: _Design,
    data_arms: list[str],
    sessions: list[str],
    contrasts: list[tuple[str, str]],
    L: NDArray[np.float64],
    level: float,
    n_follow: dict[str, int],
) -> list[pd.DataFrame]:
    zq = float(stats.norm.isf((1 - level) / 2))
    frames = []

    def block(
        effect: str, label: str, ses: str, est: NDArray[np.float64], se: NDArray[np.float64], n: int
    ) -> pd.DataFrame:
        z = est / se
        p = 2 * stats.norm.sf(np.abs(z))
        return pd.DataFrame(
            {
                "effect": effect,
                "arm": label,
                "session": ses,
                "estimate": est,
                "se": se,
                "ci_low": est - zq * se,
                "ci_high": est + zq * se,
                "stat": z,
                "df": 1,
                "p": p,
                "p_fdr": _bh(p),
                "n": n,
            }
        )

    for a in data_arms:
        for ses in sessions[1:]:
            c = np.zeros(design.X.shape[1])
            c[design.change_index[(a, ses)]] = 1.0
            est, se = fit.contrast(c)
            frames.append(block("change", a, ses, est, se, n_follow[a]))
    for a, b in contrasts:
        for ses in sessions[1:]:
            c = np.zeros(design.X.shape[1])
            c[design.change_index[(a, ses)]] = 1.0
            c[design.change_index[(b, ses)]] = -1.0
            est, se = fit.contrast(c)
            frames.append(block("contrast", f"{a} - {b}", ses, est, se, n_follow[a] + n_follow[b]))
    chi2 = fit.wald(L)
    df = L.shape[0]
    p = stats.chi2.sf(chi2, df)
    frames.append(
        pd.DataFrame(
            {
                "effect": "interaction",
                "arm": " vs ".join(data_arms),
                "session": ",".join(sessions[1:]),
                "estimate": np.nan,
                "se": np.nan,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "stat": chi2,
                "df": df,
                "p": p,
                "p_fdr": _bh(p),
                "n": sum(n_follow.values()),
            }
        )
    )
    return frames


def _association(
    data: ChangeData, Y: NDArray[np.float64], names: list[str], level: float
) -> pd.DataFrame:
    """Partial correlation (given site) of brain change with symptom change, per arm."""
    if data.symptom is None:
        return pd.DataFrame()
    rows = data.rows
    last = len(data.sessions) - 1
    pid = rows[ID].to_numpy()
    t = rows["__t"].to_numpy()
    base_idx = pd.Series(np.flatnonzero(t == 0), index=pid[t == 0])
    post_mask = t == last
    post_idx = pd.Series(np.flatnonzero(post_mask), index=pid[post_mask])
    both = base_idx.index.intersection(post_idx.index)
    delta = Y[post_idx.loc[both].to_numpy()] - Y[base_idx.loc[both].to_numpy()]
    part = data.participants.set_index(ID).loc[both]
    symptom = part["__symptom_change"].to_numpy(dtype=float)
    zq = float(stats.norm.isf((1 - level) / 2))
    frames = []
    for arm in data.arms:
        sel = (part["arm"] == arm).to_numpy() & np.isfinite(symptom)
        if sel.sum() < 5:
            continue
        s = symptom[sel]
        D = delta[sel]
        cols = [np.ones(sel.sum())]
        if data.site_column is not None:
            levels = sorted(part.loc[sel, "site"].unique())
            cols += [(part.loc[sel, "site"] == lev).to_numpy(dtype=float) for lev in levels[1:]]
        Z = np.column_stack(cols)
        proj = Z @ np.linalg.pinv(Z)
        s_r = s - proj @ s
        r = np.full(D.shape[1], np.nan)
        n_ok = np.zeros(D.shape[1], dtype=int)
        for rows_ok, cidx in missing_patterns(D):
            if rows_ok.sum() < Z.shape[1] + 3:
                continue
            Zk = Z[rows_ok]
            pk = Zk @ np.linalg.pinv(Zk)
            sk = s[rows_ok] - pk @ s[rows_ok]
            Dk = D[np.ix_(rows_ok, cidx)]
            Dr = Dk - pk @ Dk
            num = sk @ Dr
            den = np.sqrt((sk @ sk) * np.einsum("nf,nf->f", Dr, Dr))
            with np.errstate(invalid="ignore", divide="ignore"):
                r[cidx] = num / den
            n_ok[cidx] = int(rows_ok.sum())
        del s_r
        dof = n_ok - Z.shape[1] - 1  # n - 2 - (sites - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            tstat = r * np.sqrt(dof / np.maximum(1 - r**2, 1e-300))
            p = 2 * stats.t.sf(np.abs(tstat), np.maximum(dof, 1))
            zr = np.arctanh(np.clip(r, -0.999999, 0.999999))
            half = zq / np.sqrt(np.maximum(n_ok - Z.shape[1] - 2, 1))
        p = np.where(dof > 0, p, np.nan)
        frames.append(
            pd.DataFrame(
                {
                    "feature": names,
                    "arm": arm,
                    "r": r,
                    "ci_low": np.tanh(zr - half),
                    "ci_high": np.tanh(zr + half),
                    "p": p,
                    "p_fdr": _bh(p),
                    "n": n_ok,
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _circuit_scores(
    data: ChangeData, info: pd.DataFrame, members: dict[str, list[str]]
) -> tuple[NDArray[np.float64], list[str]]:
    """Circuit scores: mean over member regions of baseline-SD-standardised region features."""
    base = data.rows["__t"].to_numpy() == 0
    cols, names = [], []
    for circuit, regions in members.items():
        for measure in REGION_MEASURES:
            sel = (info["measure"] == measure) & info["region"].isin(regions)
            idx = np.flatnonzero(sel.to_numpy())
            if idx.size == 0:
                continue
            Ysub = data.Y[:, idx]
            mu = np.nanmean(Ysub[base], axis=0)
            sd = np.nanstd(Ysub[base], axis=0, ddof=1)
            sd[~(sd > 0)] = np.nan
            with np.errstate(invalid="ignore"):
                z = (Ysub - mu) / sd
            cols.append(np.nanmean(z, axis=1) if np.isfinite(z).any() else np.full(len(z), np.nan))
            names.append(f"{measure}__{circuit}")
    if not cols:
        return np.zeros((len(data.rows), 0)), []
    return np.column_stack(cols), names


def analyse_change(
    features: str | Path | pd.DataFrame,
    outcomes: str | Path | pd.DataFrame | list[Any] | tuple[Any, ...],
    *,
    treatment_column: str = "arm",
    session_column: str = "session",
    sessions: list[str] | None = None,
    site_column: str | None = None,
    covariates: list[str] | tuple[str, ...] = (),
    outcome_column: str | None = None,
    baseline_column: str | None = None,
    measures: list[str] | tuple[str, ...] | None = None,
    contrast: tuple[str, str] | None = None,
    engine: str = "fast",
    site_effect: str = "fixed",
    reml: bool = True,
    n_permutations: int = 1000,
    alpha: float = 0.05,
    level: float = 0.95,
    atlas: str | None = None,
    seed: int = 0,
) -> ChangeResult:
    """Analyse brain change under treatment in a trial with pre/post scans.

    Parameters
    ----------
    features : path or DataFrame
        Long feature table (``participant_id``, ``session``, features), e.g.
        ``brainmatch extract``'s ``features.parquet`` of a dataset with ``ses-`` folders.
    outcomes : path, DataFrame or list of them
        Participant tables (arm, site, covariates, symptom scores) merged on
        ``participant_id``.
    treatment_column, session_column, site_column : str
        Column names; ``site_column=None`` for a single-site trial.
    sessions : list of str, optional
        Time points in order, baseline first (default inferred: ``pre`` then ``post``).
    covariates : sequence of str
        Participant-level adjustment columns.
    outcome_column, baseline_column : str, optional
        Symptom score after and before treatment, for the change-outcome association.
    measures : sequence of str, optional
        Feature families to analyse (``amp``, ``falff``, ``conn``, ...); default all.
        The FWE family is every feature analysed.
    contrast : (str, str), optional
        The arms of the primary contrast (first minus second).  Default: therapy minus
        medication when the arm names say which is which, else the two arms.
    engine : {"fast", "statsmodels"}
        brainmatch's vectorised solver or a statsmodels ``MixedLM`` loop (same estimates;
        the loop is the reference and is slow for thousands of features).
    site_effect : {"fixed", "random"}
        Site as fixed effects (default; permutations within site give FWE p-values) or as a
        random intercept with participants nested in sites (statsmodels engine only, one
        feature at a time; no permutation FWE).
    reml : bool
        REML (default, as statsmodels and lme4) or ML.
    n_permutations : int
        Permutations of arm labels for the FWE p-values (0 to skip).
    alpha : float
        Significance level for summaries and figures.
    level : float
        Confidence level of the intervals.
    atlas : str, optional
        Atlas name or labels image, when the feature table's ``features.json`` does not
        name a loadable one (region names and figures come from it).
    seed : int
        Seed of the permutations.

    Returns
    -------
    ChangeResult
    """
    start = time.perf_counter()
    if engine not in ENGINES:
        raise BrainmatchInputError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    if site_effect not in ("fixed", "random"):
        raise BrainmatchInputError(f"--site-effect {site_effect!r}: use fixed or random")
    if site_effect == "random":
        if site_column is None:
            raise BrainmatchInputError("--site-effect random needs --site-column")
        if engine != "statsmodels":
            raise BrainmatchInputError(
                "--site-effect random: use --engine statsmodels (brainmatch's fast solver "
                "fits a random intercept per participant, with site as fixed effects)"
            )
    if n_permutations < 0 or (0 < n_permutations < 19):
        raise BrainmatchInputError(
            f"--permutations {n_permutations}: use 0 (no FWE) or at least 19 (p >= 0.05 resolution)"
        )
    if not (0 < alpha < 1):
        raise BrainmatchInputError(f"--alpha {alpha}: must be between 0 and 1")
    if not (0 < level < 1):
        raise BrainmatchInputError(f"--level {level}: must be between 0 and 1")
    data = load_change_data(
        features,
        outcomes,
        treatment_column=treatment_column,
        session_column=session_column,
        sessions=sessions,
        site_column=site_column,
        covariates=covariates,
        outcome_column=outcome_column,
        baseline_column=baseline_column,
        measures=measures,
    )
    if contrast is not None:
        unknown = [a for a in contrast if a not in data.arms]
        if unknown or len(contrast) != 2 or contrast[0] == contrast[1]:
            raise BrainmatchInputError(
                f"--contrast {'-'.join(contrast)}: give two different arms of "
                f"{', '.join(data.arms)} (e.g. {data.arms[0]}-{data.arms[1]})"
            )
        primary: tuple[str, str] | None = (contrast[0], contrast[1])
    else:
        primary = default_contrast(data.arms)
    pairs = list(itertools.combinations(data.arms, 2))
    contrasts = [primary] if primary else []
    contrasts += [p for p in pairs if primary is None or set(p) != set(primary)]

    design = build_design(data, site_fixed=site_effect == "fixed")
    L = _interaction_L(design, data.arms, data.sessions)
    pid_codes = pd.factorize(data.rows[ID])[0].astype(np.intp)
    atlas_obj = atlas_for(data.metadata, atlas)
    info = describe_features(data.features, atlas_obj)
    regions = sorted({r for r in info["region"] if r} | {r for r in info["region_2"] if r})
    members = circuit_membership(atlas_obj, regions)
    Yc, circuit_names = _circuit_scores(data, info, members)

    site_var: NDArray[np.float64] | None = None
    if site_effect == "random":
        site_rows = data.rows["site"].to_numpy()

        def fitter(X: Any, Y: Any, groups: Any, reml: bool) -> RandomInterceptFit:
            nonlocal site_var
            fit_, sv = _fit_statsmodels_nested(X, Y, groups, site_rows, reml)
            if site_var is None:
                site_var = sv
            return fit_

        if n_permutations:
            data.notes.append(
                "no permutation FWE with --site-effect random (use fixed site effects for "
                "the whole-brain FWE claim)"
            )
            n_permutations = 0
    else:
        fitter = fit_random_intercept if engine == "fast" else _fit_statsmodels  # type: ignore[assignment]
    t0 = time.perf_counter()
    fit = fitter(design.X, data.Y, pid_codes, reml=reml)
    fit_seconds = time.perf_counter() - t0
    follow = data.rows[data.rows["__t"] > 0]
    n_follow = {a: int(follow.loc[follow["arm"] == a, ID].nunique()) for a in data.arms}
    frames = _effects_table(fit, design, data.arms, data.sessions, contrasts, L, level, n_follow)
    table = pd.concat(
        [info.merge(f.assign(feature=data.features), on="feature", how="right") for f in frames],
        ignore_index=True,
    )

    # permutation FWE over features (and, separately, over circuits)
    part = data.participants
    part_arm = part["arm"].map({a: i for i, a in enumerate(data.arms)}).to_numpy(dtype=np.intp)
    part_block = (
        pd.factorize(part["site"])[0].astype(np.intp)
        if data.site_column is not None
        else np.zeros(len(part), dtype=np.intp)
    )
    table["p_fwe"] = np.nan
    maxima = np.zeros(0)
    perm_seconds = 0.0
    if n_permutations:
        t0 = time.perf_counter()
        _, maxima, p_fwe = _permutation_fwe(
            design,
            data.Y,
            pid_codes,
            part_arm,
            part_block,
            L,
            len(data.arms),
            len(data.sessions),
            n_permutations,
            seed,
        )
        perm_seconds = time.perf_counter() - t0
        inter = table["effect"] == "interaction"
        table.loc[inter, "p_fwe"] = p_fwe
        if L.shape[0] == 1:  # two arms, one follow-up: the contrast is the interaction
            con = (table["effect"] == "contrast") & (table["arm"] == " - ".join(contrasts[0]))
            table.loc[con, "p_fwe"] = p_fwe
        # each arm's own change: sign-flip permutation of participants' paired differences
        for (arm, ses), pf in _signflip_fwe(data, n_permutations, seed).items():
            sel = (table["effect"] == "change") & (table["arm"] == arm) & (table["session"] == ses)
            table.loc[sel, "p_fwe"] = pf

    circuits = pd.DataFrame()
    if circuit_names:
        cfit = fitter(design.X, Yc, pid_codes, reml=reml)
        cframes = _effects_table(
            cfit, design, data.arms, data.sessions, contrasts, L, level, n_follow
        )
        circuits = pd.concat([f.assign(circuit=circuit_names) for f in cframes], ignore_index=True)
        circuits.insert(0, "measure", circuits.pop("circuit").str.split("__").str[0])
        circuits.insert(1, "circuit", [n.split("__", 1)[1] for n in circuit_names] * len(cframes))
        circuits["p_fwe"] = np.nan
        if n_permutations:
            _, _, cp = _permutation_fwe(
                design,
                Yc,
                pid_codes,
                part_arm,
                part_block,
                L,
                len(data.arms),
                len(data.sessions),
                n_permutations,
                seed,
            )
            circuits.loc[circuits["effect"] == "interaction", "p_fwe"] = cp
            if L.shape[0] == 1:
                con = (circuits["effect"] == "contrast") & (
                    circuits["arm"] == " - ".join(contrasts[0])
                )
                circuits.loc[con, "p_fwe"] = cp

    association = _association(data, data.Y, data.features, level)
    if len(association):
        association = info.merge(association, on="feature", how="right")
    if circuit_names and data.symptom is not None:
        cassoc = _association(data, Yc, circuit_names, level)
        if len(cassoc):
            cassoc.insert(1, "measure", cassoc["feature"].str.split("__").str[0])
            cassoc["region"] = cassoc["feature"].str.split("__").str[1]
            cassoc["region_2"] = ""
            cassoc["p_fdr"] = np.nan  # circuits form their own family
            for arm in cassoc["arm"].unique():
                m = cassoc["arm"] == arm
                cassoc.loc[m, "p_fdr"] = _bh(cassoc.loc[m, "p"].to_numpy())
            association = pd.concat(
                [association.assign(level="region"), cassoc.assign(level="circuit")],
                ignore_index=True,
            )

    model = info.assign(
        site_var=site_var if site_var is not None else np.nan,
        scale=fit.scale,
        cov_re=fit.cov_re,
        icc=fit.cov_re / (fit.cov_re + fit.scale),
        llf=fit.llf,
        n_obs=fit.n_obs,
        n_participants=fit.n_groups,
    )
    n_part = data.participants.groupby("arm")[ID].nunique().reindex(data.arms).to_dict()
    params: dict[str, Any] = {
        "arms": data.arms,
        "contrast": list(primary) if primary else None,
        "contrasts": [list(c) for c in contrasts],
        "arm_classes": _arm_classes(data.arms),
        "sessions": data.sessions,
        "n_participants": int(data.participants[ID].nunique()),
        "n_participants_per_arm": {k: int(v) for k, v in n_part.items()},
        "n_with_followup_per_arm": n_follow,
        "n_rows": len(data.rows),
        "n_features": len(data.features),
        "measures": sorted(info["measure"].unique().tolist()),
        "n_circuit_scores": len(circuit_names),
        "site_column": data.site_column,
        "n_sites": int(data.participants["site"].nunique()) if data.site_column else 1,
        "covariates": list(data.covariates),
        "symptom_change": (
            f"{outcome_column} - {baseline_column}" if baseline_column else outcome_column
        ),
        "engine": engine,
        "site_effect": site_effect if data.site_column else None,
        "reml": reml,
        "n_permutations": n_permutations,
        "permutation_blocks": "site" if data.site_column else "none",
        "alpha": alpha,
        "level": level,
        "seed": seed,
        "atlas": getattr(atlas_obj, "name", None),
        "design_columns": design.names,
        "sources": data.sources,
        "seconds": {
            "model_fit": round(fit_seconds, 3),
            "permutations": round(perm_seconds, 3),
            "total": round(time.perf_counter() - start, 3),
        },
    }
    result = ChangeResult(
        table=table,
        circuits=circuits,
        association=association,
        model=model,
        params=params,
        notes=list(data.notes),
        excluded=dict(data.excluded),
        null_maxima=maxima,
        atlas=atlas_obj,
        circuit_members=members,
    )
    result.description = methods_text(result)
    return result


def methods_text(result: ChangeResult) -> str:
    """The methods paragraph of a change analysis (numbers from ``result``)."""
    p = result.params
    arms = ", ".join(
        f"{a} (n = {p['n_participants_per_arm'][a]}, "
        f"{p['n_with_followup_per_arm'][a]} with a follow-up scan)"
        for a in p["arms"]
    )
    if not p["site_column"]:
        site = "no site term (single site)"
    elif p.get("site_effect") == "random":
        site = (
            f"site ({p['n_sites']} levels) as a random intercept with participants nested in sites"
        )
    else:
        site = f"site ({p['n_sites']} levels) as a fixed effect"
    cov = f", {', '.join(p['covariates'])}" if p["covariates"] else ""
    engine = (
        "brainmatch's vectorised solver, which equals statsmodels' MixedLM to optimiser precision"
        if p["engine"] == "fast"
        else "statsmodels' MixedLM, one feature at a time"
    )
    perm = (
        "Each arm's own change was FWE-controlled over features by sign-flipping its "
        "participants' follow-up-minus-baseline differences (maximum |t| over features). "
        if p["n_permutations"]
        else ""
    ) + (
        f"Family-wise error over all {p['n_features']} features was controlled by "
        f"{p['n_permutations']} permutations of arm labels between participants"
        f"{' within site' if p['site_column'] else ''}, comparing each feature's interaction "
        "statistic with the distribution of the largest statistic over features "
        "(Nichols & Holmes 2002); the permutation statistic is the Wald chi-square at each "
        "feature's variance ratio under the null model without arm terms. "
        if p["n_permutations"]
        else "No permutation test was run (family-wise error not controlled). "
    )
    assoc = (
        f"Brain change (last session minus baseline) was correlated with symptom change "
        f"({p['symptom_change']}) within each arm, partialling out site; this association is "
        "correlational and does not show that the brain change caused the improvement. "
        if p["symptom_change"]
        else ""
    )
    circ = (
        "Circuit scores (the affect network of Nord et al. 2021 and its prefrontal-control and "
        "limbic-reactivity parts; an atlas grey-matter region counts as inside when at least "
        "40 % of its voxels lie in the network's Harvard-Oxford regions) were the mean of the "
        "member "
        "regions' features standardised by their baseline SD, and were analysed in the same "
        "way as their own family. "
        if p["n_circuit_scores"]
        else ""
    )
    return (
        f"Brain change was analysed in {p['n_participants']} participants ({arms}) scanned at "
        f"{', '.join(p['sessions'])}. For each of {p['n_features']} features "
        f"({', '.join(p['measures'])}) a linear mixed model with a random intercept per "
        f"participant was fitted by {'REML' if p['reml'] else 'maximum likelihood'} "
        f"({engine}), with a mean per arm at baseline, each arm's change at each follow-up "
        f"session, {site}{cov}. Each arm's change is reported with a {p['level']:.0%} Wald "
        "confidence interval; the arm-by-time interaction was tested with a Wald chi-square "
        "test of equal change in every arm, and each pair of arms contrasted. P-values were "
        "adjusted for the false discovery rate across features (Benjamini & Hochberg 1995). "
        f"{perm}{circ}{assoc}"
    ).strip()
