"""Mixed models of session-level augmentation data (``brainmatch sessions``).

From a session table (see :mod:`brainmatch.sessions.schema`), :func:`analyse_sessions` fits
linear mixed models with random intercepts and session slopes per participant:

``within``
    Within-session fear reduction (``fear_start - fear_end``, positive = fear went down)
    on session, starting fear, augmentation at that session, exercise before it and time
    of day.
``between``
    Carry-over to the next session, the return of fear (``fear_start`` of session k+1
    minus ``fear_end`` of session k; negative = extinction consolidated), on session,
    session success (the session's fear reduction, per 10 points; Smits et al. 2013),
    augmentation and its interaction with success, the dosing window (given more than
    ``window_minutes`` before the session; Rosenfield et al. 2019) and its interaction
    with augmentation, exercise, time of day (Meuret et al. 2016), and participant-level
    brain moderators with their augmentation interactions.
``trajectory``
    Fear at the start of each session by arm (session as a factor): the augmentation
    effect per session, and the fitted curves by condition.
``final``
    The weekly symptom score by session and arm: the augmentation effect on the final
    outcome (the last session), with its CI.
``dose_response``
    The symptom score on the cumulative number of augmented sessions (session as a
    factor): the change per additional augmented session.

Terms whose column is absent or constant are left out (and listed in ``notes``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch import __version__
from brainmatch._io import json_safe, write_json, write_tsv
from brainmatch.errors import BrainmatchInputError
from brainmatch.sessions.mixed import MixedFit, fit_mixed
from brainmatch.sessions.readers import read_sessions
from brainmatch.sessions.schema import validate_sessions

COMMAND = "brainmatch sessions"
ID = "participant_id"

#: plain-language meaning of each model term (for tables and the report)
TERM_LABELS = {
    "Intercept": "intercept (session 1, no augmentation, noon, no exercise)",
    "session": "per session",
    "start_c": "per SUDS point of starting fear above 50",
    "augmented": "augmentation given at the session",
    "success": "session success (per 10 points of within-session fear reduction)",
    "augmented:success": "augmentation x session success",
    "window": "dosed > window before the session",
    "augmented:window": "augmentation x dosed > window before",
    "exercise": "exercise before the session",
    "tod_c": "time of day (per hour after noon)",
}


#: JSON-safe copy: the one cleaner, :func:`brainmatch._io.json_safe`.
_jsonable = json_safe


def model_frames(
    df: pd.DataFrame,
    brain_moderators: tuple[str, ...] = (),
    window_minutes: float = 60.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Derived per-session and per-transition variables.

    Parameters
    ----------
    df : DataFrame
        A validated session table.
    brain_moderators : tuple of str
        Participant-level columns (constant within participant) to use as moderators.
    window_minutes : float
        Dosing window: augmentation (or placebo) given more than this many minutes before
        the session counts as inside the window.

    Returns
    -------
    sessions : DataFrame
        One row per session: ``session`` (0 at session 1), ``session_number``,
        ``start_c``, ``reduction``, ``success``, ``augmented``, ``window``, ``exercise``,
        ``tod_c``, ``active`` (participant's arm gives augmentation), ``doses``
        (cumulative augmented sessions), the brain moderators.
    transitions : DataFrame
        One row per pair of consecutive sessions k, k+1 with the session-k variables and
        ``return_of_fear``.
    """
    d = pd.DataFrame(
        {
            ID: df[ID].astype(str),
            "arm": df["arm"].astype(str),
            "session_number": df["session"].astype(int),
            "session": df["session"].astype(int) - 1,
            "fear_start": df["fear_start"].astype(float),
            "fear_end": df["fear_end"].astype(float),
            "augmented": df["augmented"].astype(float),
        }
    )
    d["start_c"] = d["fear_start"] - 50
    d["reduction"] = d["fear_start"] - d["fear_end"]
    d["success"] = d["reduction"] / 10
    if "timing" in df.columns and "timing_minutes" in df.columns:
        before = df["timing"].astype(object).eq("before")
        d["window"] = (before & (df["timing_minutes"] > window_minutes)).astype(float)
        d.loc[df["timing"].isna() | (before & df["timing_minutes"].isna()), "window"] = np.nan
    ex_cols = [c for c in ("exercise_minutes", "exercise_type") if c in df.columns]
    if ex_cols:
        ex = pd.Series(0.0, index=df.index)
        known = pd.Series(False, index=df.index)
        if "exercise_minutes" in df.columns:
            ex = ex.where(~(df["exercise_minutes"] > 0), 1.0)
            known |= df["exercise_minutes"].notna()
        if "exercise_type" in df.columns:
            t = df["exercise_type"]
            ex = ex.where(~(t.notna() & (t != "none")), 1.0)
            known |= t.notna()
        d["exercise"] = ex.where(known, np.nan)
    if "time_of_day" in df.columns:
        d["tod_c"] = df["time_of_day"].astype(float) - 12
    if "symptom_score" in df.columns:
        d["symptom_score"] = df["symptom_score"].astype(float)
    active = d.groupby(ID, sort=False)["augmented"].transform("max")
    d["active"] = active.astype(float)
    d["doses"] = d.groupby(ID, sort=False)["augmented"].cumsum()
    for b in brain_moderators:
        if b not in df.columns:
            from brainmatch.sessions.schema import did_you_mean

            raise BrainmatchInputError(
                f"--brain-moderators: no column {b!r} in the session table"
                f"{did_you_mean(b, [c for c in df.columns if c != '_line'])}"
            )
        if not b.isidentifier() or b in d.columns:
            raise BrainmatchInputError(
                f"--brain-moderators: column name {b!r} cannot be used in a model formula; "
                f"rename it to letters, digits and underscores"
            )
        vals = pd.to_numeric(df[b], errors="coerce")
        if vals.isna().any() and df[b].notna().any():
            bad = vals.isna() & df[b].notna()
            if bad.any():
                raise BrainmatchInputError(f"--brain-moderators: column {b!r} is not numeric")
        spread = vals.groupby(d[ID], sort=False).agg(lambda s: s.max() - s.min())
        if (spread > 1e-9).any():
            who = spread.index[spread > 1e-9][0]
            raise BrainmatchInputError(
                f"--brain-moderators: column {b!r} changes within participant {who!r}; a "
                f"brain moderator is a baseline (participant-level) measure"
            )
        d[b] = vals.to_numpy(dtype=float)
    nxt = d.groupby(ID, sort=False).shift(-1)
    consecutive = nxt["session_number"] == d["session_number"] + 1
    t = d[consecutive].copy()
    t["return_of_fear"] = nxt.loc[consecutive, "fear_start"] - t["fear_end"]
    return d, t


def _usable(frame: pd.DataFrame, term: str) -> bool:
    if ":" in term:
        a, b = term.split(":")
        if not (_usable(frame, a) and _usable(frame, b)):
            return False
        prod = frame[a] * frame[b]
        return bool(prod.dropna().nunique() > 1)
    return term in frame.columns and frame[term].dropna().nunique() > 1


def _fit(
    frame: pd.DataFrame,
    outcome: str,
    terms: list[str],
    notes: list[str],
    name: str,
    level: float,
    reml: bool,
    re_formula: str = "~session",
) -> tuple[MixedFit, pd.DataFrame]:
    keep = [t for t in terms if _usable(frame, t)]
    dropped = [t for t in terms if t not in keep]
    if dropped:
        notes.append(f"{name}: left out (absent or constant) {', '.join(dropped)}")
    cols = sorted({c for t in keep for c in t.split(":")} | {outcome, ID, "session"})
    data = frame[cols].dropna()
    if len(data) < len(frame):
        notes.append(f"{name}: {len(frame) - len(data)} row(s) with missing values left out")
    if data.empty:
        raise BrainmatchInputError(f"{name} model: no complete rows")
    formula = f"{outcome} ~ " + (" + ".join(keep) if keep else "1")
    fit = fit_mixed(data, formula, ID, re_formula, reml=reml, level=level)
    notes.extend(f"{name}: {n}" for n in fit.notes)
    return fit, data


@dataclass
class SessionsResult:
    """What ``brainmatch sessions`` found.

    Attributes
    ----------
    models : dict of str -> MixedFit
        ``within``, ``between``, ``trajectory`` and (with a symptom score) ``final`` and
        ``dose_response``.
    per_session : DataFrame
        Augmentation effect on fear at the start of each session (active minus control)
        with CI.
    final : dict or None
        Augmentation effect on the symptom score at the last session.
    augmentation_effect : dict
        Effect of augmentation on the return of fear after an average augmented session.
    dose_response : dict or None
        Change of the symptom score per additional augmented session, and a table by
        the number of doses received.
    descriptives : dict
        Participants, sessions, arms, dropout.
    notes : list of str
        Terms left out, fallbacks, warnings.
    data : DataFrame
        Per-session model frame (for plots).
    """

    models: dict[str, MixedFit]
    per_session: pd.DataFrame
    final: dict[str, Any] | None
    augmentation_effect: dict[str, Any]
    dose_response: dict[str, Any] | None
    descriptives: dict[str, Any]
    options: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    data: pd.DataFrame | None = None

    def moderators(self) -> pd.DataFrame:
        """The fixed effects of the within- and between-session models in one table."""
        rows = []
        for name in ("within", "between"):
            tab = self.models[name].table()
            tab.insert(0, "model", name)
            tab.insert(2, "meaning", [TERM_LABELS.get(t, _brain_label(t)) for t in tab["term"]])
            rows.append(tab)
        return pd.concat(rows, ignore_index=True)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data (the content of ``results.json``)."""
        return _jsonable(
            {
                "command": COMMAND,
                "version": __version__,
                "options": self.options,
                "descriptives": self.descriptives,
                "models": {k: v.to_dict() for k, v in self.models.items()},
                "augmentation_effect": self.augmentation_effect,
                "per_session": self.per_session.to_dict("records"),
                "final": self.final,
                "dose_response": self.dose_response,
                "notes": self.notes,
            }
        )

    def save(self, out_dir: str | Path) -> Path:
        """Write ``results.json`` and the tables into ``out_dir``.

        Files: ``results.json``, ``moderators.tsv`` (fixed effects of the within- and
        between-session models), ``per_session_effects.tsv``, ``dose_response.tsv``
        (when estimated), ``model_data.tsv`` (derived variables per session).

        Parameters
        ----------
        out_dir : str or Path
            Folder: new, empty, or an earlier output of ``brainmatch sessions``.

        Returns
        -------
        Path
            The folder.
        """
        out = check_output_dir(out_dir)
        write_tsv(out / "moderators.tsv", self.moderators(), float_format="%.6g")
        write_tsv(out / "per_session_effects.tsv", self.per_session, float_format="%.6g")
        if self.dose_response is not None:
            write_tsv(
                out / "dose_response.tsv",
                pd.DataFrame(self.dose_response["by_doses"]),
                float_format="%.6g",
            )
        if self.data is not None:
            write_tsv(out / "model_data.tsv", self.data, float_format="%.6g")
        write_json(out / "results.json", self.to_dict())
        return out

    def _repr_html_(self) -> str:
        tab = self.moderators()
        rows = "".join(
            f"<tr><td>{html.escape(r.model)}</td><td>{html.escape(r.term)}</td>"
            f"<td>{r.estimate:.2f}</td><td>[{r.ci_lb:.2f}, {r.ci_ub:.2f}]</td>"
            f"<td>{r.p:.3g}</td></tr>"
            for r in tab.itertuples()
        )
        fin = ""
        if self.final:
            f = self.final
            fin = (
                f"<p>Final outcome (session {f['session']}): active - control = "
                f"{f['estimate']:.2f} [{f['ci_lb']:.2f}, {f['ci_ub']:.2f}]</p>"
            )
        d = self.descriptives
        return (
            f"<div><b>brainmatch sessions</b>: {d['n_participants']} participants, "
            f"{d['n_sessions']} sessions{fin}"
            "<table><tr><th>model</th><th>term</th><th>estimate</th><th>CI</th><th>p</th></tr>"
            f"{rows}</table></div>"
        )


def _brain_label(term: str) -> str:
    if term.startswith("augmented:"):
        return f"augmentation x {term.split(':', 1)[1]} (brain moderator)"
    return f"{term} (brain moderator, per unit)"


def check_output_dir(out_dir: str | Path, create: bool = True) -> Path:
    """Accept ``out_dir`` when new, empty or an earlier ``brainmatch sessions`` output.

    Parameters
    ----------
    out_dir : str or Path
        The folder.
    create : bool
        Create it (False: only check, e.g. before a long analysis).

    Returns
    -------
    Path
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BrainmatchInputError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()):
        import json

        try:
            prev = json.loads((out / "results.json").read_text())
        except (OSError, ValueError):
            prev = {}
        if prev.get("command") != COMMAND:
            raise BrainmatchInputError(
                "folder is not empty and holds no earlier brainmatch sessions output; choose "
                "a new or empty folder",
                out,
            )
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def _by_session_effects(fit: MixedFit, frame: pd.DataFrame, outcome: str) -> pd.DataFrame:
    rows = []
    for s in sorted(frame["session_number"].unique()):
        base = f"C(session_number)[{s}]"
        diff = f"C(session_number)[{s}]:active"
        if base not in fit.params.index or diff not in fit.params.index:
            continue
        c = fit.contrast({diff: 1.0})
        sub = frame[frame["session_number"] == s]
        rows.append(
            {
                "session": int(s),
                "outcome": outcome,
                "n_control": int((sub["active"] == 0).sum()),
                "n_active": int((sub["active"] == 1).sum()),
                "fitted_control": float(fit.params[base]),
                "fitted_active": float(fit.params[base] + fit.params[diff]),
                "effect": c["estimate"],
                "se": c["se"],
                "ci_lb": c["ci_lb"],
                "ci_ub": c["ci_ub"],
                "p": c["p"],
            }
        )
    return pd.DataFrame(rows)


def _trajectory(
    d: pd.DataFrame, outcome: str, notes: list[str], name: str, level: float, reml: bool
) -> tuple[MixedFit, pd.DataFrame]:
    data = d[[ID, "session", "session_number", "active", outcome]].dropna()
    # sessions with both arms present
    ok = data.groupby("session_number")["active"].nunique() == 2
    data = data[data["session_number"].isin(ok.index[ok])]
    formula = f"{outcome} ~ 0 + C(session_number) + C(session_number):active"
    fit = fit_mixed(data, formula, ID, "~session", reml=reml, level=level)
    notes.extend(f"{name}: {n}" for n in fit.notes)
    return fit, _by_session_effects(fit, data, outcome)


def analyse_sessions(
    data: pd.DataFrame | str | Path,
    *,
    brain_moderators: tuple[str, ...] | list[str] = (),
    window_minutes: float = 60.0,
    level: float = 0.95,
    reml: bool = True,
    rating_scale: tuple[float, float] = (0.0, 100.0),
    participants: pd.DataFrame | str | Path | None = None,
    effects: bool = True,
) -> SessionsResult:
    """Fit the session-level mixed models.

    Parameters
    ----------
    data : DataFrame or path
        A session table (validated here when a DataFrame is given).
    brain_moderators : sequence of str
        Participant-level columns (e.g. baseline vmPFC-amygdala connectivity) entered in
        the between-session model with their augmentation interaction.
    window_minutes : float
        The dosing window (Rosenfield et al. 2019: more than 60 min before the session).
    level : float
        Confidence level.
    reml : bool
        REML (default) or ML estimation.
    rating_scale : (float, float)
        Range of the SUDS ratings.
    participants : DataFrame or path, optional
        A participant table (``participant_id`` + columns) merged into the session table,
        e.g. ``features.tsv`` holding the brain moderators.
    effects : bool
        Also fit the per-session, final-outcome and dose-response models (False: only
        the within- and between-session moderator models, e.g. for simulation studies).

    Returns
    -------
    SessionsResult
    """
    if isinstance(data, str | Path):
        df = read_sessions(data, rating_scale=rating_scale)
        source = str(data)
    else:
        df = validate_sessions(data, None, rating_scale=rating_scale)
        source = "DataFrame"
    if participants is not None:
        df = _merge_participants(df, participants)
    if not 0 < level < 1:
        raise BrainmatchInputError(f"--level {level} must lie in (0, 1)")
    if window_minutes < 0:
        raise BrainmatchInputError("--window-minutes must be >= 0")
    brain = tuple(brain_moderators)
    d, t = model_frames(df, brain, window_minutes)
    arms = d.groupby("arm")["active"].max()
    if d["active"].nunique() < 2:
        raise BrainmatchInputError(
            "every participant had the augmentation or none did; the models compare augmented "
            "with non-augmented sessions and arms (check the 'augmented' column)"
        )
    notes: list[str] = []
    mixed_arms = d.groupby("arm")["active"].nunique()
    if (mixed_arms > 1).any():
        notes.append(
            f"arm(s) {', '.join(mixed_arms.index[mixed_arms > 1])} hold participants with and "
            f"without any augmented session; 'active' is per participant"
        )
    models: dict[str, MixedFit] = {}
    within_terms = ["session", "start_c", "augmented", "exercise", "tod_c"]
    models["within"], _ = _fit(d, "reduction", within_terms, notes, "within", level, reml)
    between_terms = [
        "session",
        "success",
        "augmented",
        "augmented:success",
        "window",
        "augmented:window",
        "exercise",
        "tod_c",
    ]
    for b in brain:
        between_terms += [b, f"augmented:{b}"]
    if t.empty:
        raise BrainmatchInputError("no participant has two consecutive sessions")
    models["between"], tb = _fit(t, "return_of_fear", between_terms, notes, "between", level, reml)

    # augmentation effect on return of fear after an average augmented session
    fb = models["between"]
    aug_rows = tb[tb["augmented"] == 1]
    weights: dict[str, float] = {}
    at: dict[str, float] = {}
    for term in fb.params.index:
        if term == "augmented":
            weights[term] = 1.0
        elif term.startswith("augmented:"):
            var = term.split(":", 1)[1]
            at[var] = float(aug_rows[var].mean())
            weights[term] = at[var]
    aug_effect: dict[str, Any] = {"outcome": "return_of_fear", "at": at}
    if weights:
        aug_effect.update(fb.contrast(weights))

    final = None
    dose = None
    per_session = pd.DataFrame()
    if effects:
        models["trajectory"], per_session = _trajectory(
            d, "fear_start", notes, "trajectory", level, reml
        )
    if effects and "symptom_score" in d.columns and d["symptom_score"].notna().any():
        models["final"], sym = _trajectory(d, "symptom_score", notes, "final", level, reml)
        if not sym.empty:
            last = sym.iloc[-1]
            obs = d[(d["session_number"] == last["session"]) & d["symptom_score"].notna()]
            sd = float(np.sqrt(obs.groupby("active")["symptom_score"].var(ddof=1).mean()))
            final = {
                "outcome": "symptom_score",
                "session": int(last["session"]),
                "estimate": float(last["effect"]),
                "se": float(last["se"]),
                "ci_lb": float(last["ci_lb"]),
                "ci_ub": float(last["ci_ub"]),
                "p": float(last["p"]),
                "sd_pooled": sd,
                "smd": float(last["effect"]) / sd if sd > 0 else None,
            }
            per_session = pd.concat([per_session, sym], ignore_index=True)
        dd = d[[ID, "session", "session_number", "doses", "symptom_score"]].dropna()
        if dd["doses"].nunique() > 1:
            dfit = fit_mixed(
                dd,
                "symptom_score ~ 0 + C(session_number) + doses",
                ID,
                "~session",
                reml=reml,
                level=level,
            )
            notes.extend(f"dose_response: {n}" for n in dfit.notes)
            models["dose_response"] = dfit
            per = dfit.contrast({"doses": 1.0})
            lastn = d.groupby(ID, sort=False).tail(1)
            done = lastn[lastn["session_number"] == d["session_number"].max()]
            by = (
                done.groupby("doses")["symptom_score"]
                .agg(n="count", mean="mean", sd="std")
                .reset_index()
                .rename(columns={"doses": "n_augmented_sessions"})
            )
            dose = {
                "outcome": "symptom_score",
                "per_dose": per,
                "by_doses": by.to_dict("records"),
            }
    last_session = int(d["session_number"].max())
    per_part = d.groupby(ID, sort=False).agg(
        arm=("arm", "first"), last=("session_number", "max"), n=("session_number", "size")
    )
    descriptives = {
        "source": source,
        "n_participants": len(per_part),
        "n_sessions": len(d),
        "n_transitions": len(t),
        "last_session": last_session,
        "arms": {
            str(a): {
                "n": int((per_part["arm"] == a).sum()),
                "augmentation": bool(arms[a] > 0),
                "completed": int(
                    ((per_part["arm"] == a) & (per_part["last"] == last_session)).sum()
                ),
            }
            for a in arms.index
        },
        "augmented_sessions": int(d["augmented"].sum()),
        "augmentation_types": sorted(
            df.loc[df["augmented"] == 1, "augmentation_type"].dropna().unique().tolist()
        )
        if "augmentation_type" in df.columns
        else [],
        "timings": sorted(df.loc[df["augmented"] == 1, "timing"].dropna().unique().tolist())
        if "timing" in df.columns
        else [],
    }
    options = {
        "brain_moderators": list(brain),
        "window_minutes": window_minutes,
        "level": level,
        "reml": reml,
        "rating_scale": list(rating_scale),
    }
    return SessionsResult(
        models=models,
        per_session=per_session,
        final=final,
        augmentation_effect=aug_effect,
        dose_response=dose,
        descriptives=descriptives,
        options=options,
        notes=notes,
        data=d,
    )


def _merge_participants(df: pd.DataFrame, participants: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(participants, str | Path):
        from brainmatch.evidence.readers import read_table

        ptab = read_table(participants)
        name: str | Path = participants
    else:
        ptab, name = participants.copy(), "participants table"
    if ID not in ptab.columns:
        raise BrainmatchInputError(f"no {ID!r} column", name)
    ptab[ID] = ptab[ID].astype(str).str.strip()
    if ptab[ID].duplicated().any():
        dup = ptab.loc[ptab[ID].duplicated(), ID].iloc[0]
        raise BrainmatchInputError(f"participant {dup!r} has more than one row", name)
    missing = sorted(set(df[ID]) - set(ptab[ID]))
    if missing:
        raise BrainmatchInputError(
            f"{len(missing)} participant(s) of the session table are missing, e.g. {missing[0]!r}",
            name,
        )
    extra = [c for c in ptab.columns if c == ID or c not in df.columns]
    return df.merge(ptab[extra], on=ID, how="left")
