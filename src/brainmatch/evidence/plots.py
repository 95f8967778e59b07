"""Figures for meta-analyses: forest (with subgroup diamonds), funnel, network graph.

Every figure is written as SVG and PNG (matplotlib's Agg backend, no display
needed) through atomic writes.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from scipy import stats

from brainmatch._io import write_bytes
from brainmatch.evidence.meta import MetaResult, SubgroupResult
from brainmatch.evidence.nma import NMAResult


def save_figure(fig: Figure, stem: str | Path, tight: bool = True) -> list[Path]:
    """Write ``stem.svg`` and ``stem.png`` atomically and close the figure.

    Parameters
    ----------
    fig : Figure
        The figure.
    stem : str or Path
        Output path without suffix.
    tight : bool
        Crop to the drawn content (costly for very tall figures).

    Returns
    -------
    list of Path
        The two files written.
    """
    stem = Path(stem)
    paths = []
    dpi = 150 if fig.get_figheight() < 25 else 90
    for ext in ("svg", "png"):
        buf = io.BytesIO()
        with plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(
                buf,
                format=ext,
                bbox_inches="tight" if tight else None,
                dpi=dpi if ext == "png" else "figure",
            )
        out = stem.with_suffix(f".{ext}")
        write_bytes(out, buf.getvalue())
        paths.append(out)
    plt.close(fig)
    return paths


def _diamond(ax: Any, y: float, est: float, lo: float, hi: float, color: str) -> None:
    h = 0.35
    ax.add_patch(
        Polygon(
            [(lo, y), (est, y + h), (hi, y), (est, y - h)],
            closed=True,
            facecolor=color,
            edgecolor="black",
            lw=0.6,
            zorder=3,
        )
    )


def forest_plot(
    res: MetaResult,
    stem: str | Path,
    *,
    subgroups: SubgroupResult | None = None,
    group_of: list[str] | None = None,
    xlabel: str = "Effect size",
    title: str | None = None,
    summary_only: bool = False,
) -> list[Path]:
    """Forest plot: one row per study, a diamond per subgroup and for the pooled effect.

    Parameters
    ----------
    res : MetaResult
        Overall intercept-only fit.
    stem : str or Path
        Output path without suffix.
    subgroups : SubgroupResult, optional
        Subgroup fits; studies are grouped under their subgroup's diamond.
    group_of : list of str, optional
        Subgroup of each study in ``res`` (required with ``subgroups``).
    xlabel, title : str
        Labels.
    summary_only : bool
        With subgroups: draw only the subgroup and overall diamonds (no study rows).

    Returns
    -------
    list of Path
        SVG and PNG written.
    """
    z = stats.norm.ppf(0.5 + res.level / 2)
    lo = res.yi - z * np.sqrt(res.vi)
    hi = res.yi + z * np.sqrt(res.vi)
    rows: list[tuple[str, Any]] = []  # ("study", i) | ("header", name) | ("diamond", (label, fit))
    if subgroups is not None and group_of is not None:
        g = np.asarray(group_of).astype(str)
        for name in list(subgroups.groups) + sorted(set(g) - set(subgroups.groups)):
            if not summary_only:
                rows.append(("header", name))
                rows.extend(("study", int(j)) for j in np.flatnonzero(g == name))
            if name in subgroups.groups:
                fit = subgroups.groups[name]
                i2 = f", I² = {fit.I2:.0f}%" if math.isfinite(fit.I2) else ""
                rows.append(("diamond", (f"{name} (k = {fit.k}{i2})", fit)))
            if not summary_only:
                rows.append(("blank", None))
        if summary_only:
            rows.append(("blank", None))
    elif not summary_only:
        rows.extend(("study", i) for i in range(res.k))
        rows.append(("blank", None))
    rows.append(("diamond", (f"Overall {res.method} (k = {res.k}, I² = {res.I2:.0f}%)", res)))
    n = len(rows)
    height = min(max(3.0, (0.35 if summary_only else 0.2) * n + 1.6), 200.0)
    fig = plt.figure(figsize=(11.0, height))
    top = 1 - 0.9 / height
    bottom = 0.6 / height
    ax = fig.add_axes((0.5, bottom, 0.47, top - bottom))
    ylabels, yticks = [], []
    wmax = float(np.max(res.weights)) if res.k else 1.0
    for r, (kind, item) in enumerate(rows):
        y = n - r
        if kind == "study":
            i = int(item)
            ax.plot([lo[i], hi[i]], [y, y], color="black", lw=0.8)
            size = 10 + 60 * math.sqrt(res.weights[i] / wmax)
            ax.scatter([res.yi[i]], [y], marker="s", s=size, color="#3b6ea8", zorder=3)
            ylabels.append(f"{res.labels[i]}   {res.yi[i]:.2f} [{lo[i]:.2f}, {hi[i]:.2f}]")
            yticks.append(y)
        elif kind == "header":
            ylabels.append(str(item))
            yticks.append(y)
        elif kind == "diamond":
            label, fit = item
            color = "#c0392b" if fit is res else "#e6a23c"
            _diamond(ax, y, fit.estimate, float(fit.ci_lb[0]), float(fit.ci_ub[0]), color)
            if fit.pi_lb is not None and fit is res:
                ax.plot([fit.pi_lb, fit.pi_ub], [y - 0.45, y - 0.45], color=color, lw=2.0)
            ylabels.append(f"{label}   {fit.estimate:.2f} [{fit.ci_lb[0]:.2f}, {fit.ci_ub[0]:.2f}]")
            yticks.append(y)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.axvline(res.estimate, color="#c0392b", lw=0.6, ls=":")
    ax.set_yticks([])
    trans = ax.get_yaxis_transform()
    for label, y, (kind, _) in zip(
        ylabels, yticks, [r for r in rows if r[0] != "blank"], strict=True
    ):
        ax.text(
            -0.02,
            y,
            label,
            transform=trans,
            ha="right",
            va="center",
            fontsize=7,
            fontweight="bold" if kind in ("header", "diamond") else "normal",
        )
    ax.set_ylim(0.3, n + 0.7)
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.tick_params(axis="y", length=0)
    if subgroups is not None:
        ax.set_title(
            (title + "\n" if title else "")
            + f"Test for subgroup differences: Q = {subgroups.Q_between:.2f}, "
            f"df = {subgroups.df_between}, "
            + ("p < 0.001" if subgroups.p_between < 0.001 else f"p = {subgroups.p_between:.3f}"),
            fontsize=9,
        )
    elif title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, stem, tight=n < 80)


def funnel_plot(
    res: MetaResult,
    stem: str | Path,
    *,
    filled: dict[str, Any] | None = None,
    xlabel: str = "Effect size",
) -> list[Path]:
    """Funnel plot: effects against standard errors with the pseudo 95% region.

    Parameters
    ----------
    res : MetaResult
        Intercept-only fit.
    stem : str or Path
        Output path without suffix.
    filled : dict, optional
        Output of :func:`~brainmatch.evidence.meta.trim_and_fill`; filled studies are
        drawn as open circles.
    xlabel : str
        Axis label.

    Returns
    -------
    list of Path
        SVG and PNG written.
    """
    se = np.sqrt(res.vi)
    smax = float(se.max()) * 1.05
    fig, ax = plt.subplots(figsize=(6, 5))
    s = np.linspace(0, smax, 100)
    z = stats.norm.ppf(0.975)
    ax.fill_betweenx(s, res.estimate - z * s, res.estimate + z * s, color="#eeeeee")
    ax.plot(res.estimate - z * s, s, color="grey", lw=0.7)
    ax.plot(res.estimate + z * s, s, color="grey", lw=0.7)
    ax.axvline(res.estimate, color="#c0392b", lw=1)
    many = res.k > 2000  # draw the points as one raster image: a small, fast SVG
    ax.scatter(
        res.yi,
        se,
        s=4 if many else 14,
        color="#3b6ea8",
        zorder=3,
        label="studies",
        rasterized=many,
    )
    if filled and filled.get("k0", 0) > 0:
        ax.scatter(
            filled["yi_fill"],
            np.sqrt(filled["vi_fill"]),
            s=16,
            facecolors="none",
            edgecolors="black",
            zorder=3,
            label=f"filled (k0 = {filled['k0']})",
        )
        ax.axvline(filled["estimate"], color="black", lw=0.8, ls="--")
        ax.legend(fontsize=8, frameon=False)
    ax.set_ylim(smax, 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Standard error")
    ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, stem)


def network_graph(res: NMAResult, stem: str | Path) -> list[Path]:
    """Network graph: treatments on a circle, edge width by number of studies.

    Parameters
    ----------
    res : NMAResult
        Fitted network.
    stem : str or Path
        Output path without suffix.

    Returns
    -------
    list of Path
        SVG and PNG written.
    """
    ts = res.treatments
    n = len(ts)
    ang = np.pi / 2 - 2 * np.pi * np.arange(n) / n
    pos = {t: (math.cos(a), math.sin(a)) for t, a in zip(ts, ang, strict=True)}
    fig, ax = plt.subplots(figsize=(6.5, 6.5))
    emax = float(res.edges["n_studies"].max()) if len(res.edges) else 1.0
    deg = dict.fromkeys(ts, 0)
    for e in res.edges.itertuples():
        (x1, y1), (x2, y2) = pos[e.treat1], pos[e.treat2]
        ax.plot(
            [x1, x2],
            [y1, y2],
            color="#3b6ea8",
            alpha=0.7,
            lw=0.8 + 8 * e.n_studies / emax,
            zorder=1,
        )
        ax.text(
            (x1 + x2) / 2,
            (y1 + y2) / 2,
            str(e.n_studies),
            fontsize=7,
            color="#333333",
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
        )
        deg[e.treat1] += e.n_studies
        deg[e.treat2] += e.n_studies
    dmax = max(deg.values()) or 1
    for t in ts:
        x, y = pos[t]
        ax.scatter(
            [x], [y], s=150 + 900 * deg[t] / dmax, color="#e6a23c", edgecolors="black", zorder=2
        )
        ax.text(1.3 * x, 1.3 * y, t, ha="center", va="center", fontsize=10, fontweight="bold")
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.5, 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        f"{res.n_studies} studies, {len(ts)} treatments "
        f"({res.n_multiarm} multi-arm); edge labels: studies",
        fontsize=9,
    )
    return save_figure(fig, stem)


def nma_forest(
    res: NMAResult, stem: str | Path, *, xlabel: str = "Effect vs reference", model: str = "random"
) -> list[Path]:
    """Forest plot of every treatment against the reference, ordered by P-score.

    Parameters
    ----------
    res : NMAResult
        Fitted network.
    stem : str or Path
        Output path without suffix.
    xlabel : str
        Axis label.
    model : {"random", "fixed"}
        Which model.

    Returns
    -------
    list of Path
        SVG and PNG written.
    """
    tab = res.effects_table(model)
    tab = tab[tab["treatment"] != res.reference].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(tab) + 1.4))
    ys = np.arange(len(tab))[::-1]
    ax.hlines(ys, tab["ci_lb"], tab["ci_ub"], color="black", lw=1)
    ax.scatter(tab["estimate"], ys, marker="s", color="#3b6ea8", zorder=3)
    ax.axvline(0, color="grey", ls="--", lw=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels(
        [f"{t}  (P-score {p:.2f})" for t, p in zip(tab["treatment"], tab["pscore"], strict=True)],
        fontsize=8,
    )
    ax.set_xlabel(f"{xlabel} {res.reference}")
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.set_title(f"Network meta-analysis ({model} effects, tau² = {res.tau2:.3f})", fontsize=9)
    return save_figure(fig, stem)
