"""Task runs of the ``func`` modality: a first-level GLM per run, contrasts per region.

A task run is an fMRIPrep BOLD run with a raw BIDS ``events.tsv``.  Its region means are
streamed as for resting state (:func:`~brainmatch.features.modalities.func.region_signal_steps`),
then fitted region by region exactly as nilearn's ``FirstLevelModel`` fits voxels, with
nilearn's own functions: mean scaling to percent signal change (``signal_scaling=0``),
``make_first_level_design_matrix`` (HRF, cosine drift with ``high_pass``, the
fMRIPrep confounds of ``--denoise`` as extra regressors, fMRIPrep's cosine columns left to
the drift model), ``run_glm`` (AR(1) by default) and ``compute_contrast``.  A region's
series is the mean of its voxels, so its effect is the GLM of the region mean (the test
checks it against ``FirstLevelModel`` on an image whose voxels carry those series).

Outputs per run: the design matrix (``<stem>_design.tsv``), per contrast a region table
``<stem>_seg-<atlas>_contrast-<label>_statmap.tsv`` (effect size in % signal change,
its variance, t, z, p) with JSON sidecars, and QC figures (design matrix; region z on a
glass brain).  Features ``task__<task>__<contrast>__<region>``: the effect size, averaged
over the runs of a task.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch._heap import frozen_heap
from brainmatch.errors import BrainmatchInputError
from brainmatch.features.bids import Run
from brainmatch.features.config import ExtractConfig, TaskOptions, feature_name
from brainmatch.features.denoise import load_confounds
from brainmatch.features.outputs import write_region_table, write_sidecar
from brainmatch.features.schedule import Steps


def read_events(path: Path) -> pd.DataFrame:
    """A BIDS ``events.tsv`` as nilearn takes it (onset, duration, trial_type[, modulation]).

    Raises
    ------
    BrainmatchInputError
        Unreadable file, missing ``onset`` / ``duration``, non-numeric or negative values,
        no rows.
    """
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], dtype={"trial_type": str})
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BrainmatchInputError(f"cannot read events.tsv: {exc}", path) from None
    missing = [c for c in ("onset", "duration") if c not in table.columns]
    if missing:
        raise BrainmatchInputError(
            f"events.tsv needs columns onset and duration (missing {', '.join(missing)}); "
            f"found {', '.join(map(str, table.columns))}",
            path,
        )
    out = pd.DataFrame()
    for col in ("onset", "duration"):
        values = pd.to_numeric(table[col], errors="coerce")
        bad = table.loc[values.isna() | ~np.isfinite(values.fillna(0)), col]
        if len(bad):
            raise BrainmatchInputError(
                f"events.tsv column {col!r} must hold numbers; row {int(bad.index[0]) + 1} "
                f"has {bad.iloc[0]!r}",
                path,
            )
        if (values < 0).any() and col == "duration":
            raise BrainmatchInputError("events.tsv has a negative duration", path)
        out[col] = values.astype(float)
    if "trial_type" in table.columns:
        types = table["trial_type"]
        if types.isna().any():
            row = int(types.index[types.isna()][0]) + 1
            raise BrainmatchInputError(f"events.tsv row {row} has no trial_type", path)
        out["trial_type"] = types.astype(str).str.strip()
    else:
        out["trial_type"] = "dummy"  # nilearn's name for the single condition
    if "modulation" in table.columns:
        out["modulation"] = pd.to_numeric(table["modulation"], errors="coerce").fillna(1.0)
    if out.empty:
        raise BrainmatchInputError("events.tsv holds no events", path)
    return out


def parse_contrasts(
    specs: tuple[str, ...], conditions: list[str], path: Path | None = None
) -> list[tuple[str, str]]:
    """``(name, expression)`` pairs; default one contrast per condition."""
    if not specs:
        return [(c, c) for c in conditions]
    out = []
    for spec in specs:
        name, _, expr = spec.partition("=") if "=" in spec else (spec, "", spec)
        name, expr = name.strip(), expr.strip()
        if not name or not expr:
            raise BrainmatchInputError(
                f"--contrast {spec!r}: expected 'expression' or 'name=expression'"
            )
        out.append((name, expr))
    return out


def contrast_label(name: str) -> str:
    """A contrast name as a BIDS label, nilearn style (``faces-shapes`` -> ``facesMinusShapes``)."""
    text = name.replace("-", " Minus ").replace("+", " Plus ").replace("*", " Times ")
    text = text.replace("/", " Over ").replace("=", " Equals ")
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    if not words:
        return "contrast"
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def design_matrix(
    n_volumes: int,
    tr: float,
    events: pd.DataFrame,
    options: TaskOptions,
    confounds: np.ndarray | None,
    confound_names: list[str],
) -> pd.DataFrame:
    """nilearn's first-level design matrix of one run (``slice_time_ref`` 0, as its default)."""
    from nilearn.glm.first_level import make_first_level_design_matrix

    frame_times = np.linspace(0.0, (n_volumes - 1) * tr, n_volumes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's notes on matching frame times etc.
        return make_first_level_design_matrix(
            frame_times,
            events,
            hrf_model=options.hrf_model,
            drift_model=None if options.drift_model == "none" else options.drift_model,
            high_pass=options.high_pass,
            add_regs=confounds,
            add_reg_names=confound_names if confounds is not None else None,
        )


def fit_glm(
    signals: np.ndarray,
    design: pd.DataFrame,
    contrasts: list[tuple[str, str]],
    noise_model: str,
    path: Path | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """GLM of region signals (time x regions) as nilearn's ``FirstLevelModel`` fits voxels.

    Returns per contrast name ``{"effect_size", "effect_variance", "stat", "z_score",
    "p_value"}`` (arrays over regions).
    """
    from nilearn.glm.contrasts import compute_contrast, expression_to_contrast_vector
    from nilearn.glm.first_level import run_glm
    from nilearn.glm.first_level.first_level import mean_scaling

    y, _ = mean_scaling(np.asarray(signals, dtype=np.float64), 0)
    labels, results = run_glm(y, design.to_numpy(), noise_model=noise_model)
    out = {}
    columns = list(design.columns)
    for name, expr in contrasts:
        try:
            vector = expression_to_contrast_vector(expr, columns)
        except Exception as exc:
            conditions = [c for c in columns if not c.startswith(("drift_", "constant"))]
            raise BrainmatchInputError(
                f"contrast {name!r} ({expr}) cannot be evaluated over the design columns "
                f"({type(exc).__name__}); conditions in events.tsv: "
                f"{', '.join(conditions[:12])}",
                path,
            ) from None
        con = compute_contrast(labels, results, vector, stat_type="t")
        out[name] = {
            "effect_size": np.ravel(con.effect_size()),
            "effect_variance": np.ravel(con.effect_variance()),
            "stat": np.ravel(con.stat()),
            "z_score": np.ravel(con.z_score()),
            "p_value": np.ravel(con.p_value()),
        }
    return out


def run_steps(run: Run, config: ExtractConfig) -> Steps:
    """One task run: region signals, the GLM, contrast tables, QC figures."""
    from brainmatch.features.modalities.func import _unit_folder, region_signal_steps

    assert run.events is not None
    got = yield from region_signal_steps(run, config, fingerprint=True)
    n_volumes, tr, names = got["n_volumes"], got["tr"], got["names"]
    if config.task.drift_model == "cosine" and config.task.high_pass >= 0.5 / tr:
        raise BrainmatchInputError(
            f"--task-high-pass {config.task.high_pass:g} Hz is at or above the Nyquist "
            f"frequency {0.5 / tr:g} Hz of this run (RepetitionTime {tr:g} s)",
            run.sidecar,
        )
    events = read_events(run.events)
    last = float((events["onset"]).max())
    if last > n_volumes * tr:
        raise BrainmatchInputError(
            f"events.tsv has an onset at {last:g} s, after the run ends "
            f"({n_volumes} volumes x {tr:g} s); is it this run's events file?",
            run.events,
        )
    confounds, sample_mask, conf_names = load_confounds(run.bold, config.clean, n_volumes)
    if confounds is not None and config.task.drift_model == "cosine":
        keep = [i for i, n in enumerate(conf_names) if not n.startswith("cosine")]
        confounds = confounds[:, keep] if keep else None
        conf_names = [conf_names[i] for i in keep]
    design = design_matrix(n_volumes, tr, events, config.task, confounds, list(conf_names))
    signals = got["signals"]
    if sample_mask is not None:
        design = design.iloc[sample_mask]
        signals = signals[sample_mask]
    conditions = sorted(events["trial_type"].unique().tolist())
    contrasts = parse_contrasts(config.task.contrasts, conditions, run.events)
    stats = fit_glm(signals, design, contrasts, config.task.noise_model, run.events)
    folder = config.output_dir / _unit_folder(run)
    stem = run.stem
    outputs: list[Path] = []
    design_path = folder / f"{stem}_design.tsv"
    write_region_table(
        design_path,
        {c: [float(v) for v in design[c].to_numpy()] for c in design.columns},
    )
    write_sidecar(
        design_path,
        {
            "Description": "First-level design matrix (nilearn make_first_level_design_matrix)",
            "HRFModel": config.task.hrf_model,
            "DriftModel": config.task.drift_model,
            "HighPass": config.task.high_pass,
            "RepetitionTime": tr,
            "Confounds": list(conf_names),
            "VolumesUsed": len(design),
            "Sources": [str(run.bold), str(run.events)],
        },
    )
    outputs.append(design_path)
    task = feature_name(run.entities.get("task", "task"))
    feats: dict[str, float] = {}
    for name, _ in contrasts:
        st = stats[name]
        path = folder / f"{stem}_seg-{config.seg}_contrast-{contrast_label(name)}_statmap.tsv"
        write_region_table(
            path,
            {
                "index": got["labels"],
                "name": names,
                "effect_size": [float(v) for v in st["effect_size"]],
                "effect_variance": [float(v) for v in st["effect_variance"]],
                "t": [float(v) for v in st["stat"]],
                "z_score": [float(v) for v in st["z_score"]],
                "p_value": [float(v) for v in st["p_value"]],
            },
        )
        write_sidecar(
            path,
            {
                "Description": f"First-level GLM contrast {name!r} per {config.atlas.name} "
                "region (region-mean signal, nilearn FirstLevelModel semantics)",
                "Contrast": name,
                "EffectSizeUnits": "percent signal change",
                "NoiseModel": config.task.noise_model,
                "Atlas": config.atlas.name,
            },
        )
        outputs.append(path)
        for region, v in zip(names, st["effect_size"].tolist(), strict=True):
            feats[f"task__{task}__{feature_name(name)}__{feature_name(region)}"] = float(v)
    if config.task.qc_figures:
        with frozen_heap():  # nilearn collects garbage for every image it loads
            outputs += _qc_figures(run, config, design, stats, got, folder)
    return {
        "features": feats,
        "outputs": [str(p.relative_to(config.output_dir)) for p in outputs],
        "fingerprint": got["fingerprint"],
        "task": task,
        "contrasts": [n for n, _ in contrasts],
        "n_kept": len(design),
    }


def _qc_figures(
    run: Run,
    config: ExtractConfig,
    design: pd.DataFrame,
    stats: dict[str, dict[str, np.ndarray]],
    got: dict[str, Any],
    folder: Path,
) -> list[Path]:
    """Design-matrix image and, per contrast, region z on a glass brain (SVG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn.plotting import plot_design_matrix, plot_glass_brain

    from brainmatch._io import write_text
    from brainmatch.atlases import resample_atlas, template_grid

    def save(fig: Any, path: Path) -> Path:
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
        plt.close(fig)
        write_text(path, buf.getvalue())
        return path

    out = []
    ax = plot_design_matrix(design)
    out.append(save(ax.figure, folder / f"{run.stem}_design.svg"))
    shape, affine = template_grid(4)
    labels3d = resample_atlas(
        config.atlas, shape, affine, config.atlas_digest, cache=config.cache_dir
    )
    lut = np.zeros(int(labels3d.max()) + 1)
    for name, st in stats.items():
        lut[:] = 0.0
        for label, z in zip(got["labels"], st["z_score"], strict=True):
            if label < len(lut):
                lut[label] = z
        img = nib.Nifti1Image(lut[labels3d].astype(np.float32), affine)
        fig = plt.figure(figsize=(7, 2.6))
        vmax = float(np.nanmax(np.abs(st["z_score"]))) if np.isfinite(st["z_score"]).any() else 1.0
        plot_glass_brain(
            img,
            figure=fig,
            plot_abs=False,
            colorbar=True,
            vmax=max(vmax, 1e-6),
            title=f"{name}: region z",
        )
        out.append(save(fig, folder / f"{run.stem}_contrast-{contrast_label(name)}_glassbrain.svg"))
    return out


def unit_task_steps(runs: list[Run], config: ExtractConfig) -> Steps:
    """Task GLMs of a unit's task runs; effect sizes averaged over runs of a task."""
    results = []
    hashes: dict[str, Any] = {}
    for run in runs:
        res = yield from run_steps(run, config)
        results.append(res)
        hashes[str(run.bold)] = res["fingerprint"]
    values: dict[str, list[float]] = {}
    for res in results:
        for k, v in res["features"].items():
            values.setdefault(k, []).append(v)
    return {
        "features": {k: (v[0] if len(v) == 1 else float(np.mean(v))) for k, v in values.items()},
        "outputs": [o for res in results for o in res["outputs"]],
        "hashes": hashes,
        "runs": [
            {
                "bold": str(r.bold),
                "task": res["task"],
                "contrasts": res["contrasts"],
                "n_kept": res["n_kept"],
            }
            for r, res in zip(runs, results, strict=True)
        ],
    }


__all__ = [
    "contrast_label",
    "design_matrix",
    "fit_glm",
    "parse_contrasts",
    "read_events",
    "run_steps",
    "unit_task_steps",
]
