"""HTML reports of a trained model and of a recommendation.

Both use the report base (:mod:`brainmatch.reports`): the one template environment
(templates ``reports/templates/train.html`` and ``recommend.html`` extend ``base.html``
and its stylesheet), the shared number formatter and figures embedded as ``data:`` URIs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainmatch._io import write_text
from brainmatch.reports import figure_to_data_uri, readable_text, render
from brainmatch.selection.regions import (
    importance_by_region,
    readable_feature_name,
    region_centroids,
)

if TYPE_CHECKING:
    from brainmatch.selection.recommend import RecommendResult
    from brainmatch.selection.train import TrainResult


def tripod_rows(items: list[dict[str, Any]]) -> list[dict[str, str]]:
    """TRIPOD+AI items as readable table rows (no raw Python dicts or 16-digit floats)."""
    return [{"item": str(it["item"]), "value": readable_text(it["value"])} for it in items]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _contrast(coef: np.ndarray) -> np.ndarray:
    """Per-feature weight on the choice: arm-1 minus arm-2 (two arms) or spread across arms."""
    if coef.shape[0] == 2:
        return np.asarray(coef[0] - coef[1])
    return np.asarray(coef.std(axis=0))


#: A coefficient is drawn and listed when it is at least this share of the largest one
#: (smaller ones are shrunk to near nothing and would read as drivers).
MATERIAL_SHARE = 0.05


def material_drivers(weights: np.ndarray, n: int = 15) -> list[int]:
    """Indices of the ``n`` largest coefficients (by size) that are material: non-zero
    and at least :data:`MATERIAL_SHARE` of the largest."""
    size = np.abs(weights)
    if not size.size or size.max() <= 0:
        return []
    top = np.argsort(-size, kind="stable")[:n]
    return [int(j) for j in top if size[j] >= MATERIAL_SHARE * size.max()]


def drivers_figure(names: list[str], weights: np.ndarray, title: str, n: int = 15) -> str | None:
    plt = _plt()
    top = material_drivers(weights, n)[::-1]
    if not top:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1))
    ax.barh(
        [readable_feature_name(names[j]) for j in top],
        weights[top],
        color=["#c55" if weights[j] > 0 else "#58c" for j in top],
    )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="y", labelsize=7)
    return figure_to_data_uri(fig)


def glass_brain_figure(names: list[str], weights: np.ndarray, n: int = 30) -> str | None:
    """Regions (nodes) and connections (edges) that drive the choice; None if none are known."""
    top = np.argsort(-np.abs(weights))[:n]
    sel_names = [names[j] for j in top]
    try:
        centroids = region_centroids(sel_names)
    except Exception:
        return None
    node, edges = importance_by_region(sel_names, weights[top])
    regions = [r for r in node if r in centroids]
    if not regions:
        return None
    plt = _plt()
    from nilearn.plotting import plot_connectome

    index = {r: i for i, r in enumerate(regions)}
    adj = np.zeros((len(regions), len(regions)))
    for a, b, w in edges:
        if a in index and b in index:
            adj[index[a], index[b]] = adj[index[b], index[a]] = w
    coords = np.array([centroids[r] for r in regions])
    size = np.array([node[r] for r in regions])
    size = 30 + 200 * size / size.max()
    fig = plt.figure(figsize=(8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot_connectome(
            adj,
            coords,
            node_size=size,
            figure=fig,
            display_mode="ortho",
            edge_cmap="coolwarm",
            colorbar=bool(np.any(adj)),
            title="regions driving the choice",
            node_color="#c55",
        )
    return figure_to_data_uri(fig)


def write_train_report(result: TrainResult) -> Path:
    """Write ``report.html`` for a trained model."""
    plt = _plt()
    m = result.metrics
    p = result.predictions
    arms = m["arms"]
    figs: dict[str, str | None] = {}
    # calibration
    fig, axes = plt.subplots(1, len(arms), figsize=(3.6 * len(arms), 3.4), squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        rows = p["treatment"] == arm
        ax.scatter(p.loc[rows, f"predicted__{arm}"], p.loc[rows, "observed"], s=10, alpha=0.6)
        lo = float(min(p.loc[rows, f"predicted__{arm}"].min(), p.loc[rows, "observed"].min()))
        hi = float(max(p.loc[rows, f"predicted__{arm}"].max(), p.loc[rows, "observed"].max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"{arm} (received)", fontsize=10)
        ax.set_xlabel("predicted (out of fold)")
        ax.set_ylabel("observed")
    figs["calibration"] = figure_to_data_uri(fig)
    # observed by recommendation
    fig, ax = plt.subplots(figsize=(5, 3.4))
    match = p["treatment"] == p["recommended"]
    ax.boxplot([p.loc[match, "observed"], p.loc[~match, "observed"]])
    ax.set_xticks(
        [1, 2],
        [
            f"received recommended\n(n={int(match.sum())})",
            f"received other\n(n={int((~match).sum())})",
        ],
    )
    ax.set_ylabel(f"observed {m['options']['outcome_column']} ({m['better']} is better)")
    figs["benefit"] = figure_to_data_uri(fig)
    # advantage
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(p["advantage"], bins=30, color="#88a")
    ax.axvline(m["selection"]["threshold"], color="#c33", ls="--", label="clinical threshold")
    ax.set_xlabel("predicted advantage of the recommended arm over the next best")
    ax.legend()
    figs["advantage"] = figure_to_data_uri(fig)
    # learning curve
    lc = m.get("learning_curve") or []
    figs["learning"] = None
    if lc:
        key = "auc" if m["binary"] else "r2"
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([q["n"] for q in lc], [q[key] for q in lc], "o-", label=f"mean {key.upper()}")
        ax.plot([q["n"] for q in lc], [q["benefit_d"] for q in lc], "s-", label="benefit d")
        ax.set_xlabel("patients used")
        ax.axhline(0.5 if m["binary"] else 0.0, color="k", lw=0.6)
        ax.legend()
        figs["learning"] = figure_to_data_uri(fig)
    coef = result.extras["coef"]
    figs["drivers"] = figs["brain"] = None
    if coef is not None:
        names = result.extras["feature_names"]
        weights = _contrast(coef)
        label = (
            f"coefficient {arms[0]} minus {arms[1]} (standardised; positive: higher value "
            f"predicts a higher outcome under {arms[0]})"
            if len(arms) == 2
            else "spread of the coefficient across arms"
        )
        figs["drivers"] = drivers_figure(names, weights, label)
        figs["brain"] = glass_brain_figure(names, weights)
        drivers = [
            {"feature": names[j], "label": readable_feature_name(names[j]), "weight": weights[j]}
            for j in material_drivers(weights)
        ]
    else:
        drivers = []
    html = render(
        "train.html",
        m=m,
        figs=figs,
        drivers=drivers,
        material_share=MATERIAL_SHARE,
        linear_model=coef is not None,
        tripod=tripod_rows(m.get("tripod_ai") or []),
        other=m["per_arm_other_model"],
        other_sel=m["selection_other_model"],
    )
    path = result.out_dir / "report.html"
    write_text(path, html)
    result.report_path = path
    return path


def write_recommend_report(result: RecommendResult) -> Path:
    """Write the one-page ``report.html`` of a recommendation."""
    plt = _plt()
    model = result.model
    arms = model["arms"]
    figures = []
    for pat in result.patients:
        fig, ax = plt.subplots(figsize=(5, 0.5 * len(arms) + 1.2))
        for j, arm in enumerate(arms):
            v = pat["predicted"][arm]["value"]
            iv = pat["predicted"][arm]["interval"]
            color = "#c55" if arm == pat["recommended"] else "#779"
            if iv is not None:
                ax.plot(iv, [j, j], color=color, lw=3, alpha=0.4)
            ax.plot([v], [j], "o", color=color)
        ax.set_yticks(range(len(arms)), arms)
        ax.set_ylim(-0.6, len(arms) - 0.4)
        ax.set_xlabel(f"predicted {model['outcome']} ({model['better']} is better)")
        figures.append(figure_to_data_uri(fig))
    html = render("recommend.html", model=model, patients=result.patients, figures=figures)
    path = result.out_dir / "report.html"
    write_text(path, html)
    result.report_path = path
    return path
