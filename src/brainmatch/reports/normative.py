"""HTML reports of normative fits and scores (rendered from the result objects).

They use the report base (:mod:`brainmatch.reports`): the one template environment
(``reports/templates/normative_*.html`` and ``profile.html`` extend ``base.html``) and
the shared number formatter.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainmatch import reports
from brainmatch._io import write_text
from brainmatch.reports import figure_to_data_uri, fmt_value

if TYPE_CHECKING:
    from brainmatch.normative.analysis import NormativeFitResult, NormativeScoreResult

#: Numbers for humans: the shared formatter of the report base.
fmt = fmt_value


def plt_module() -> Any:
    """matplotlib.pyplot with the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render(template: str, **context: Any) -> str:
    """Render a template of ``reports/templates`` through the one report environment."""
    return reports.render(template, **context)


def _calibration_figure(metrics: Any) -> str | None:
    if metrics is None or len(metrics) == 0 or "share_abs_z_below_1_96" not in metrics:
        return None
    plt = plt_module()
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
    axes[0].hist(metrics["mean_z"], bins=40, color="#58c")
    axes[0].set_title("mean z per feature", fontsize=9)
    axes[1].hist(metrics["sd_z"], bins=40, color="#58c")
    axes[1].set_title("SD of z per feature", fontsize=9)
    axes[2].hist(metrics["share_abs_z_below_1_96"], bins=40, color="#58c")
    axes[2].axvspan(0.93, 0.97, color="#9c9", alpha=0.4)
    axes[2].set_title("share |z| < 1.96 (target 0.93-0.97)", fontsize=9)
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.suptitle("held-out controls", fontsize=10)
    return figure_to_data_uri(fig)


def write_fit_report(result: NormativeFitResult, path: Path) -> Path:
    """The fit's report: data, calibration on held-out controls, worst features, warnings."""
    m = result.fit_metrics
    worst = []
    if len(m):
        dev = (m["share_abs_z_below_1_96"] - 0.95).abs()
        worst = m.assign(_d=dev).sort_values("_d", ascending=False).head(15).to_dict("records")
    html = render(
        "normative_fit.html",
        s=result.summary,
        warnings=result.warnings,
        figure=_calibration_figure(m),
        worst=worst,
        medians={
            k: float(np.nanmedian(m[k])) for k in ("explained_variance", "msll", "smse", "rho")
        }
        if len(m)
        else {},
    )
    write_text(path, html)
    result.report_path = path
    return path


def write_score_report(result: NormativeScoreResult, path: Path) -> Path:
    """The score's report: per person extreme counts and circuit calls, warnings."""
    c = result.circuits
    called = c[c["call"] != ""].sort_values("mean_z", key=lambda s: -s.abs()).head(60)
    html = render(
        "normative_score.html",
        people=result.people.head(200).to_dict("records"),
        n_people=len(result.people),
        called=called.to_dict("records"),
        warnings=result.warnings,
        model=result.model_summary,
    )
    write_text(path, html)
    result.report_path = path
    return path


# --- the patient profile --------------------------------------------------------------------
_SCORE_TITLES = {
    "activity": "activity",
    "within": "connectivity within the circuit",
    "between": "connectivity with other circuits",
    "structure": "structure (volume / thickness)",
}


def circuit_figure(circuits: Any, threshold: float) -> str | None:
    """Bars of each circuit's mean deviation z with a 95% interval (under independence),
    one panel per measure; under-active / smaller in blue, over-active / larger in red."""
    if circuits is None or len(circuits) == 0:
        return None
    plt = plt_module()
    scores = [s for s in _SCORE_TITLES if (circuits["score"] == s).any()]
    fig, axes = plt.subplots(
        1,
        len(scores),
        figsize=(3.2 * len(scores), 0.32 * circuits["circuit"].nunique() + 1.4),
        sharey=True,
        squeeze=False,
    )
    labels = list(dict.fromkeys(circuits["circuit_label"]))
    for ax, score in zip(axes[0], scores, strict=True):
        sub = circuits[circuits["score"] == score].set_index("circuit_label").reindex(labels)
        z = sub["mean_z"].to_numpy(float)
        err = 1.96 * sub["se"].to_numpy(float)
        colours = ["#3b6fb6" if v < 0 else "#c8443b" for v in np.nan_to_num(z)]
        y = np.arange(len(labels))
        ax.barh(y, np.nan_to_num(z), xerr=np.nan_to_num(err), color=colours, alpha=0.85)
        for lim in (-threshold, threshold):
            ax.axvline(lim, color="#888", lw=0.8, ls="--")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(_SCORE_TITLES[score], fontsize=9)
        ax.set_xlabel("mean deviation z", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        lim = max(
            2.5, float(np.nanmax(np.abs(z) + np.nan_to_num(err))) if np.isfinite(z).any() else 2.5
        )
        ax.set_xlim(-lim, lim)
    fig.tight_layout()
    return figure_to_data_uri(fig)


@functools.lru_cache(maxsize=1)
def _region_centroids() -> dict[tuple[str, str], tuple[float, float, float]]:
    """MNI centroid of each circuit region per side, from the Desikan-Killiany atlas."""
    from brainmatch.atlases import load_atlas
    from brainmatch.circuits import region_of

    atlas = load_atlas("desikan-killiany")
    data = np.asarray(atlas.image.dataobj).astype(np.int64)
    ijk = np.nonzero(data > 0)
    labels = data[ijk]
    counts = np.bincount(labels)
    sums = np.stack([np.bincount(labels, weights=axis) for axis in ijk], axis=1)
    acc: dict[tuple[str, str], list[np.ndarray]] = {}
    for value, name in zip(atlas.labels["index"], atlas.labels["name"], strict=True):
        label = int(value)
        if label >= counts.size or counts[label] == 0:
            continue
        feature = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9]+", "_", str(name))).strip("_")
        found = region_of(feature)
        if found is None:
            continue
        for region in found[0]:
            acc.setdefault((region, found[1]), []).append(np.r_[sums[label], counts[label]])
    out: dict[tuple[str, str], tuple[float, float, float]] = {}
    for pair, parts in acc.items():
        total = np.sum(parts, axis=0)
        centre = np.r_[total[:3] / total[3], 1.0] @ atlas.image.affine[:3].T
        out[pair] = (float(centre[0]), float(centre[1]), float(centre[2]))
    return out


def glass_brain_figure(deviations: Any) -> str | None:
    """Glass brain of the circuit regions, coloured by the patient's mean activity deviation
    (structure where there is no activity feature); None if no region is known."""
    from brainmatch.circuits import parse_feature

    row = deviations.drop(columns=["participant_id"]).iloc[0]
    per: dict[tuple[str, str], dict[str, list[float]]] = {}
    for col, value in row.items():
        info = parse_feature(str(col))
        if info is None or info.kind == "connectivity" or not np.isfinite(value):
            continue
        for key in info.regions[0]:
            per.setdefault((key, info.sides[0]), {}).setdefault(info.kind, []).append(float(value))
    if not per:
        return None
    try:
        centroids = _region_centroids()
    except Exception:
        return None
    nodes, values = [], []
    for pair, kinds in per.items():
        if pair not in centroids:
            continue
        vals = kinds.get("activity") or kinds.get("structure")
        if vals:
            nodes.append(centroids[pair])
            values.append(float(np.mean(vals)))
    if not nodes:
        return None
    import warnings

    plt = plt_module()
    from nilearn.plotting import plot_markers

    fig = plt.figure(figsize=(8, 2.8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot_markers(
            np.array(values),
            np.array(nodes),
            node_size=[30 + 40 * min(abs(v), 3) for v in values],
            node_cmap="coolwarm",
            node_vmin=-3,
            node_vmax=3,
            figure=fig,
            display_mode="lyrz",
            title="regional deviation z (blue: below the norm, red: above)",
        )
    return figure_to_data_uri(fig)


def write_profile_report(profile: Any, path: Path) -> Path:
    """One page: circuit deviations, hypotheses (with grades and citations), the validated
    selection model's prediction (separate), caveats."""
    html = render(
        "profile.html",
        p=profile,
        person=profile.person,
        circuit_fig=circuit_figure(profile.circuits, profile.threshold),
        brain_fig=glass_brain_figure(profile.deviations),
        called=profile.circuits[profile.circuits["call"] != ""]
        .sort_values("mean_z", key=lambda s: -s.abs())
        .to_dict("records"),
    )
    write_text(path, html)
    profile.report_path = path
    return path
