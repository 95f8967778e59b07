"""Follow-up after acute treatment: time to relapse, with censoring, for a simulated trial.

The model (every parameter is returned in ``parameters`` and written to
``ground_truth.json`` when the dataset is written with follow-up):

*Durability by arm class.*  After the acute phase, a patient who completed the acute phase
is followed for relapse.  The probability of relapse within 52 weeks for an average patient
is ``RELAPSE_52W[class]``: medication (stopped after the acute phase) 0.60, psychotherapy
0.30, mindfulness 0.35, control 0.50.  These are assumptions of this simulator chosen so
that therapy is the more durable treatment, as Hollon et al. 2005 (Arch Gen Psychiatry)
reported for cognitive therapy withdrawn vs medication withdrawn; they are not that
paper's estimates.

*Brain moderator of durability.*  The true subcallosal-cingulate connectivity
(``scc_connectivity``, Dunlop et al. 2017's marker) changes the relapse hazard by
``exp(-durability_effect * z)`` under psychotherapy-like arms and ``exp(+durability_effect
* z)`` under medication: patients with high connectivity stay well longer after therapy,
those with low connectivity after medication.  ``durability_effect = 0`` is the null.

*Acute response.*  Each extra HAMD point at week 8 raises the hazard by 4 %.

Relapse times are exponential with those hazards (weeks from the end of the acute phase).
*Censoring*: administrative (staggered entry: follow-up ends uniformly between
``min_weeks`` and ``max_weeks``) and random (loss to follow-up, exponential, 15 % by week
52 on average).  Acute-phase dropouts have no follow-up; healthy controls
(``--n-controls``) are untreated and get no rows.  The truth holds each patient's
relapse-free probability at 52 weeks and restricted mean survival time to 52 weeks under
every arm, and the arm maximising it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError
from brainmatch.simulate.model import Trial

#: Relapse within 52 weeks for an average patient, by arm class (simulator assumptions).
RELAPSE_52W: dict[str, float] = {
    "psychotherapy": 0.30,
    "mindfulness": 0.35,
    "medication": 0.60,
    "control": 0.50,
    "other": 0.45,
}
#: Sign of the connectivity moderator by class.
MODERATOR_SIGN: dict[str, float] = {
    "psychotherapy": -1.0,
    "mindfulness": -0.5,
    "medication": 1.0,
    "control": 0.0,
    "other": 0.0,
}
HORIZON_WEEKS = 52.0
LOSS_52W = 0.15


def draw_followup(
    trial: Trial,
    *,
    durability_effect: float = 0.6,
    min_weeks: float = 52.0,
    max_weeks: float = 104.0,
    seed: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Draw relapse times with censoring for every patient who completed the acute phase.

    Parameters
    ----------
    trial : Trial
        From :func:`brainmatch.simulate.draw_trial`.
    durability_effect : float
        Log hazard ratio per SD of ``scc_connectivity`` (0: no brain moderator).
    min_weeks, max_weeks : float
        Range of administrative follow-up (staggered entry).
    seed : int, optional
        Defaults to the trial's seed (an independent stream).

    Returns
    -------
    followup : DataFrame
        ``participant_id``, ``relapse_weeks`` (time to relapse or censoring), ``relapse``
        (1 = relapsed, 0 = censored); acute dropouts have ``n/a``.
    truth : DataFrame
        ``participant_id``, ``rfs52__<arm>``, ``rmst52__<arm>`` (true relapse-free
        probability and restricted mean survival time to week 52 under each arm),
        ``durable_arm``.
    parameters : dict
    """
    if not (0 < min_weeks <= max_weeks <= 1040):
        raise BrainmatchInputError("follow-up weeks: need 0 < min_weeks <= max_weeks <= 1040")
    spec = trial.spec
    rng = np.random.default_rng([spec.seed if seed is None else seed, 31])
    t = trial.truth
    if "group" in t.columns:  # healthy controls (--n-controls): untreated, no follow-up
        t = t[t["group"] != "control"].reset_index(drop=True)
    n = len(t)
    names = [a.name for a in trial.arms]
    klass = [a.klass for a in trial.arms]
    base = np.array([-math.log(1 - RELAPSE_52W[k]) / HORIZON_WEEKS for k in klass])
    sign = np.array([MODERATOR_SIGN[k] for k in klass])
    scc = t["scc_connectivity"].to_numpy(dtype=float)
    # acute response: the week-8 score each patient would have under each arm
    y8 = np.column_stack([t[f"hamd_week8__{a}"].to_numpy(dtype=float) for a in names])
    hazard = base[None, :] * np.exp(
        durability_effect * sign[None, :] * scc[:, None] + 0.04 * (y8 - 10.0)
    )
    rfs = np.exp(-hazard * HORIZON_WEEKS)
    rmst = (1 - np.exp(-hazard * HORIZON_WEEKS)) / hazard
    received = t["arm"].map({a: j for j, a in enumerate(names)}).to_numpy()
    lam = hazard[np.arange(n), received]
    event_time = rng.exponential(1.0 / lam)
    admin = rng.uniform(min_weeks, max_weeks, n)
    loss = rng.exponential(HORIZON_WEEKS / -math.log(1 - LOSS_52W), n)
    censor = np.minimum(admin, loss)
    observed = np.minimum(event_time, censor)
    event = (event_time <= censor).astype(float)
    dropout = t["dropout"].to_numpy(dtype=bool)
    observed[dropout] = np.nan
    event[dropout] = np.nan
    followup = pd.DataFrame(
        {
            "participant_id": t["participant_id"],
            "relapse_weeks": np.maximum(np.round(observed, 2), 0.01),  # no zero times
            "relapse": pd.array(np.where(dropout, pd.NA, event), dtype="Int64"),
        }
    )
    truth = pd.DataFrame({"participant_id": t["participant_id"]})
    for j, a in enumerate(names):
        truth[f"rfs52__{a}"] = rfs[:, j].round(6)
    for j, a in enumerate(names):
        truth[f"rmst52__{a}"] = rmst[:, j].round(4)
    truth["durable_arm"] = np.array(names)[np.argmax(rmst, axis=1)]
    parameters = {
        "durability_effect": durability_effect,
        "relapse_52w_by_class": {k: RELAPSE_52W[k] for k in sorted(set(klass))},
        "moderator": "scc_connectivity: hazard x exp(durability_effect * sign[class] * z)",
        "moderator_sign_by_class": {k: MODERATOR_SIGN[k] for k in sorted(set(klass))},
        "acute_response": "hazard x exp(0.04 * (week-8 HAMD under the arm - 10))",
        "censoring": {
            "administrative_weeks": [min_weeks, max_weeks],
            "loss_to_followup_by_52w": LOSS_52W,
        },
        "horizon_weeks": HORIZON_WEEKS,
        "source": "relapse proportions are simulator assumptions (therapy more durable than "
        "medication, as Hollon et al. 2005 reported), not published estimates",
    }
    return followup, truth, parameters


_FOLLOWUP_JSON = {
    "participant_id": {"Description": "Participant identifier"},
    "relapse_weeks": {
        "Description": "Weeks from the end of the acute phase (week 8) to relapse or censoring; "
        "n/a for acute-phase dropouts",
        "Units": "weeks",
    },
    "relapse": {
        "Description": "1 = relapsed at relapse_weeks, 0 = censored (end of follow-up or lost)",
        "Levels": {"0": "censored", "1": "relapse"},
    },
}


def write_followup(trial: Trial, root: Any) -> dict[str, Any]:
    """Write ``phenotype/followup.tsv`` (+ JSON) and ``followup_truth.tsv`` under ``root``.

    Returns the follow-up parameters (for ``ground_truth.json``).
    """
    from pathlib import Path

    from brainmatch._io import write_json, write_tsv

    root = Path(root)
    followup, truth, params = draw_followup(trial, durability_effect=trial.spec.durability_effect)
    write_tsv(root / "phenotype" / "followup.tsv", followup)
    write_json(root / "phenotype" / "followup.json", _FOLLOWUP_JSON)
    write_tsv(root / "followup_truth.tsv", truth, float_format="%.6g")
    return params
