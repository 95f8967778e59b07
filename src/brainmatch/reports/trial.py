"""The HTML summary of a simulated trial (arms, sites, outcomes, ground truth, one brain)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch._io import write_text
from brainmatch.errors import BrainmatchInputError
from brainmatch.reports import figure_to_data_uri, render


def _outcome_figure(outcomes: pd.DataFrame, arms: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    data = [outcomes.loc[outcomes["arm"] == a, "hamd_week8"].dropna().to_numpy() for a in arms]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(arms) + 1), arms)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, d.size), d, s=8, alpha=0.5, color="#446")
    ax.axhline(7, color="#c60", lw=0.8, ls="--", label="remission (<= 7)")
    ax.set_ylabel("HAMD-17 at week 8")
    ax.legend(loc="upper right", fontsize=8)
    return figure_to_data_uri(fig)


def _brain_figure(bold: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting
    from nilearn.image import mean_img

    from brainmatch.atlases import load_shipped_atlas, resample_labels

    mean = mean_img(str(bold), copy_header=True)
    assert isinstance(mean, nib.Nifti1Image)
    atlas = resample_labels(
        load_shipped_atlas("desikan-killiany").image, mean.shape[:3], mean.affine
    )
    data = np.asarray(atlas.dataobj)
    data = np.where(
        (data >= 1000) | np.isin(data, [10, 11, 12, 13, 17, 18, 26, 49, 50, 51, 52, 53, 54, 58]),
        data,
        0,
    )
    fig = plt.figure(figsize=(9, 3))
    plotting.plot_roi(
        nib.Nifti1Image(data.astype(np.int32), mean.affine),
        bg_img=mean,
        figure=fig,
        cmap="tab20",
        alpha=0.35,
        draw_cross=False,
        black_bg=True,
        colorbar=False,
        display_mode="ortho",
        cut_coords=(0, 10, -8),
    )
    return figure_to_data_uri(fig)


def trial_summary(dataset: str | Path) -> dict[str, Any]:
    """Compute the numbers of the trial summary from a simulated dataset folder."""
    root = Path(dataset)
    try:
        params = json.loads((root / "ground_truth.json").read_text())
        participants = pd.read_csv(root / "participants.tsv", sep="\t")
        outcomes = pd.read_csv(root / "phenotype" / "outcomes.tsv", sep="\t", na_values="n/a")
        truth = pd.read_csv(root / "ground_truth.tsv", sep="\t", na_values="n/a")
    except (OSError, ValueError) as exc:
        raise BrainmatchInputError(f"not a simulated brainmatch dataset ({exc})", root) from exc
    spec = params["spec"]
    arms = list(spec["arms"])
    merged = participants.merge(outcomes, on="participant_id")
    arm_rows = []
    for a in arms:
        sub = merged[merged["arm"] == a]
        arm_rows.append(
            {
                "arm": a,
                "n": len(sub),
                "dropouts": int(sub["hamd_week8"].isna().sum()),
                "baseline": float(sub["hamd_baseline"].mean()),
                "week8": float(sub["hamd_week8"].mean()),
                "remission": float(sub["remission"].mean())
                if sub["remission"].notna().any()
                else 0.0,
                "oracle": int((truth["oracle_arm"] == a).sum()),
            }
        )
    site_rows = []
    counts = participants["site"].value_counts()
    for s in params["sites"]:
        site_rows.append({**s, "n": int(counts.get(s["site"], 0))})
    mu = truth[[f"mu__{a}" for a in arms]].to_numpy()
    best_single = int(np.argmin(mu.mean(axis=0)))
    return {
        "spec": spec,
        "effect_size": params["effect_size"],
        "arms": arm_rows,
        "sites": site_rows,
        "adv_median": float(truth["oracle_advantage"].median()),
        "adv_share": float((truth["oracle_advantage"] >= 3).mean()),
        "best_single": arms[best_single],
        "best_single_value": float(mu[:, best_single].mean()),
        "oracle_value": float(mu.min(axis=1).mean()),
        "merged": merged,
    }


def write_trial_report(
    dataset: str | Path, out_html: str | Path, stages: list[dict[str, str]] | None = None
) -> Path:
    """Write the HTML summary of a simulated trial (one self-contained file)."""
    root = Path(dataset)
    info = trial_summary(root)
    merged = info.pop("merged")
    bolds = sorted(
        (root / "derivatives" / "fmriprep").glob("sub-*/**/func/*_desc-preproc_bold.nii.gz")
    )
    if not bolds:
        raise BrainmatchInputError("no preprocessed BOLD found under derivatives/fmriprep", root)
    html = render(
        "trial.html",
        dataset=str(root),
        outcome_figure=_outcome_figure(merged, info["spec"]["arms"]),
        brain_figure=_brain_figure(bolds[0]),
        example_subject=bolds[0].name.split("_")[0],
        stages=stages or [],
        **info,
    )
    out = Path(out_html)
    write_text(out, html)
    return out
