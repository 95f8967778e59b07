"""From session-level trials to the evidence: study-level effects and the one-stage model.

:func:`study_effects` turns the session tables of several trials into one row per
comparison (augmented arm vs control) in the augmentation schema of
``brainmatch meta --schema augmentation``: ``study``, ``type``, ``timing``,
``diagnosis_dimension``, Hedges' ``g`` of the final symptom score (completers; negative
favours augmentation, as in Nord et al. 2023) with its standard error ``se``, and the
group means, SDs and sizes (so ``--measure SMD`` gives the same numbers).

:func:`one_stage_ipd` fits the individual-participant model on the same participants:
each trial's final scores divided by that trial's pooled SD, a fixed intercept per trial
and a treatment effect that varies between trials (random slope), so its estimate is on
the scale of the two-stage pooled g and the two can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from brainmatch.errors import BrainmatchInputError
from brainmatch.evidence.schema import DIAGNOSIS_DIMENSIONS
from brainmatch.sessions.readers import read_sessions

ID = "participant_id"


def _label(path: Path) -> str:
    return path.parent.name if path.name.startswith("sessions.") else path.stem


def final_scores(df: pd.DataFrame, outcome: str = "symptom_score") -> pd.DataFrame:
    """Completers' final outcome: one row per participant seen at the trial's last session.

    Parameters
    ----------
    df : DataFrame
        A validated session table.
    outcome : str
        Column with the outcome.

    Returns
    -------
    DataFrame
        ``participant_id``, ``arm``, ``active`` (any augmented session), ``y``.
    """
    if outcome not in df.columns:
        raise BrainmatchInputError(f"no {outcome!r} column: the final outcome is needed")
    last = int(df["session"].max())
    active = df.groupby(ID, sort=False)["augmented"].max().rename("active")
    fin = df[(df["session"] == last) & df[outcome].notna()][[ID, "arm", outcome]]
    fin = fin.merge(active, left_on=ID, right_index=True)
    return fin.rename(columns={outcome: "y"}).reset_index(drop=True)


def _mode(values: pd.Series) -> str | None:
    v = values.dropna()
    return None if v.empty else str(v.value_counts().index[0])


def study_effect_rows(
    df: pd.DataFrame,
    study: str,
    *,
    outcome: str = "symptom_score",
    diagnosis_dimension: str | None = None,
) -> list[dict[str, Any]]:
    """One row per augmented arm vs the control arm of one trial.

    Parameters
    ----------
    df : DataFrame
        A validated session table.
    study : str
        Study label.
    outcome : str
        Final outcome column (lower = better).
    diagnosis_dimension : str, optional
        ``fear``, ``distress``, ``obsessive``, ``externalising`` or ``other``.

    Returns
    -------
    list of dict
    """
    fin = final_scores(df, outcome)
    arm_active = fin.groupby("arm")["active"].max()
    controls = arm_active.index[arm_active == 0].tolist()
    actives = arm_active.index[arm_active == 1].tolist()
    if len(controls) != 1 or not actives:
        raise BrainmatchInputError(
            f"study {study!r}: need one control arm (no augmented session) and at least one "
            f"augmented arm among the completers; found control {controls}, augmented {actives}"
        )
    ctrl = controls[0]
    y2 = fin.loc[fin["arm"] == ctrl, "y"].to_numpy(float)
    rows = []
    for arm in actives:
        y1 = fin.loc[fin["arm"] == arm, "y"].to_numpy(float)
        n1, n2 = len(y1), len(y2)
        if n1 < 2 or n2 < 2:
            raise BrainmatchInputError(f"study {study!r}: fewer than 2 completers in an arm")
        m1, m2 = float(y1.mean()), float(y2.mean())
        s1, s2 = float(y1.std(ddof=1)), float(y2.std(ddof=1))
        sp = np.sqrt(((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / (n1 + n2 - 2))
        j = 1 - 3 / (4 * (n1 + n2 - 2) - 1)
        g = j * (m1 - m2) / sp
        vi = 1 / n1 + 1 / n2 + g**2 / (2 * (n1 + n2))
        pids = set(df.loc[df["arm"] == arm, ID])
        aug = df[df[ID].isin(pids) & (df["augmented"] == 1)]
        type_ = _mode(aug["augmentation_type"]) if "augmentation_type" in aug else None
        timing = _mode(aug["timing"]) if "timing" in aug else None
        row: dict[str, Any] = {
            "study": study if len(actives) == 1 else f"{study} ({arm})",
            "type": type_,
            "timing": timing,
        }
        if diagnosis_dimension is not None:
            row["diagnosis_dimension"] = diagnosis_dimension
        row.update(
            {
                "g": float(g),
                "se": float(np.sqrt(vi)),
                "m1": m1,
                "sd1": s1,
                "n1": n1,
                "m2": m2,
                "sd2": s2,
                "n2": n2,
                "arm": arm,
                "control": ctrl,
                "outcome": f"{outcome} at session {int(df['session'].max())} (completers)",
            }
        )
        rows.append(row)
    return rows


def study_effects(
    tables: Sequence[str | Path | pd.DataFrame],
    labels: Sequence[str] | None = None,
    *,
    outcome: str = "symptom_score",
    diagnosis_dimension: str | None = None,
) -> pd.DataFrame:
    """Study-level effects of several session-level trials, in the augmentation schema.

    Parameters
    ----------
    tables : sequence of path or DataFrame
        Session tables (a folder holding ``sessions.tsv`` is accepted).
    labels : sequence of str, optional
        Study labels (default: the folder of each ``sessions.tsv``, else the file stem).
    outcome : str
        Final outcome column.
    diagnosis_dimension : str, optional
        Written into every row when given.

    Returns
    -------
    DataFrame
        One row per comparison: ``study``, ``type``, ``timing``, [``diagnosis_dimension``],
        ``g``, ``se``, ``m1``, ``sd1``, ``n1``, ``m2``, ``sd2``, ``n2``, ``arm``,
        ``control``, ``outcome``.
    """
    if not tables:
        raise BrainmatchInputError("no session tables given")
    if labels is not None and len(labels) != len(tables):
        raise BrainmatchInputError(f"--labels has {len(labels)} name(s) for {len(tables)} table(s)")
    if diagnosis_dimension is not None and diagnosis_dimension not in DIAGNOSIS_DIMENSIONS:
        raise BrainmatchInputError(
            f"--diagnosis-dimension {diagnosis_dimension!r}: use one of "
            f"{', '.join(DIAGNOSIS_DIMENSIONS)}"
        )
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, tab in enumerate(tables):
        if isinstance(tab, pd.DataFrame):
            from brainmatch.sessions.schema import validate_sessions

            df = validate_sessions(tab)
            label = labels[i] if labels else f"study {i + 1}"
        else:
            p = Path(tab)
            df = read_sessions(p)
            label = labels[i] if labels else _label(p if p.is_file() else p / "sessions.tsv")
        if label in seen:
            raise BrainmatchInputError(f"two tables have the study label {label!r}; use --labels")
        seen.add(label)
        try:
            rows += study_effect_rows(
                df, label, outcome=outcome, diagnosis_dimension=diagnosis_dimension
            )
        except BrainmatchInputError as exc:
            raise BrainmatchInputError(
                exc.reason, None if isinstance(tab, pd.DataFrame) else tab
            ) from None
    return pd.DataFrame(rows)


def one_stage_ipd(
    tables: Sequence[str | Path | pd.DataFrame],
    labels: Sequence[str] | None = None,
    *,
    outcome: str = "symptom_score",
    level: float = 0.95,
) -> dict[str, Any]:
    """One-stage individual-participant model of the final outcome across trials.

    ``y_ij / sd_j ~ trial_j + (beta + b_j) * active_ij``, fitted by REML with statsmodels
    ``MixedLM`` (fixed trial intercepts, random treatment effect per trial), on the
    completers that :func:`study_effects` uses; ``sd_j`` is trial j's pooled SD.

    Returns
    -------
    dict
        ``estimate``, ``se``, ``ci_lb``, ``ci_ub``, ``p`` (standardised units),
        ``tau2`` (between-trial variance of the effect), ``n``, ``k``, ``converged``,
        ``optimiser``.
    """
    from brainmatch.sessions.mixed import fit_mixed
    from brainmatch.sessions.schema import validate_sessions

    parts = []
    for i, tab in enumerate(tables):
        if isinstance(tab, pd.DataFrame):
            df = validate_sessions(tab)
            label = labels[i] if labels else f"study {i + 1}"
        else:
            p = Path(tab)
            df = read_sessions(p)
            label = labels[i] if labels else _label(p if p.is_file() else p / "sessions.tsv")
        fin = final_scores(df, outcome)
        var = fin.groupby("active")["y"].agg(["var", "count"])
        sp = float(np.sqrt(((var["count"] - 1) * var["var"]).sum() / (var["count"].sum() - 2)))
        fin["z"] = fin["y"] / sp
        fin["trial"] = f"t{i}"
        fin["study"] = label
        parts.append(fin)
    data = pd.concat(parts, ignore_index=True)
    data["pid"] = data["trial"] + "_" + data[ID].astype(str)
    k = data["trial"].nunique()
    if k < 2:
        raise BrainmatchInputError("the one-stage model needs at least two trials")
    fit = fit_mixed(data, "z ~ 0 + C(trial) + active", "trial", "~0 + active", level=level)
    c = fit.contrast({"active": 1.0})
    z = stats.norm.ppf(0.5 + level / 2)
    return {
        "model": "final score / trial SD ~ trial + active, random active effect per trial (REML)",
        "estimate": c["estimate"],
        "se": c["se"],
        "ci_lb": c["estimate"] - z * c["se"],
        "ci_ub": c["estimate"] + z * c["se"],
        "p": c["p"],
        "tau2": float(fit.cov_re.iloc[0, 0]),
        "n": len(data),
        "k": int(k),
        "converged": fit.converged,
        "optimiser": fit.optimiser,
        "random": fit.random,
        "notes": fit.notes,
    }
