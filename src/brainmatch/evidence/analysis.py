"""Meta-analysis and network meta-analysis of a table, as result objects.

:func:`meta_analysis` and :func:`network_analysis` read a table and fit; they return a
:class:`MetaAnalysis` / :class:`NetworkMetaAnalysis` that writes nothing until asked:
``.save(dir)`` writes the data outputs (``results.json``, tables, SVG + PNG figures)
into an output folder it claims (:mod:`brainmatch._outdir`), ``.to_dict()`` is the
content of ``results.json`` and ``_repr_html_`` shows the main numbers in a notebook.
The self-contained ``report.html`` is rendered from the result by
:mod:`brainmatch.reports.evidence` (this module never imports report code).
:func:`run_meta` / :func:`run_nma` are the one-call forms (fit, save, return the dict).
A bad input raises :class:`~brainmatch.errors.BrainmatchInputError` before anything is
written.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch import __version__
from brainmatch._io import json_safe, write_json, write_tsv
from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence import meta as ma
from brainmatch.evidence import readers
from brainmatch.evidence.nma import NMAResult, network_meta_analysis
from brainmatch.evidence.schema import normalise_augmentation_table

#: Above this many studies the leave-one-out refits (k fits of k studies) are skipped:
#: no single study moves such a pooled estimate, and the refits would cost O(k^2).
MAX_LEAVE_ONE_OUT = 1000
#: Above this many studies the forest plot shows the pooled diamonds only.
MAX_FOREST_STUDIES = 300

Progress = Callable[[int, int], None]

CITATIONS = {
    "FE": "Hedges LV, Olkin I (1985). Statistical Methods for Meta-Analysis. Academic Press "
    "(inverse-variance fixed-effect model).",
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
    dup = df.duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        raise BrainmatchInputError(
            f"duplicated rows: {int(dup.sum())} rows are exact copies of another row (first: "
            f"data rows {', '.join(str(int(i) + 1) for i in rows[:6])}); remove the duplicates",
            path,
        )
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
    _refuse_duplicates(table, path)
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


def _refuse_duplicates(table: pd.DataFrame, path: Path) -> None:
    """Refuse a comparison entered twice (same study label, effect and variance)."""
    key = table[["study_label", "yi", "vi"]].astype({"study_label": str})
    dup = key.duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first = key.iloc[rows[0]]
        same = [int(i) + 1 for i in rows if key.iloc[i].equals(first)]
        raise BrainmatchInputError(
            f"duplicated rows: analysis rows {', '.join(map(str, same))} are the same comparison "
            f"(study {first['study_label']!r}, effect {first['yi']:.6g}, variance "
            f"{first['vi']:.6g}); {int(dup.sum())} rows in all are duplicates. Remove them, or "
            "give distinct comparisons distinct study labels",
            path,
        )


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
        if res.method == "FE":
            model = "with a fixed-effect model"
        else:
            model = (
                f"with their own tau² ({res.method}) when they held three or more studies, "
                "with a fixed-effect model when they held two (too few to estimate tau²), "
                "and as the study's own effect when they held one"
            )
        parts.append(
            f"Subgroups defined by '{subgroup}' were pooled separately {model} (the model of "
            f"each subgroup is stated in its table row) and every subgroup was compared in a "
            f"Q test of the subgroup estimates; a mixed-effects meta-regression on the "
            f"subgroup dummies with a common tau² is also reported."
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


def _check_fit(res: ma.MetaResult, path: Path) -> None:
    values = [res.estimate, float(res.se[0]), res.tau2, res.QE]
    if not all(math.isfinite(v) for v in values):
        raise BrainmatchInputError(
            "the model could not be fitted in double precision (non-finite estimate); check "
            "the effects and standard errors for extreme values",
            path,
        )


@dataclass
class MetaAnalysis:
    """A pairwise meta-analysis of a table (from :func:`meta_analysis`).

    Attributes
    ----------
    fit : MetaResult
        The overall fit (metafor's ``rma.uni`` numbers).
    table : DataFrame
        One row per comparison (``study_label``, ``yi``, ``vi`` and the input columns).
    notes : dict
        How the table was read (for the methods text).
    settings : dict
        Options of the analysis (input, selection, subgroup, moderators, labels).
    subgroups : SubgroupResult or None
    regression : MetaResult or None
    egger, trimfill : dict or None
        Small-study analyses (k >= 3).
    leave_one_out : list of dict
    methods : str
        Methods paragraph.
    citations : list of str
    warnings : list of str
    """

    fit: ma.MetaResult
    table: pd.DataFrame
    notes: dict[str, Any]
    settings: dict[str, Any]
    subgroups: ma.SubgroupResult | None = None
    regression: ma.MetaResult | None = None
    egger: dict[str, Any] | None = None
    trimfill: dict[str, Any] | None = None
    leave_one_out: list[dict[str, Any]] = field(default_factory=list)
    methods: str = ""
    citations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        """The model in words (e.g. "a random-effects model with ... (REML) tau²")."""
        return METHOD_NAMES[self.fit.method]

    @property
    def figure_files(self) -> list[str]:
        """The SVG figures :meth:`save` draws, in report order."""
        subgroup_forest = (
            self.subgroups is not None
            and bool(self.settings.get("subgroup"))
            and self.fit.k <= MAX_FOREST_STUDIES
        )
        return [*(["forest_subgroups.svg"] if subgroup_forest else []), "forest.svg", "funnel.svg"]

    @property
    def figure_notes(self) -> list[str]:
        """Notes on the figures :meth:`save` draws (shown under them in the report)."""
        if self.fit.k <= MAX_FOREST_STUDIES:
            return []
        return [
            f"The forest plot shows the pooled estimates only: {self.fit.k} studies are more "
            f"than one figure can show legibly (limit {MAX_FOREST_STUDIES}); every "
            "study's effect and weight is in studies.tsv."
        ]

    def to_dict(self) -> dict[str, Any]:
        """The content of ``results.json`` (JSON-safe: NaN and infinities as null)."""
        summary: dict[str, Any] = self.fit.summary()
        summary["model"] = self.model
        if self.subgroups is not None:
            summary["subgroups"] = self.subgroups.summary()
            summary["subgroup_column"] = self.settings.get("subgroup")
        if self.regression is not None:
            summary["meta_regression"] = {
                **self.regression.summary(),
                "moderators": self.settings.get("moderators"),
            }
        if self.egger is not None:
            summary["egger"] = self.egger
            summary["trimfill"] = self.trimfill
        if self.settings.get("loo_note"):
            summary["leave_one_out_note"] = self.settings["loo_note"]
        summary["methods"] = self.methods
        summary["citations"] = self.citations
        summary["warnings"] = self.warnings
        summary["input"] = self.notes
        summary["brainmatch_version"] = __version__
        return dict(json_safe(summary))

    def save(
        self,
        out_dir: str | Path,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> Path:
        """Write the data outputs into ``out_dir`` (claimed for ``meta``).

        Writes ``results.json``, ``studies.tsv``, ``leave_one_out.tsv`` and forest and
        funnel plots (SVG + PNG).  The self-contained ``report.html`` is rendered from the
        result by :func:`brainmatch.reports.evidence.write_meta_report` (``brainmatch
        meta`` writes both).

        Parameters
        ----------
        out_dir : str or Path
            Output folder: new, empty, or an earlier ``meta`` output folder.
        overwrite : bool
            Delete the earlier ``meta`` outputs first.
        progress : callable, optional
            ``progress(done, total)`` over the files written.

        Returns
        -------
        Path
            The folder.
        """
        from brainmatch._outdir import claim_output
        from brainmatch.evidence import plots

        with claim_output(
            out_dir, "meta", overwrite=overwrite, inputs=[self.settings.get("input")]
        ) as claim:
            out = claim.path
            steps = 4
            res, table = self.fit, self.table
            subgroup = self.settings.get("subgroup")
            moderators = self.settings.get("moderators") or []
            studies = table.assign(weight=res.weights)
            keep = [
                c
                for c in ["study_label", "yi", "vi", "weight", subgroup, *moderators]
                if c and c in studies.columns
            ]
            write_tsv(out / "studies.tsv", studies[keep], float_format="%.6g")
            if self.leave_one_out:
                write_tsv(
                    out / "leave_one_out.tsv", pd.DataFrame(self.leave_one_out), float_format="%.6g"
                )
            if progress:
                progress(1, steps)
            xl = self.settings.get("xlabel") or (
                "Hedges' g"
                if self.notes.get("metapsy") or self.settings.get("measure") in ("SMD", "SMDC")
                else "Effect size"
            )
            title = self.settings.get("title")
            groups = (
                table[subgroup].fillna("NA").astype(str).tolist()
                if subgroup and self.subgroups is not None
                else None
            )
            if res.k <= MAX_FOREST_STUDIES:
                plots.forest_plot(
                    res,
                    out / "forest",
                    subgroups=self.subgroups,
                    group_of=groups,
                    xlabel=xl,
                    title=title,
                )
            else:
                plots.forest_plot(
                    res,
                    out / "forest",
                    subgroups=self.subgroups,
                    group_of=groups,
                    xlabel=xl,
                    title=title,
                    summary_only=True,
                )
            if progress:
                progress(2, steps)
            if self.subgroups is not None and groups is not None and res.k <= MAX_FOREST_STUDIES:
                plots.forest_plot(
                    res,
                    out / "forest_subgroups",
                    subgroups=self.subgroups,
                    group_of=groups,
                    xlabel=xl,
                    title=title,
                    summary_only=True,
                )
            plots.funnel_plot(res, out / "funnel", filled=self.trimfill, xlabel=xl)
            if progress:
                progress(3, steps)
            write_json(out / "results.json", self.to_dict())
            if progress:
                progress(4, steps)
            return out

    def _repr_html_(self) -> str:
        r = self.fit
        rows = [
            ("model", self.model),
            ("k", str(r.k)),
            ("estimate [CI]", f"{r.estimate:.4f} [{r.ci_lb[0]:.4f}, {r.ci_ub[0]:.4f}]"),
            ("p", f"{r.pval[0]:.3g}"),
            ("tau²", f"{r.tau2:.4f}"),
            ("I²", f"{r.I2:.1f}%"),
        ]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return f"<table><caption>brainmatch meta-analysis</caption>{body}</table>"


def meta_analysis(
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
    method: str = "REML",
    test: str = "z",
    level: float = 0.95,
    subgroup: str | None = None,
    moderators: list[str] | None = None,
    schema: str | None = None,
    xlabel: str | None = None,
    title: str | None = None,
    progress: Progress | None = None,
) -> MetaAnalysis:
    """Fit a pairwise meta-analysis of a table; write nothing.

    Parameters
    ----------
    input_path : str or Path
        Table of studies (see :func:`load_effects`).
    effect, se, variance, measure, raw, study, select, aggregate, rho, multiarm, control, \
n_control, schema
        See :func:`load_effects`.
    method : {"REML", "FE", "ML", "DL", "PM", "HE"}
        tau^2 estimator (``FE``: fixed-effect model).
    test : {"z", "knha", "adhoc"}
        Inference.
    level : float
        Confidence level.
    subgroup : str, optional
        Column for the subgroup analysis.
    moderators : list of str, optional
        Columns for a meta-regression.
    xlabel, title : str, optional
        Figure labels (used by :meth:`MetaAnalysis.save`).
    progress : callable, optional
        ``progress(done, total)`` over the analysis steps.

    Returns
    -------
    MetaAnalysis
    """
    steps = 4
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
        _check_fit(res, path)
        if progress:
            progress(1, steps)
        sub = None
        if subgroup:
            readers.require_columns(table, [subgroup], path)
            groups = table[subgroup].fillna("NA").astype(str).tolist()
            sub = ma.subgroup_analysis(
                table["yi"],
                table["vi"],
                groups,
                method=method,
                test=test,
                level=level,
                labels=labels,
            )
        regression = None
        if moderators:
            X, names = _design(table, moderators, path)
            regression = ma.rma(
                table["yi"],
                table["vi"],
                mods=X,
                mod_names=names,
                method=method,
                test=test,
                level=level,
            )
        if progress:
            progress(2, steps)
        egger = trimfill = None
        loo: list[dict[str, Any]] = []
        loo_note = None
        if res.k >= 3:
            egger = ma.egger_test(res)
            trimfill = ma.trim_and_fill(res)
            if progress:
                progress(3, steps)
            if res.k <= MAX_LEAVE_ONE_OUT:
                loo = ma.leave_one_out(res)
            else:
                loo_note = (
                    f"Leave-one-out refits were skipped: with k = {res.k} studies (more than "
                    f"{MAX_LEAVE_ONE_OUT}) no single study can move the pooled estimate "
                    f"noticeably (the largest weight is {float(np.max(res.weights)):.2g}%)."
                )
    except BrainmatchInputError as exc:
        raise BrainmatchInputError(exc.reason, path) from None
    except (ArithmeticError, np.linalg.LinAlgError) as exc:
        raise BrainmatchInputError(
            f"the model could not be fitted in double precision ({exc}); check the effects "
            "and standard errors for extreme values",
            path,
        ) from None
    if progress:
        progress(4, steps)
    methods, cites = methods_text(
        res, notes, subgroup=subgroup, moderators=moderators, bias=egger is not None
    )
    warnings_: list[str] = []
    if sub is not None:
        small = [g for g, r in sub.groups.items() if r.k < 3 and res.method != "FE"]
        if small:
            warnings_.append(
                f"{len(small)} subgroup(s) hold fewer than three studies ({', '.join(small)}): "
                "they are pooled with a fixed-effect model (k = 2) or reported as their single "
                "study (k = 1), as their table rows state."
            )
    return MetaAnalysis(
        fit=res,
        table=table,
        notes=notes,
        settings={
            "input": str(path),
            "select": list(select or []),
            "measure": measure,
            "subgroup": subgroup,
            "moderators": list(moderators or []),
            "xlabel": xlabel,
            "title": title,
            "level": level,
            "loo_note": loo_note,
        },
        subgroups=sub,
        regression=regression,
        egger=egger,
        trimfill=trimfill,
        leave_one_out=loo,
        methods=methods,
        citations=cites,
        warnings=warnings_,
    )


def run_meta(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Fit (:func:`meta_analysis`) and save (:meth:`MetaAnalysis.save`) in one call.

    Parameters
    ----------
    input_path : str or Path
        Table of studies.
    out_dir : str or Path
        Output folder.
    overwrite : bool
        Delete the earlier ``meta`` outputs in ``out_dir`` first.
    **options
        Options of :func:`meta_analysis`.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    result = meta_analysis(input_path, **options)
    result.save(out_dir, overwrite=overwrite)
    return result.to_dict()


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


@dataclass
class NetworkMetaAnalysis:
    """A network meta-analysis of a table (from :func:`network_analysis`).

    Attributes
    ----------
    fit : NMAResult
    notes : dict
        How the table was read.
    settings : dict
        Options (input, selection, labels).
    methods : str
    citations : list of str
    warnings : list of str
    """

    fit: NMAResult
    notes: dict[str, Any]
    settings: dict[str, Any]
    methods: str = ""
    citations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The content of ``results.json`` (JSON-safe)."""
        summary = self.fit.summary()
        summary["methods"] = self.methods
        summary["citations"] = self.citations
        summary["warnings"] = self.warnings
        summary["input"] = self.notes
        summary["brainmatch_version"] = __version__
        return dict(json_safe(summary))

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write the data outputs into ``out_dir`` (claimed for ``nma``).

        Writes ``results.json``, ``league_table.tsv``, ``league_table_fixed.tsv``,
        ``effects_vs_reference.tsv``, ``edges.tsv``, a network graph and a forest plot
        (SVG + PNG).  The self-contained ``report.html`` is rendered from the result by
        :func:`brainmatch.reports.evidence.write_nma_report` (``brainmatch nma`` writes
        both).

        Returns
        -------
        Path
            The folder.
        """
        from brainmatch._outdir import claim_output
        from brainmatch.evidence import plots

        res = self.fit
        with claim_output(
            out_dir, "nma", overwrite=overwrite, inputs=[self.settings.get("input")]
        ) as claim:
            out = claim.path
            league = res.league_table("random")
            write_tsv(out / "league_table.tsv", league.reset_index(names=""))
            write_tsv(
                out / "league_table_fixed.tsv", res.league_table("fixed").reset_index(names="")
            )
            eff = res.effects_table("random")
            write_tsv(out / "effects_vs_reference.tsv", eff, float_format="%.6g")
            write_tsv(out / "edges.tsv", res.edges)
            write_json(out / "results.json", self.to_dict())
            plots.network_graph(res, out / "network")
            plots.nma_forest(
                res,
                out / "nma_forest",
                xlabel=self.settings.get("xlabel")
                or ("Hedges' g vs" if self.notes.get("metapsy") else "Effect vs"),
            )
            return out

    def _repr_html_(self) -> str:
        eff = self.fit.effects_table("random")
        body = "".join(
            f"<tr><td>{html.escape(str(r.treatment))}</td><td>{r.estimate:.3f}</td>"
            f"<td>[{r.ci_lb:.3f}, {r.ci_ub:.3f}]</td><td>{r.pscore:.2f}</td></tr>"
            for r in eff.itertuples()
        )
        return (
            "<table><caption>brainmatch network meta-analysis (vs "
            f"{html.escape(self.fit.reference)}, tau² = {self.fit.tau2:.4f})</caption>"
            "<tr><th>treatment</th><th>estimate</th>"
            f"<th>CI</th><th>P-score</th></tr>{body}</table>"
        )


def network_analysis(
    input_path: str | Path,
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
) -> NetworkMetaAnalysis:
    """Fit a network meta-analysis of a table; write nothing.

    Parameters
    ----------
    input_path : str or Path
        Contrast table (one row per comparison) or a Metapsy ``data.csv``.
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
    NetworkMetaAnalysis
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
            # Hedges' g is standardised per comparison: contrasts of one study are not
            # exactly additive, so inconsistent multi-arm studies are listed, not refused
            "tol_multi": None,
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
    except (ArithmeticError, np.linalg.LinAlgError) as exc:
        raise BrainmatchInputError(
            f"the network could not be fitted in double precision ({exc}); check the effects "
            "and standard errors for extreme values",
            path,
        ) from None
    methods, cites = nma_methods_text(res, notes)
    warnings_: list[str] = []
    if res.multiarm_inconsistent:
        warnings_.append(
            f"{len(res.multiarm_inconsistent)} multi-arm studies have Hedges' g contrasts that "
            "are not additive within 0.001 (g is standardised per comparison); each was fitted "
            "on its contrasts against one shared arm. First: " + res.multiarm_inconsistent[0]
        )
    if res.df == 0:
        warnings_.append(
            "The network has no degrees of freedom for heterogeneity (each comparison rests on "
            "a single study): tau² cannot be estimated and is 0; Q and I² are not defined."
        )
    return NetworkMetaAnalysis(
        fit=res,
        notes=notes,
        settings={
            "input": str(path),
            "select": list(select or []),
            "title": title,
            "xlabel": xlabel,
        },
        methods=methods,
        citations=cites,
        warnings=warnings_,
    )


def run_nma(
    input_path: str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Fit (:func:`network_analysis`) and save (:meth:`NetworkMetaAnalysis.save`) in one call.

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    result = network_analysis(input_path, **options)
    result.save(out_dir, overwrite=overwrite)
    return result.to_dict()
