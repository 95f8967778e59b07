"""End-to-end runs behind ``brainmatch meta`` and ``brainmatch nma``.

:func:`run_meta` and :func:`run_nma` read a table, fit, and write every output into
one folder (``results.json``, tables, SVG + PNG figures, ``report.html``).  Each file
is written atomically; a bad input raises :class:`~brainmatch.errors.BrainmatchInputError`
before anything is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from brainmatch import __version__
from brainmatch._io import write_json, write_text, write_tsv
from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence import meta as ma
from brainmatch.evidence import readers
from brainmatch.evidence.nma import NMAResult, network_meta_analysis
from brainmatch.evidence.schema import normalise_augmentation_table

CITATIONS = {
    "metafor": "Viechtbauer W (2010). Conducting meta-analyses in R with the metafor package. "
    "Journal of Statistical Software 36(3):1-48. doi:10.18637/jss.v036.i03",
    "REML": "Viechtbauer W (2005). Bias and efficiency of meta-analytic variance estimators in "
    "the random-effects model. J Educ Behav Stat 30(3):261-293.",
    "ML": "Viechtbauer W (2005). Bias and efficiency of meta-analytic variance estimators in "
    "the random-effects model. J Educ Behav Stat 30(3):261-293.",
    "DL": "DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Controlled Clinical "
    "Trials 7(3):177-188.",
    "PM": "Paule RC, Mandel J (1982). Consensus values and weighting factors. J Res Natl Bur "
    "Stand 87(5):377-385.",
    "HE": "Hedges LV, Olkin I (1985). Statistical Methods for Meta-Analysis. Academic Press.",
    "knha": "Knapp G, Hartung J (2003). Improved tests for a random effects meta-regression with "
    "a single covariate. Statistics in Medicine 22(17):2693-2710.",
    "qprofile": "Viechtbauer W (2007). Confidence intervals for the amount of heterogeneity in "
    "meta-analysis. Statistics in Medicine 26(1):37-52.",
    "I2": "Higgins JPT, Thompson SG (2002). Quantifying heterogeneity in a meta-analysis. "
    "Statistics in Medicine 21(11):1539-1558.",
    "PI": "Riley RD, Higgins JPT, Deeks JJ (2011). Interpretation of random effects "
    "meta-analyses. BMJ 342:d549.",
    "g": "Hedges LV (1981). Distribution theory for Glass's estimator of effect size and "
    "related estimators. Journal of Educational Statistics 6(2):107-128.",
    "egger": "Egger M, Davey Smith G, Schneider M, Minder C (1997). Bias in meta-analysis "
    "detected by a simple, graphical test. BMJ 315:629-634.",
    "trimfill": "Duval S, Tweedie R (2000). Trim and fill: a simple funnel-plot-based method of "
    "testing and adjusting for publication bias in meta-analysis. Biometrics "
    "56(2):455-463.",
    "cochrane": "Higgins JPT, Eldridge S, Li T (2023). Chapter 23: Including variants on "
    "randomized trials. Cochrane Handbook for Systematic Reviews of Interventions "
    "6.4, section 23.3.4.",
    "metapsy": "Cuijpers P, Miguel C, Harrer M, et al. Metapsy: psychotherapies for depression "
    "(data-depression-psyctr). doi:10.5281/zenodo.7254845",
    "netmeta": "Balduzzi S, Rücker G, Nikolakopoulou A, et al. (2023). netmeta: an R package for "
    "network meta-analysis using frequentist methods. Journal of Statistical "
    "Software 106(2):1-40.",
    "rucker": "Rücker G (2012). Network meta-analysis, electrical networks and graph theory. "
    "Research Synthesis Methods 3(4):312-324.",
    "pscore": "Rücker G, Schwarzer G (2015). Ranking treatments in frequentist network "
    "meta-analysis works without resampling methods. BMC Med Res Methodol 15:58.",
    "dbt": "Higgins JPT, Jackson D, Barrett JK, et al. (2012). Consistency and inconsistency in "
    "network meta-analysis: concepts and models for multi-arm studies. Research "
    "Synthesis Methods 3(2):98-110.",
    "krahn": "Krahn U, Binder H, König J (2013). A graphical tool for locating inconsistency in "
    "network meta-analyses. BMC Med Res Methodol 13:35.",
    "jackson": "Jackson D, White IR, Riley RD (2012). Quantifying the impact of between-study "
    "heterogeneity in multivariate meta-analyses. Statistics in Medicine "
    "31(29):3805-3820.",
}

METHOD_NAMES = {
    "FE": "a fixed-effect (inverse-variance) model",
    "REML": "a random-effects model with restricted maximum-likelihood (REML) tau²",
    "ML": "a random-effects model with maximum-likelihood tau²",
    "DL": "a random-effects model with the DerSimonian-Laird tau²",
    "PM": "a random-effects model with the Paule-Mandel tau²",
    "HE": "a random-effects model with the Hedges tau²",
}


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("brainmatch.evidence", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )


def _clean(obj: Any) -> Any:
    """Make a structure JSON-safe (numpy scalars, NaN/inf -> None)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def load_effects(
    input_path: str | Path,
    *,
    effect: str | None = None,
    se: str | None = None,
    variance: str | None = None,
    measure: str | None = None,
    raw: readers.RawColumns | None = None,
    study: str | None = None,
    select: list[str] | None = None,
    aggregate: list[str] | None = None,
    rho: float = 0.5,
    multiarm: str = "split",
    control: str | None = None,
    n_control: str | None = None,
    schema: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table and return one row per comparison with ``yi`` / ``vi``.

    Parameters
    ----------
    input_path : str or Path
        CSV / TSV / XLSX, or a Metapsy ``data.csv`` (recognised by its columns).
    effect, se, variance, measure, raw, study
        How to get the effects; see :func:`brainmatch.evidence.readers.effects_table`.
        For Metapsy tables the defaults are ``.g`` and ``.g_se``.
    select : list of str, optional
        ``COLUMN=VALUE`` row filters applied before anything else.
    aggregate : list of str, optional
        Columns identifying one comparison; rows sharing them (e.g. several outcome
        instruments) are combined with correlation ``rho``.
    rho : float
        Within-comparison correlation for ``aggregate``.
    multiarm : {"split", "ignore"}
        How comparisons sharing a control group are handled (see
        :func:`~brainmatch.evidence.readers.split_shared_controls`).
    control, n_control : str, optional
        Columns naming the control arm and its size (used by ``multiarm="split"``).
    schema : {"augmentation"}, optional
        Validate and normalise the augmentation columns.

    Returns
    -------
    table : DataFrame
        One row per comparison with ``yi``, ``vi`` and ``study_label``.
    notes : dict
        What was done (for the methods text).
    """
    path = Path(input_path)
    df = readers.read_table(path)
    df = readers.apply_selection(df, select, path)
    notes: dict[str, Any] = {"input": str(path), "metapsy": False}
    if schema is not None:
        if schema != "augmentation":
            raise BrainmatchInputError(f"unknown --schema {schema!r}; use augmentation")
        df = normalise_augmentation_table(df, path)
    if readers.is_metapsy(df) and effect is None and measure is None:
        notes["metapsy"] = True
        table = readers.metapsy_comparisons(df, rho=rho)
        notes["n_rows"] = len(df)
        notes["aggregated"] = int((table["n_outcomes"] > 1).sum())
        study_col: str = "study"
        control_col: str | None = "control_id"
        n_col: str | None = "n_group2"
    else:
        table = readers.effects_table(
            df,
            path=path,
            effect=effect,
            se=se,
            variance=variance,
            measure=measure,
            raw=raw,
            study=study,
        )
        if aggregate:
            readers.require_columns(table, aggregate, path)
            before = len(table)
            table = readers.aggregate_within(table, aggregate, rho)
            notes["aggregated"] = before - len(table)
        study_col = study or ("study" if "study" in table.columns else "study_label")
        control_col, n_col = control, n_control
    notes["rho"] = rho
    if multiarm not in ("split", "ignore"):
        raise BrainmatchInputError("--multiarm must be split or ignore")
    notes["multiarm"] = multiarm
    notes["n_shared"] = 0
    if multiarm == "split" and control_col is not None:
        readers.require_columns(table, [control_col], path)
        table = readers.split_shared_controls(table, study_col, control_col, n_col)
        notes["n_shared"] = int((table["shared_control_m"] > 1).sum())
    return table.reset_index(drop=True), notes


def _design(
    table: pd.DataFrame, moderators: list[str], path: str | Path | None
) -> tuple[np.ndarray, list[str]]:
    cols, names = [], []
    for m in moderators:
        readers.require_columns(table, [m], path)
        num = pd.to_numeric(table[m], errors="coerce")
        if num.notna().all():
            cols.append(num.to_numpy(dtype=float))
            names.append(m)
            continue
        if table[m].isna().any():
            i = int(np.flatnonzero(table[m].isna().to_numpy())[0])
            raise BrainmatchInputError(f"moderator {m!r} is missing in row {i + 1} of the analysis")
        levels = sorted(table[m].astype(str).unique())
        if len(levels) < 2:
            raise BrainmatchInputError(f"moderator {m!r} has a single value")
        for lev in levels[1:]:
            cols.append((table[m].astype(str) == lev).to_numpy(dtype=float))
            names.append(f"{m}[{lev}]")
    return np.column_stack(cols), names


def methods_text(
    res: ma.MetaResult,
    notes: dict[str, Any],
    *,
    subgroup: str | None = None,
    moderators: list[str] | None = None,
    bias: bool = True,
) -> tuple[str, list[str]]:
    """A methods paragraph and the list of references it cites.

    Parameters
    ----------
    res : MetaResult
        The overall fit.
    notes : dict
        From :func:`load_effects`.
    subgroup : str, optional
        Subgroup column.
    moderators : list of str, optional
        Meta-regression moderators.
    bias : bool
        Whether small-study analyses were run.

    Returns
    -------
    text : str
    citations : list of str
    """
    keys: list[str] = []

    def cite(k: str) -> str:
        if k not in keys:
            keys.append(k)
        return f"[{keys.index(k) + 1}]"

    parts = []
    if notes.get("metapsy"):
        parts.append(
            f"Effect sizes were the Hedges' g {cite('g')} values of the Metapsy database "
            f"{cite('metapsy')} (positive values favour the psychotherapy arm); when a "
            f"comparison reported several outcome instruments, their effects were combined "
            f"into one per comparison assuming a correlation of {notes['rho']} between "
            f"instruments ({notes.get('aggregated', 0)} comparisons combined)."
        )
    if notes.get("n_shared"):
        parts.append(
            f"{notes['n_shared']} comparisons shared their control group with another "
            f"comparison of the same multi-arm study; the shared control group was split "
            f"evenly between them {cite('cochrane')}, which adds (m - 1)/n_c to each "
            f"comparison's sampling variance."
        )
    parts.append(
        f"Effects were pooled with {METHOD_NAMES[res.method]} {cite(res.method)} as "
        f"implemented to reproduce R's metafor {cite('metafor')} (k = {res.k})."
    )
    if res.test in ("knha", "adhoc"):
        parts.append(
            f"Tests and confidence intervals used the Knapp-Hartung adjustment "
            f"{cite('knha')} with t({res.ddf}) quantiles."
        )
    if res.method != "FE":
        parts.append(
            f"Heterogeneity is reported as tau² with its Q-profile confidence interval "
            f"{cite('qprofile')}, I² and H² {cite('I2')}, Cochran's Q, and a "
            f"{int(res.level * 100)}% prediction interval for the effect in a new study "
            f"{cite('PI')}."
        )
    if subgroup:
        parts.append(
            f"Subgroups defined by '{subgroup}' were pooled separately (each with its own tau²) "
            f"and compared with a Q test of the subgroup estimates; a mixed-effects "
            f"meta-regression on the subgroup dummies with a common tau² is also reported."
        )
    if moderators:
        parts.append(
            f"A mixed-effects meta-regression on {', '.join(moderators)} was fitted "
            f"with the same tau² estimator (categorical moderators dummy-coded)."
        )
    if bias:
        parts.append(
            f"Small-study effects were assessed with an Egger-type regression test "
            f"{cite('egger')} (standard error as moderator) and trim-and-fill with the L0 "
            f"estimator {cite('trimfill')}; leave-one-out estimates are given."
        )
    return " ".join(parts), [CITATIONS[k] for k in keys]


def run_meta(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    effect: str | None = None,
    se: str | None = None,
    variance: str | None = None,
    measure: str | None = None,
    raw: readers.RawColumns | None = None,
    study: str | None = None,
    select: list[str] | None = None,
    aggregate: list[str] | None = None,
    rho: float = 0.5,
    multiarm: str = "split",
    control: str | None = None,
    n_control: str | None = None,
    method: str = "REML",
    test: str = "z",
    level: float = 0.95,
    subgroup: str | None = None,
    moderators: list[str] | None = None,
    schema: str | None = None,
    xlabel: str | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Run a pairwise meta-analysis and write every output into ``out_dir``.

    Parameters
    ----------
    input_path : str or Path
        Table of studies (see :func:`load_effects`).
    out_dir : str or Path
        Output folder (created).
    effect, se, variance, measure, raw, study, select, aggregate, rho, multiarm, control, \
n_control, schema
        See :func:`load_effects`.
    method : {"REML", "FE", "ML", "DL", "PM", "HE"}
        tau^2 estimator.
    test : {"z", "knha", "adhoc"}
        Inference.
    level : float
        Confidence level.
    subgroup : str, optional
        Column for the subgroup analysis.
    moderators : list of str, optional
        Columns for a meta-regression.
    xlabel, title : str, optional
        Figure labels.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    table, notes = load_effects(
        input_path,
        effect=effect,
        se=se,
        variance=variance,
        measure=measure,
        raw=raw,
        study=study,
        select=select,
        aggregate=aggregate,
        rho=rho,
        multiarm=multiarm,
        control=control,
        n_control=n_control,
        schema=schema,
    )
    path = Path(input_path)
    labels = table["study_label"].astype(str).tolist()
    try:
        res = ma.rma(table["yi"], table["vi"], method=method, test=test, level=level, labels=labels)
    except BrainmatchInputError as exc:
        raise BrainmatchInputError(exc.reason, path) from None
    summary: dict[str, Any] = res.summary()
    sub = None
    if subgroup:
        readers.require_columns(table, [subgroup], path)
        groups = table[subgroup].fillna("NA").astype(str).tolist()
        sub = ma.subgroup_analysis(
            table["yi"], table["vi"], groups, method=method, test=test, level=level, labels=labels
        )
        summary["subgroups"] = sub.summary()
        summary["subgroup_column"] = subgroup
    regression = None
    if moderators:
        X, names = _design(table, moderators, path)
        reg = ma.rma(
            table["yi"], table["vi"], mods=X, mod_names=names, method=method, test=test, level=level
        )
        regression = reg.summary()
        regression["moderators"] = moderators
        summary["meta_regression"] = regression
    bias = None
    loo: list[dict[str, Any]] = []
    if res.k >= 3:
        bias = {"egger": ma.egger_test(res), "trimfill": ma.trim_and_fill(res)}
        summary["egger"] = bias["egger"]
        summary["trimfill"] = bias["trimfill"]
        loo = ma.leave_one_out(res)
    methods, cites = methods_text(
        res, notes, subgroup=subgroup, moderators=moderators, bias=bias is not None
    )
    summary["methods"] = methods
    summary["citations"] = cites
    summary["input"] = notes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    studies = table.assign(weight=res.weights)
    keep = [
        c
        for c in ["study_label", "yi", "vi", "weight", subgroup, *(moderators or [])]
        if c and c in studies.columns
    ]
    write_tsv(out / "studies.tsv", studies[keep], float_format="%.6g")
    if loo:
        write_tsv(out / "leave_one_out.tsv", pd.DataFrame(loo), float_format="%.6g")
    from brainmatch.evidence import plots

    xl = xlabel or (
        "Hedges' g" if notes.get("metapsy") or measure in ("SMD", "SMDC") else "Effect size"
    )
    figures = []
    plots.forest_plot(
        res,
        out / "forest",
        subgroups=sub,
        group_of=table[subgroup].fillna("NA").astype(str).tolist() if subgroup else None,
        xlabel=xl,
        title=title,
    )
    figures.append("forest.svg")
    if sub is not None and subgroup:
        plots.forest_plot(
            res,
            out / "forest_subgroups",
            subgroups=sub,
            group_of=table[subgroup].fillna("NA").astype(str).tolist(),
            xlabel=xl,
            title=title,
            summary_only=True,
        )
        figures.insert(0, "forest_subgroups.svg")
    plots.funnel_plot(res, out / "funnel", filled=bias["trimfill"] if bias else None, xlabel=xl)
    figures.append("funnel.svg")
    clean = _clean(summary)
    write_json(out / "results.json", clean)
    html = (
        _env()
        .get_template("meta_report.html")
        .render(
            title=title or f"Meta-analysis of {path.name}",
            input=str(path),
            selection=" & ".join(select or []),
            version=__version__,
            r=clean,
            level=level,
            subgroups=clean.get("subgroups") and _SubView(clean["subgroups"]),
            subgroup_column=subgroup,
            regression=clean.get("meta_regression"),
            figures=figures,
            bias=bias and _clean(bias),
            loo=loo,
            loo_min=min((x["estimate"] for x in loo), default=0.0),
            loo_max=max((x["estimate"] for x in loo), default=0.0),
            methods=methods,
            citations=cites,
        )
    )
    write_text(out / "report.html", html)
    return clean


class _SubView:
    """Attribute access to the subgroup summary for the template."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.groups = d["groups"]
        self.Q_between = d["Q_between"]
        self.df_between = d["df_between"]
        self.p_between = d["p_between"]
        self.moderator_test = d["moderator_test"]


def nma_methods_text(res: NMAResult, notes: dict[str, Any]) -> tuple[str, list[str]]:
    """Methods paragraph and references for a network meta-analysis."""
    keys: list[str] = []

    def cite(k: str) -> str:
        if k not in keys:
            keys.append(k)
        return f"[{keys.index(k) + 1}]"

    parts = []
    if notes.get("metapsy"):
        parts.append(
            f"Comparisons and Hedges' g {cite('g')} values came from the Metapsy database "
            f"{cite('metapsy')}; several outcome instruments of one comparison were combined "
            f"assuming a correlation of {notes['rho']}."
        )
    parts.append(
        f"A frequentist network meta-analysis {cite('rucker')} was fitted by generalised "
        f"least squares on the contrasts of each study against a baseline arm, with the "
        f"within-study correlation of contrasts that share an arm, as in R's netmeta "
        f"{cite('netmeta')}; {res.n_multiarm} multi-arm studies contributed correlated "
        f"contrasts (when only comparisons against a shared control were available, the "
        f"control's variance share was taken as 1/n_c)."
    )
    if res.method_tau == "DL":
        parts.append(
            f"A common between-study variance tau² was estimated with the generalised "
            f"DerSimonian-Laird estimator {cite('jackson')} (tau² = "
            f"{res.tau2:.4f})."
        )
    else:
        parts.append(
            f"A common between-study variance tau² was estimated by REML (tau² = {res.tau2:.4f})."
        )
    parts.append(
        f"Treatments were ranked by P-scores {cite('pscore')} "
        f"({'larger' if res.larger_is_better else 'smaller'} effects better). Inconsistency "
        f"was assessed with the design-by-treatment interaction model {cite('dbt')}, "
        f"splitting Q into within-design heterogeneity and between-design inconsistency "
        f"{cite('krahn')}."
    )
    return " ".join(parts), [CITATIONS[k] for k in keys]


def run_nma(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    study: str = "study",
    treat1: str = "treat1",
    treat2: str = "treat2",
    effect: str | None = None,
    se: str | None = None,
    variance: str | None = None,
    arm1: str | None = None,
    arm2: str | None = None,
    n_control: str | None = None,
    select: list[str] | None = None,
    rho: float = 0.5,
    reference: str | None = None,
    method_tau: str = "DL",
    larger_is_better: bool = True,
    level: float = 0.95,
    title: str | None = None,
    xlabel: str | None = None,
) -> dict[str, Any]:
    """Run a network meta-analysis and write every output into ``out_dir``.

    Parameters
    ----------
    input_path : str or Path
        Contrast table (one row per comparison) or a Metapsy ``data.csv``.
    out_dir : str or Path
        Output folder.
    study, treat1, treat2, effect, se, variance, arm1, arm2, n_control
        Columns (see :func:`~brainmatch.evidence.nma.network_meta_analysis`); for a
        Metapsy table they are set automatically.
    select : list of str, optional
        ``COLUMN=VALUE`` row filters.
    rho : float
        Correlation used to combine several instruments of one Metapsy comparison.
    reference, method_tau, larger_is_better, level
        See :func:`~brainmatch.evidence.nma.network_meta_analysis`.
    title, xlabel : str, optional
        Labels.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    path = Path(input_path)
    df = readers.read_table(path)
    df = readers.apply_selection(df, select, path)
    notes: dict[str, Any] = {"input": str(path), "metapsy": False, "rho": rho}
    if readers.is_metapsy(df) and effect is None:
        notes["metapsy"] = True
        table = readers.metapsy_comparisons(df, rho=rho)
        kw: dict[str, Any] = {
            "study": "study",
            "treat1": "arm1",
            "treat2": "arm2",
            "effect": "yi",
            "se": None,
            "variance": "vi",
            "arm1": "arm1_id",
            "arm2": "control_id",
            "n_control": "n_group2",
        }
    else:
        table = df
        if effect is None:
            effect = "TE"
        if se is None and variance is None:
            se = "seTE"
        kw = {
            "study": study,
            "treat1": treat1,
            "treat2": treat2,
            "effect": effect,
            "se": se,
            "variance": variance,
            "arm1": arm1,
            "arm2": arm2,
            "n_control": n_control,
        }
    try:
        res = network_meta_analysis(
            table,
            reference=reference,
            method_tau=method_tau,
            larger_is_better=larger_is_better,
            level=level,
            **kw,
        )
    except BrainmatchInputError as exc:
        raise BrainmatchInputError(exc.reason, path) from None
    summary = res.summary()
    methods, cites = nma_methods_text(res, notes)
    summary["methods"] = methods
    summary["citations"] = cites
    summary["input"] = notes
    clean = _clean(summary)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    league = res.league_table("random")
    write_tsv(out / "league_table.tsv", league.reset_index(names=""))
    write_tsv(out / "league_table_fixed.tsv", res.league_table("fixed").reset_index(names=""))
    eff = res.effects_table("random")
    write_tsv(out / "effects_vs_reference.tsv", eff, float_format="%.6g")
    write_tsv(out / "edges.tsv", res.edges)
    write_json(out / "results.json", clean)
    from brainmatch.evidence import plots

    plots.network_graph(res, out / "network")
    plots.nma_forest(
        res,
        out / "nma_forest",
        xlabel=xlabel or ("Hedges' g vs" if notes["metapsy"] else "Effect vs"),
    )
    rows = [
        [(str(league.iloc[i, j]), i == j) for j in range(league.shape[1])]
        for i in range(league.shape[0])
    ]
    html = (
        _env()
        .get_template("nma_report.html")
        .render(
            title=title or f"Network meta-analysis of {path.name}",
            input=str(path),
            selection=" & ".join(select or []),
            version=__version__,
            s=clean,
            d=clean["design_by_treatment"],
            effects=_clean(eff.to_dict("records")),
            league=rows,
            figures=["network.svg", "nma_forest.svg"],
            methods=methods,
            citations=cites,
        )
    )
    write_text(out / "report.html", html)
    return clean
