"""Simulate a session-level augmentation trial with known truth.

The generative model follows what published session-level analyses found, and has the
form of the mixed models ``brainmatch sessions`` fits, so its estimates can be checked
against the truth:

- **Within-session extinction** (Smits et al. 2013): fear falls during each exposure
  session by ``reduction = fear_start - fear_end``, more when the session starts higher,
  after exercise right before the session, and earlier in the day (Meuret et al. 2016).
- **Between-session carry-over** ("consolidation"): fear at the start of the next session
  minus fear at the end of this one (``return_of_fear``).  The augmentation lowers it
  only after successful sessions (Smits et al. 2013: an interaction with the session's
  fear reduction, no main effect), and more when dosed more than 60 minutes before the
  session (Rosenfield et al. 2019); later sessions and no exercise give more return of
  fear; participants with stronger baseline vmPFC-amygdala connectivity retain extinction
  better, and gain less from the augmentation (a prescriptive brain marker that
  ``brainmatch train`` can learn).
- Each participant has random intercepts and session slopes in both processes; ratings
  are whole SUDS points within 0-100; dropout after a session is more likely when fear
  stayed high (missing at random given the observed ratings).
- The weekly symptom score after each session follows the fear at the start of the next
  session; the final outcome is the score after the last session.

Every participant's final score under **both** arms (the same random draws, no dropout)
is in ``ground_truth.tsv``; the true coefficients of every model term are in
``ground_truth.json``.  ``effect_size`` scales the augmentation effects (Nord et al. 2023
pooled g = -0.27; the default gives about that); ``moderators=False`` sets every planted
moderator effect (augmentation, timing window, time of day, exercise, brain) to zero.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch import __version__
from brainmatch._io import write_json, write_text, write_tsv
from brainmatch.errors import BrainmatchInputError
from brainmatch.sessions.schema import AUGMENTATION_TYPES

GENERATOR = "brainmatch simulate-sessions"
BRAIN = "conn_vmpfc_amygdala"

#: dose and unit written for each augmentation type (placebo sessions get dose 0)
_DOSES: dict[str, tuple[float | None, str | None]] = {
    "nmda": (50.0, "mg"),
    "pharmacological": (40.0, "mg"),
    "psychedelic": (25.0, "mg"),
    "brain_stimulation": (None, None),
    "exercise": (None, None),
    "sleep_circadian": (None, None),
    "other": (None, None),
}


def default_truth(effect_size: float = 1.0, moderators: bool = True) -> dict[str, dict[str, float]]:
    """True fixed effects of the within- and between-session models.

    Parameters
    ----------
    effect_size : float
        Multiplies the augmentation terms.
    moderators : bool
        False sets every planted moderator to zero (the null simulation).

    Returns
    -------
    dict
        ``{"within": {term: value}, "between": {term: value}}`` with the term names
        :func:`brainmatch.sessions.analysis.analyse_sessions` uses (SUDS points; session
        counted from 0 at the first session; time of day in hours from noon; success in
        10-point units of within-session reduction; brain marker in SD units).
    """
    m = 1.0 if moderators else 0.0
    e = effect_size * m
    within = {
        "Intercept": 18.0,
        "session": 0.0,
        "start_c": 0.5,
        "augmented": 0.0,
        "exercise": 4.0 * m,
        "tod_c": -0.6 * m,
    }
    between = {
        "Intercept": 10.0,
        "session": -0.3,
        "success": 1.5,
        "augmented": 0.0,
        "augmented:success": -1.0 * e,
        "window": 0.0,
        "augmented:window": -2.5 * e,
        "exercise": -2.0 * m,
        "tod_c": 0.5 * m,
        BRAIN: -1.0 * m,
        f"augmented:{BRAIN}": 1.0 * e,
    }
    return {"within": within, "between": between}


@dataclass(frozen=True)
class SessionTrialSpec:
    """Options of a simulated session-level augmentation trial.

    Parameters
    ----------
    n_per_arm : int
        Participants randomised to each arm.
    n_sessions : int
        Exposure sessions per participant (weekly).
    augmentation_type : str
        One of the schema's augmentation types (``nmda``: D-cycloserine-like).
    timing : {"before", "during", "after"}
        When the augmentation is given; the > 60 min window applies to ``before``.
    effect_size : float
        Multiplier of the augmentation effects (0: no augmentation effect).
    moderators : bool
        False: no planted moderator effect at all (null simulation).
    dose_probability : float
        Chance that an active-arm session is augmented (missed / withheld doses give the
        spread in the number of doses that dose-response analyses use).
    dropout : float
        Expected share of participants who stop before the last session.
    seed : int
        Random seed; the same seed gives the same trial.
    study : str
        Study label written into the table.
    arms : (str, str)
        Names of the control and the active arm.
    """

    n_per_arm: int = 40
    n_sessions: int = 8
    augmentation_type: str = "nmda"
    timing: str = "before"
    effect_size: float = 1.0
    moderators: bool = True
    dose_probability: float = 0.8
    dropout: float = 0.1
    seed: int = 0
    study: str = "trial"
    arms: tuple[str, str] = ("placebo", "active")
    sd: dict[str, float] = field(
        default_factory=lambda: {
            "within_intercept": 3.0,
            "within_slope": 0.5,
            "within_residual": 5.0,
            "between_intercept": 3.0,
            "between_slope": 0.5,
            "between_residual": 4.0,
            "start": 10.0,
            "symptom_person": 3.0,
            "symptom_residual": 2.0,
        }
    )

    def validate(self) -> None:
        """Raise :class:`BrainmatchInputError` naming the bad option."""
        if self.n_per_arm < 3:
            raise BrainmatchInputError("--n-per-arm must be at least 3")
        if self.n_sessions < 2:
            raise BrainmatchInputError("--n-sessions must be at least 2")
        if self.augmentation_type not in AUGMENTATION_TYPES:
            raise BrainmatchInputError(
                f"--augmentation-type {self.augmentation_type!r} is unknown; use one of "
                f"{', '.join(AUGMENTATION_TYPES)}"
            )
        if self.timing not in ("before", "during", "after"):
            raise BrainmatchInputError(f"--timing {self.timing!r}: use before, during or after")
        if not 0 < self.dose_probability <= 1:
            raise BrainmatchInputError("--dose-probability must lie in (0, 1]")
        if not 0 <= self.dropout < 1:
            raise BrainmatchInputError("--dropout must lie in [0, 1)")
        if len(self.arms) != 2 or self.arms[0] == self.arms[1]:
            raise BrainmatchInputError("--arms needs two different names: CONTROL,ACTIVE")


@dataclass
class SessionTrial:
    """A simulated trial: the session table, participant tables and the truth."""

    spec: SessionTrialSpec
    sessions: pd.DataFrame
    participants: pd.DataFrame
    features: pd.DataFrame
    outcomes: pd.DataFrame
    truth: pd.DataFrame
    truth_params: dict[str, Any]


def _participant(
    spec: SessionTrialSpec, i: int, truth: dict[str, dict[str, float]]
) -> tuple[dict[str, Any], dict[int, dict[str, np.ndarray]]]:
    """Random draws of participant ``i`` and its trajectories under both arms."""
    rng = np.random.default_rng([spec.seed, 11, i])
    k_n = spec.n_sessions
    sd = spec.sd
    draws = {
        "conn": rng.standard_normal(),
        "start1": 72 + sd["start"] * rng.standard_normal(),
        "uw": rng.standard_normal(2) * [sd["within_intercept"], sd["within_slope"]],
        "ub": rng.standard_normal(2) * [sd["between_intercept"], sd["between_slope"]],
        "person": sd["symptom_person"] * rng.standard_normal(),
        "ew": sd["within_residual"] * rng.standard_normal(k_n),
        "eb": sd["between_residual"] * rng.standard_normal(k_n),
        "es": sd["symptom_residual"] * rng.standard_normal(k_n),
        "tod": np.round(rng.uniform(8.0, 19.0, k_n) * 4) / 4,
        "exercise": (rng.uniform(size=k_n) < 0.3).astype(float),
        "ex_minutes": np.round(rng.uniform(10, 30, k_n) / 5) * 5,
        "minutes": rng.uniform(0, 150, k_n) if spec.timing == "before" else rng.uniform(0, 60, k_n),
        "dose_u": rng.uniform(size=k_n),
        "drop_u": rng.uniform(size=k_n),
        "peak": np.abs(rng.normal(0, 8, k_n)),
        "cortisol": rng.normal(0, 0.3, k_n),
        "age": rng.integers(18, 66),
        "sex": rng.choice(["F", "M"]),
    }
    draws["minutes"] = np.round(draws["minutes"] / 5) * 5
    draws["window"] = ((draws["minutes"] > 60) & (spec.timing == "before")).astype(float)
    tw, tb = truth["within"], truth["between"]
    conn = float(draws["conn"])
    paths: dict[int, dict[str, np.ndarray]] = {}
    for active in (0, 1):
        aug = active * (draws["dose_u"] < spec.dose_probability).astype(float)
        start = np.empty(k_n + 1)
        end = np.empty(k_n)
        start[0] = float(np.clip(np.round(draws["start1"]), 30, 100))
        for k in range(k_n):
            s0 = float(k)
            red = (
                tw["Intercept"]
                + tw["session"] * s0
                + tw["start_c"] * (start[k] - 50)
                + tw["augmented"] * aug[k]
                + tw["exercise"] * draws["exercise"][k]
                + tw["tod_c"] * (draws["tod"][k] - 12)
                + draws["uw"][0]
                + draws["uw"][1] * s0
                + draws["ew"][k]
            )
            end[k] = float(np.clip(np.round(start[k] - red), 0, 100))
            success = (start[k] - end[k]) / 10
            ret = (
                tb["Intercept"]
                + tb["session"] * s0
                + tb["success"] * success
                + tb["augmented"] * aug[k]
                + tb["augmented:success"] * aug[k] * success
                + tb["window"] * draws["window"][k]
                + tb["augmented:window"] * aug[k] * draws["window"][k]
                + tb["exercise"] * draws["exercise"][k]
                + tb["tod_c"] * (draws["tod"][k] - 12)
                + tb[BRAIN] * conn
                + tb[f"augmented:{BRAIN}"] * aug[k] * conn
                + draws["ub"][0]
                + draws["ub"][1] * s0
                + draws["eb"][k]
            )
            start[k + 1] = float(np.clip(np.round(end[k] + ret), 0, 100))
        symptom = np.clip(
            np.round(4 + 0.25 * start[1:] + draws["person"] + draws["es"], 1), 0, None
        )
        paths[active] = {"aug": aug, "start": start, "end": end, "symptom": symptom}
    return draws, paths


def draw_session_trial(spec: SessionTrialSpec) -> SessionTrial:
    """Draw a whole trial (tables in memory; nothing is written).

    Parameters
    ----------
    spec : SessionTrialSpec
        The options.

    Returns
    -------
    SessionTrial
    """
    spec.validate()
    truth = default_truth(spec.effect_size, spec.moderators)
    n = 2 * spec.n_per_arm
    k_n = spec.n_sessions
    arm_rng = np.random.default_rng([spec.seed, 3])
    assign = arm_rng.permutation(np.repeat([0, 1], spec.n_per_arm))
    hazard = 1 - (1 - spec.dropout) ** (1 / max(k_n - 1, 1)) if spec.dropout > 0 else 0.0
    base_logit = np.log(hazard / (1 - hazard)) if hazard > 0 else -np.inf
    dose, unit = _DOSES[spec.augmentation_type]
    rows: list[dict[str, Any]] = []
    people, feats, outs, gts = [], [], [], []
    width = max(3, len(str(n)))
    for i in range(n):
        pid = f"sub-{i + 1:0{width}d}"
        draws, paths = _participant(spec, i, truth)
        active = int(assign[i])
        obs = paths[active]
        last = k_n - 1
        for k in range(k_n - 1):
            logit = base_logit + 0.03 * (obs["end"][k] - 30)
            if draws["drop_u"][k] < 1 / (1 + np.exp(-logit)):
                last = k
                break
        date0 = pd.Timestamp("2025-01-06") + pd.Timedelta(days=int(i % 5))
        for k in range(last + 1):
            tod = float(draws["tod"][k])
            when = date0 + pd.Timedelta(days=7 * k) + pd.Timedelta(minutes=round(tod * 60))
            aug = int(obs["aug"][k])
            ex = bool(draws["exercise"][k])
            rows.append(
                {
                    "participant_id": pid,
                    "arm": spec.arms[active],
                    "session": k + 1,
                    "datetime": when.strftime("%Y-%m-%dT%H:%M"),
                    "time_of_day": when.strftime("%H:%M"),
                    "augmented": aug,
                    "augmentation_type": spec.augmentation_type,
                    "dose": (dose if aug else 0.0) if dose is not None else None,
                    "dose_unit": unit,
                    "timing": spec.timing,
                    "timing_minutes": float(draws["minutes"][k]),
                    "exercise_type": "aerobic" if ex else "none",
                    "exercise_minutes": float(draws["ex_minutes"][k]) if ex else 0.0,
                    "exercise_intensity": "moderate" if ex else "none",
                    "fear_start": int(obs["start"][k]),
                    "fear_peak": int(
                        min(100, max(obs["start"][k], obs["end"][k]) + round(draws["peak"][k]))
                    ),
                    "fear_end": int(obs["end"][k]),
                    "symptom_score": float(obs["symptom"][k]),
                    "cortisol": round(
                        float(15 * np.exp(-0.12 * (tod - 8) + draws["cortisol"][k])), 2
                    ),
                    "imaging_session": "ses-pre"
                    if k == 0
                    else ("ses-post" if k == k_n - 1 else None),
                }
            )
        people.append(
            {
                "participant_id": pid,
                "arm": spec.arms[active],
                "age": int(draws["age"]),
                "sex": str(draws["sex"]),
                "study": spec.study,
            }
        )
        feats.append(
            {
                "participant_id": pid,
                BRAIN: round(float(draws["conn"]), 4),
            }
        )
        outs.append(
            {
                "participant_id": pid,
                "symptom_final": float(obs["symptom"][k_n - 1]) if last == k_n - 1 else None,
                "sessions_attended": last + 1,
                "n_augmented": int(obs["aug"][: last + 1].sum()),
            }
        )
        y0, y1 = float(paths[0]["symptom"][-1]), float(paths[1]["symptom"][-1])
        gts.append(
            {
                "participant_id": pid,
                "arm": spec.arms[active],
                BRAIN: float(draws["conn"]),
                f"symptom_final__{spec.arms[0]}": y0,
                f"symptom_final__{spec.arms[1]}": y1,
                "true_effect": y1 - y0,
                "oracle_arm": spec.arms[1] if y1 < y0 else spec.arms[0],
                "dropout_after_session": (last + 1) if last < k_n - 1 else None,
            }
        )
    gt = pd.DataFrame(gts)
    y0 = gt[f"symptom_final__{spec.arms[0]}"].to_numpy()
    y1 = gt[f"symptom_final__{spec.arms[1]}"].to_numpy()
    params = {
        "generator": GENERATOR,
        "version": __version__,
        "spec": spec_dict(spec),
        "coefficients": truth,
        "final_outcome": {
            "mean_difference": float(np.mean(y1 - y0)),
            "smd": float(np.mean(y1 - y0) / np.sqrt((np.var(y0, ddof=1) + np.var(y1, ddof=1)) / 2)),
            "description": "sample average of each participant's final symptom score under the "
            "active arm minus under control (same random draws, no dropout); smd divides by "
            "the pooled SD of the two potential outcomes",
        },
        "units": {
            "session": "sessions since the first (0 at session 1)",
            "start_c": "SUDS points of fear_start above 50",
            "tod_c": "hours after 12:00",
            "success": "within-session fear reduction, per 10 SUDS points",
            "window": "placebo or augmentation given more than 60 min before the session",
            BRAIN: "baseline vmPFC-amygdala connectivity, SD units",
        },
    }
    return SessionTrial(
        spec=spec,
        sessions=pd.DataFrame(rows),
        participants=pd.DataFrame(people),
        features=pd.DataFrame(feats),
        outcomes=pd.DataFrame(outs),
        truth=gt,
        truth_params=params,
    )


def spec_dict(spec: SessionTrialSpec) -> dict[str, Any]:
    """The spec as a JSON-ready dict."""
    d = asdict(spec)
    d["arms"] = list(spec.arms)
    return d


def _is_own_output(path: Path) -> bool:
    try:
        desc = json.loads((path / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    gen = desc.get("GeneratedBy") or [{}]
    return (path / "ground_truth.json").exists() and gen[0].get("Name") == GENERATOR


_SIDECAR = {
    "participant_id": "participant label",
    "arm": "randomised arm",
    "session": "exposure session number (weekly)",
    "datetime": "session start",
    "time_of_day": "session start (HH:MM)",
    "augmented": "1 when the active augmentation was given at this session",
    "augmentation_type": "augmentation type (brainmatch augmentation schema)",
    "dose": "dose given (0 for placebo)",
    "timing": "when the augmentation / placebo was given relative to the session",
    "timing_minutes": "minutes between augmentation and session",
    "exercise_type": "exercise right before the session",
    "exercise_minutes": "minutes of exercise",
    "exercise_intensity": "intensity of exercise",
    "fear_start": "SUDS (0-100) at the start of the session",
    "fear_peak": "peak SUDS during the session",
    "fear_end": "SUDS at the end of the session",
    "symptom_score": "weekly symptom score after the session",
    "cortisol": "salivary cortisol before the session (nmol/L)",
    "imaging_session": "BIDS session of the linked scan",
}


def simulate_session_trial(
    spec: SessionTrialSpec, out_dir: str | Path, *, overwrite: bool = False
) -> Path:
    """Simulate a trial and write it into ``out_dir``.

    Layout::

        OUT/dataset_description.json  README
            sessions.tsv (+ .json)       one row per participant x session (the schema)
            participants.tsv             arm, age, sex, study
            features.tsv                 baseline brain marker(s), for ``brainmatch train``
            phenotype/outcomes.tsv       final symptom score, sessions attended, doses
            ground_truth.json / .tsv     true coefficients; potential outcomes per participant

    Parameters
    ----------
    spec : SessionTrialSpec
        The options.
    out_dir : str or Path
        New or empty folder, or (with ``overwrite``) an earlier output of this command.
    overwrite : bool
        Replace an earlier ``brainmatch simulate-sessions`` output.

    Returns
    -------
    Path
        ``out_dir``.
    """
    spec.validate()
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise BrainmatchInputError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise BrainmatchInputError(
                "folder is not empty; choose a new folder or pass --overwrite to replace an "
                "earlier brainmatch simulate-sessions output",
                out,
            )
        if not _is_own_output(out):
            raise BrainmatchInputError(
                "folder is not empty and was not written by brainmatch simulate-sessions; "
                "refusing to replace it even with --overwrite",
                out,
            )
    trial = draw_session_trial(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write_json(
            staging / "dataset_description.json",
            {
                "Name": f"Simulated session-level augmentation trial ({spec.study})",
                "BIDSVersion": "1.9.0",
                "DatasetType": "raw",
                "GeneratedBy": [{"Name": GENERATOR, "Version": __version__}],
            },
        )
        write_text(
            staging / "README",
            f"Simulated by {GENERATOR} {__version__} (seed {spec.seed}); see "
            f"ground_truth.json for the true coefficients and ground_truth.tsv for each "
            f"participant's final score under both arms.\n",
        )
        write_tsv(staging / "sessions.tsv", trial.sessions)
        write_json(staging / "sessions.json", {k: {"Description": v} for k, v in _SIDECAR.items()})
        write_tsv(staging / "participants.tsv", trial.participants)
        write_tsv(staging / "features.tsv", trial.features)
        write_tsv(staging / "phenotype" / "outcomes.tsv", trial.outcomes)
        write_tsv(staging / "ground_truth.tsv", trial.truth)
        write_json(staging / "ground_truth.json", trial.truth_params)
        if out.exists():
            shutil.rmtree(out) if any(out.iterdir()) else out.rmdir()
        os.rename(staging, out)
    except BaseException:
        with contextlib.suppress(Exception):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
