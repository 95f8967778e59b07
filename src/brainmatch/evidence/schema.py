"""The augmentation schema: how to code "therapy + X" trials for ``brainmatch meta``.

Nord et al. (2023, Nature Mental Health 1:389) pooled acute augmentations given
before, during or after psychotherapy sessions (Hedges' g = -0.27 over 108 studies;
negative favours augmentation).  To ask the same questions of a new table, code each
comparison (augmented therapy vs therapy alone, or vs therapy + placebo) with:

``type``
    ``pharmacological`` (e.g. propranolol, cortisol, oxytocin, yohimbine),
    ``psychedelic`` (psilocybin, MDMA, LSD), ``nmda`` (NMDA-targeting:
    D-cycloserine, ketamine), ``brain_stimulation`` (TMS, tDCS), ``exercise``,
    ``sleep_circadian`` (sleep / circadian timing of sessions), ``other``.
``timing``
    ``before``, ``during`` or ``after`` the session.
``diagnosis_dimension``
    ``fear`` (phobias, panic, social anxiety, PTSD-fear), ``distress`` (depression,
    generalised anxiety, PTSD-distress), ``obsessive`` (OCD), ``externalising``
    (substance use), ``other``.

Then ``brainmatch meta table.csv --effect g --se se --subgroup type`` pools each
augmentation type and tests their difference, and ``--moderators timing`` fits a
meta-regression on timing (dummy-coded, ``before`` as reference).
Spelling variants (``NMDA-targeting``, ``brain stimulation``, ``Sleep/circadian``,
``pre-session``) are normalised by :func:`normalise_augmentation_table`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from brainmatch.errors import BrainmatchInputError

AUGMENTATION_TYPES = (
    "pharmacological",
    "psychedelic",
    "nmda",
    "brain_stimulation",
    "exercise",
    "sleep_circadian",
    "other",
)
TIMINGS = ("before", "during", "after")
DIAGNOSIS_DIMENSIONS = ("fear", "distress", "obsessive", "externalising", "other")

_ALIASES = {
    "type": {
        "pharmacological": "pharmacological",
        "pharmacology": "pharmacological",
        "drug": "pharmacological",
        "medication": "pharmacological",
        "psychedelic": "psychedelic",
        "psychedelics": "psychedelic",
        "nmda": "nmda",
        "nmda_targeting": "nmda",
        "nmda_agent": "nmda",
        "glutamatergic": "nmda",
        "brain_stimulation": "brain_stimulation",
        "stimulation": "brain_stimulation",
        "neurostimulation": "brain_stimulation",
        "tms": "brain_stimulation",
        "tdcs": "brain_stimulation",
        "exercise": "exercise",
        "physical_activity": "exercise",
        "sleep_circadian": "sleep_circadian",
        "sleep": "sleep_circadian",
        "circadian": "sleep_circadian",
        "sleep_circadian_timing": "sleep_circadian",
        "other": "other",
    },
    "timing": {
        "before": "before",
        "pre": "before",
        "pre_session": "before",
        "prior": "before",
        "during": "during",
        "within": "during",
        "in_session": "during",
        "after": "after",
        "post": "after",
        "post_session": "after",
    },
    "diagnosis_dimension": {
        "fear": "fear",
        "distress": "distress",
        "obsessive": "obsessive",
        "ocd": "obsessive",
        "externalising": "externalising",
        "externalizing": "externalising",
        "other": "other",
    },
}
_ALLOWED = {
    "type": AUGMENTATION_TYPES,
    "timing": TIMINGS,
    "diagnosis_dimension": DIAGNOSIS_DIMENSIONS,
}


def _key(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")


def normalise_augmentation_table(df: pd.DataFrame, path: str | Path | None = None) -> pd.DataFrame:
    """Check and normalise the augmentation columns present in ``df``.

    Parameters
    ----------
    df : DataFrame
        A table with some of ``type``, ``timing``, ``diagnosis_dimension``.
    path : str or Path, optional
        File, for messages.

    Returns
    -------
    DataFrame
        A copy with the values mapped to the schema's codes.

    Raises
    ------
    BrainmatchInputError
        When a value is not one of the schema's codes or aliases (naming column, row
        and the allowed values), or when none of the columns is present.
    """
    present = [c for c in _ALIASES if c in df.columns]
    if not present:
        raise BrainmatchInputError(
            "augmentation schema: none of the columns type, timing, diagnosis_dimension is present",
            path,
        )
    out = df.copy()
    for col in present:
        mapped: list[str | None] = []
        for i, value in enumerate(out[col].tolist()):
            if value is None or (isinstance(value, float) and pd.isna(value)):
                mapped.append(None)
                continue
            code = _ALIASES[col].get(_key(str(value)))
            if code is None:
                raise BrainmatchInputError(
                    f"augmentation schema: column {col!r} row {i + 2} is {value!r}; "
                    f"allowed: {', '.join(_ALLOWED[col])}",
                    path,
                )
            mapped.append(code)
        out[col] = mapped
    return out
