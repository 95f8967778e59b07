"""``brainmatch recommend`` with a durability model: each arm's relapse-free probability.

For every patient: the relapse-free probability at the model's horizon under every arm
(:meth:`SurvivalSelector.predict_rfs`) with its bootstrap percentile interval, the
relapse-free curve per arm from 0 to the horizon, and the same honesty rule as for
continuous models: a preference is stated only when the model's validation supports
selection (permutation p < 0.05 and the RMST gain's CI above 0) and the bootstrap interval
of this patient's difference between the best and the next-best arm excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch.errors import BrainmatchInputError


@dataclass
class DurabilityRecommendation:
    """What :func:`recommend_durability` produced (``recommend.json``'s content).

    Attributes
    ----------
    out_dir : Path or None
    patients : list of dict
    model : dict
    report_path : Path or None
    """

    out_dir: Path | None
    patients: list[dict[str, Any]]
    model: dict[str, Any]
    report_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """``recommend.json``."""
        return {"model": self.model, "patients": self.patients}


def _table(
    input: str | Path | pd.DataFrame,
    clinical: str | Path | pd.DataFrame | None,
    *,
    meta: dict[str, Any],
    out_dir: str | Path | None,
    derivatives: str | Path | None,
    participant: list[str] | None,
) -> tuple[pd.DataFrame, str]:
    """The patients' feature table: read, or extracted from a BIDS / fMRIPrep ``input`` with
    the training features' atlas and options (as for outcome models)."""
    from brainmatch.selection.data import ID, one_row_per_participant, read_table

    if isinstance(input, str | Path) and Path(input).is_dir():
        from brainmatch.selection.recommend import _extract_bids

        if out_dir is None:
            raise BrainmatchInputError("a BIDS INPUT needs an output folder for its features")
        table = _extract_bids(
            meta,
            Path(input),
            Path(out_dir),
            None if derivatives is None else Path(derivatives),
            participant,
        )
        tname = str(input)
        # the training table's session (train --session), e.g. the baseline scan
        table = one_row_per_participant(table, tname, (meta.get("options") or {}).get("session"))
    else:
        table, tname = read_table(input, "features")
        table = one_row_per_participant(table, tname, None)
    if clinical is not None:
        ctab, cname = read_table(clinical, "clinical")
        ctab = one_row_per_participant(ctab, cname, None)
        ctab = ctab[[c for c in ctab.columns if c == ID or c not in table.columns]]
        table = table.merge(ctab, on=ID, how="left")
    return table, tname


def recommend_durability(
    model_path: str | Path,
    input: str | Path | pd.DataFrame,
    out_dir: str | Path | None = None,
    *,
    clinical: str | Path | pd.DataFrame | None = None,
    derivatives: str | Path | None = None,
    participant: list[str] | None = None,
    trust_model: bool = False,
) -> DurabilityRecommendation:
    """Each arm's predicted relapse-free probability at the horizon, for new patients.

    Parameters
    ----------
    model_path : path
        ``model.npz`` written by ``brainmatch train --time-column``.
    input : path or DataFrame
        Feature table of one or many patients, or a BIDS folder with fMRIPrep derivatives:
        its features are then extracted into ``out_dir/features`` with the atlas and
        options recorded from the training table's ``features.json`` (as
        :func:`brainmatch.selection.recommend` does for outcome models).
    out_dir : path, optional
        Receives ``recommend.json`` and ``recommend.tsv`` (``report.html``:
        :func:`brainmatch.reports.durability.write_recommend_report`).
    clinical : path or DataFrame, optional
        Table with the covariates the model needs when ``input`` lacks them.
    derivatives : path, optional
        fMRIPrep folder of a BIDS ``input`` (default ``input/derivatives/fmriprep``).
    participant : list of str, optional
        Keep these participants (of a BIDS ``input``: extract only these).
    trust_model : bool
        Load an unsigned model, or one signed with another key, with a warning.

    Returns
    -------
    DurabilityRecommendation
    """
    from brainmatch._io import write_json, write_tsv
    from brainmatch.durability.modelfile import curve_times, load_durability_model
    from brainmatch.selection.data import ID

    sel, meta = load_durability_model(model_path, trust=trust_model)
    names: list[str] = meta["features"]
    table, tname = _table(
        input,
        clinical,
        meta=meta,
        out_dir=out_dir,
        derivatives=derivatives,
        participant=participant,
    )
    if participant:
        want = {p.removeprefix("sub-") for p in participant}
        table = table[table[ID].astype(str).str.removeprefix("sub-").isin(want)]
        if table.empty:
            raise BrainmatchInputError(
                f"--participant-label {', '.join(participant)}: no such participant", tname
            )
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise BrainmatchInputError(
            f"{len(missing)} of the model's {len(names)} features are not in the table: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}",
            tname,
        )
    Xdf = table[names].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in names if (Xdf[c].isna() & table[c].notna()).any()]
    if bad:
        raise BrainmatchInputError(
            f"non-numeric values in feature(s): {', '.join(bad[:10])}", tname
        )
    X = Xdf.to_numpy(dtype=float)
    X[~np.isfinite(X)] = np.nan
    n_imputed = np.isnan(X).sum(axis=1)
    med = np.asarray(meta["medians"], dtype=float)
    X = np.where(np.isnan(X), med[None, :], X)
    sites = None
    site_caveats: dict[str, str] = {}
    if sel.combat_ is not None:
        site_col = (meta.get("options") or {}).get("site_column") or "site"
        if site_col not in table.columns or table[site_col].isna().any():
            raise BrainmatchInputError(
                f"the model harmonises sites: every patient needs a value in column "
                f"{site_col!r} (pass it in the table or with --clinical)",
                tname,
            )
        sites = table[site_col].astype(str).to_numpy()
        for lab, how in sel.combat_.site_status(sites).items():
            if how == "estimated":
                site_caveats[lab] = (
                    f"site {lab!r} was not in the training data; its scanner effects were "
                    "estimated from this batch's patients"
                )
            elif how == "unadjusted":
                site_caveats[lab] = (
                    f"site {lab!r} was not in the training data and too few of its patients "
                    "are in this batch to estimate its scanner effects: features are not "
                    "harmonised, predictions may be shifted"
                )
    arms = sel.arms_
    h = sel.horizon
    rfs = sel.predict_rfs(X, sites=sites)
    grid = curve_times(h)
    curves = sel.predict_survival(X, grid, sites=sites)
    draws = sel.predict_draws(X, sites=sites) if sel.boot_ else None
    a = (1 - sel.level) / 2
    selection = meta["selection"]
    supported = bool(selection["selection_supported"])
    unit = meta.get("time_unit", "")
    patients = []
    for i, pid in enumerate(table[ID].astype(str)):
        order = np.argsort(-rfs[i], kind="stable")
        best, nxt = int(order[0]), int(order[1])
        diff = float(rfs[i, best] - rfs[i, nxt])
        if draws is not None:
            lo, hi = np.quantile(draws[:, i, :], [a, 1 - a], axis=0)
            d = draws[:, i, best] - draws[:, i, nxt]
            diff_ci = [float(np.quantile(d, a)), float(np.quantile(d, 1 - a))]
        else:
            lo = hi = None
            diff_ci = None
        reasons = list(selection.get("reasons", []))
        if diff_ci is None:
            reasons.append("the model has no bootstrap refits: no interval for this patient")
        elif not diff_ci[0] > 0:
            reasons.append(
                f"this patient's {sel.level:.0%} bootstrap interval of the difference "
                f"[{diff_ci[0]:.3f}, {diff_ci[1]:.3f}] includes 0"
            )
        reliable = supported and not reasons
        statement = (
            f"{arms[best]}: relapse-free at {h:g} {unit} {rfs[i, best]:.0%} vs "
            f"{rfs[i, nxt]:.0%} under {arms[nxt]}"
            if reliable
            else f"no reliable preference between {arms[best]} and {arms[nxt]}"
        )
        patients.append(
            {
                "participant_id": pid,
                "horizon": h,
                "time_unit": unit,
                "relapse_free": {
                    arm: {
                        "probability": float(rfs[i, k]),
                        "interval": None if lo is None else [float(lo[k]), float(hi[k])],
                    }
                    for k, arm in enumerate(arms)
                },
                "interval_level": sel.level,
                "curves": {
                    "times": [float(t) for t in grid],
                    **{arm: [float(v) for v in curves[i, k]] for k, arm in enumerate(arms)},
                },
                "recommended": arms[best],
                "next_best": arms[nxt],
                "difference": diff,
                "difference_interval": diff_ci,
                "reliable_preference": reliable,
                "statement": statement,
                "no_preference_reasons": reasons,
                "caveats": (
                    [f"{int(n_imputed[i])} missing feature value(s) set to the training median"]
                    if n_imputed[i]
                    else []
                )
                + (
                    [site_caveats[sites[i]]]
                    if sites is not None and sites[i] in site_caveats
                    else []
                ),
            }
        )
    model_summary = {
        "path": str(model_path),
        "kind": "durability",
        "learner": sel.model_,
        "site_harmonisation": sel.combat_ is not None,
        "brainmatch_version": meta["brainmatch_version"],
        "arms": arms,
        "horizon": h,
        "time_unit": unit,
        "selection_supported": supported,
        "selection": selection,
        "validation": meta.get("validation", {}),
    }
    result = DurabilityRecommendation(
        out_dir=None if out_dir is None else Path(out_dir), patients=patients, model=model_summary
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recommend.json", result.to_dict())
        rows = []
        for p in patients:
            row: dict[str, Any] = {ID: p["participant_id"]}
            for arm in arms:
                row[f"relapse_free__{arm}"] = p["relapse_free"][arm]["probability"]
            row.update(
                recommended=p["recommended"],
                reliable_preference=p["reliable_preference"],
                statement=p["statement"],
                difference=p["difference"],
            )
            rows.append(row)
        write_tsv(out / "recommend.tsv", pd.DataFrame(rows), float_format="%.6g")
    return result
