"""Figures of a session-level analysis (matplotlib Agg; used by the report only)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from brainmatch.sessions.analysis import SessionsResult

_COLOURS = {0.0: "#4477aa", 1.0: "#cc6677"}


def trajectories(res: SessionsResult, max_lines: int = 60) -> Figure:
    """Each participant's fear at the start and end of each session, with fitted curves.

    Thin lines: participants (up to ``max_lines`` per arm); thick lines: the trajectory
    model's fitted mean fear at the start of each session by condition (control /
    augmented), with its CI band for the difference shown as a second panel.
    """
    d = res.data
    assert d is not None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    for active, g in d.groupby("active"):
        ids = list(dict.fromkeys(g["participant_id"]))[:max_lines]
        for pid in ids:
            p = g[g["participant_id"] == pid]
            x = np.repeat(p["session_number"].to_numpy(float), 2) + np.tile([0.0, 0.6], len(p))
            y = np.column_stack([p["fear_start"], p["fear_end"]]).ravel()
            ax.plot(x, y, color=_COLOURS.get(float(active), "grey"), alpha=0.18, lw=0.7)
    per = res.per_session[res.per_session["outcome"] == "fear_start"]
    for col, active, label in (
        ("fitted_control", 0.0, "control (fitted)"),
        ("fitted_active", 1.0, "augmented arm (fitted)"),
    ):
        ax.plot(per["session"], per[col], color=_COLOURS[active], lw=2.6, marker="o", label=label)
    ax.set_xlabel("session (start -> end)")
    ax.set_ylabel("fear (SUDS)")
    ax.set_title("Participants' fear within and between sessions")
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    ax.axhline(0, color="black", lw=0.8)
    ax.errorbar(
        per["session"],
        per["effect"],
        yerr=[per["effect"] - per["ci_lb"], per["ci_ub"] - per["effect"]],
        fmt="o",
        color=_COLOURS[1.0],
        capsize=3,
    )
    ax.set_xlabel("session")
    ax.set_ylabel("augmented - control, fear at start")
    ax.set_title("Augmentation effect per session")
    fig.tight_layout()
    return fig


def moderators(res: SessionsResult) -> Figure:
    """Forest plot of the within- and between-session fixed effects (intercepts omitted)."""
    tab = res.moderators()
    tab = tab[tab["term"] != "Intercept"].iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(tab) + 1.2))
    y = np.arange(len(tab))
    colours = ["#4477aa" if m == "within" else "#228833" for m in tab["model"]]
    for yi, lo, hi, c in zip(y, tab["ci_lb"], tab["ci_ub"], colours, strict=True):
        ax.plot([lo, hi], [yi, yi], color=c, lw=1.4)
    ax.scatter(tab["estimate"], y, c=colours, zorder=3, s=18)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(
        y, [f"{m}: {t}" for m, t in zip(tab["model"], tab["term"], strict=True)], fontsize=8
    )
    ax.set_xlabel("SUDS points (within: more reduction; between: more return of fear)")
    fig.tight_layout()
    return fig


def dose_response(res: SessionsResult) -> Figure | None:
    """Final symptom score by the number of augmented sessions received (completers)."""
    if res.dose_response is None:
        return None
    by = pd.DataFrame(res.dose_response["by_doses"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    se = by["sd"] / np.sqrt(by["n"])
    ax.errorbar(by["n_augmented_sessions"], by["mean"], yerr=1.96 * se, fmt="o-", capsize=3)
    for x, yv, n in zip(by["n_augmented_sessions"], by["mean"], by["n"], strict=True):
        ax.annotate(f"n={int(n)}", (x, yv), textcoords="offset points", xytext=(4, 6), fontsize=7)
    ax.set_xlabel("augmented sessions received")
    ax.set_ylabel("final symptom score (mean, 95% CI)")
    fig.tight_layout()
    return fig
