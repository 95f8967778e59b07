"""``brainmatch sessions`` (mixed models of session-level data) and ``sessions-effects``."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import echo_kv, user_errors


def _pair(value: str, option: str) -> tuple[float, float]:
    from brainmatch.errors import BrainmatchInputError

    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise BrainmatchInputError(f"{option} {value!r}: give MIN,MAX, e.g. 0,100") from None
    if not lo < hi:
        raise BrainmatchInputError(f"{option} {value!r}: MIN must be below MAX")
    return lo, hi


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@user_errors
def sessions(
    input_file: Path = typer.Argument(
        ..., help="Session table (CSV / TSV / XLSX, one row per participant x session)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (new or empty)."),
    participants: Path | None = typer.Option(
        None,
        "--participants",
        help="Participant table merged on participant_id (e.g. features.tsv with brain measures).",
    ),
    brain_moderators: str | None = typer.Option(
        None,
        "--brain-moderators",
        help="Comma-separated participant-level columns used as moderators of carry-over.",
    ),
    window_minutes: float = typer.Option(
        60.0, "--window-minutes", help="Dosing window: given more than this many minutes before."
    ),
    rating_scale: str = typer.Option(
        "0,100", "--rating-scale", help="MIN,MAX of the fear / distress ratings (SUDS: 0,100)."
    ),
    level: float = typer.Option(0.95, "--level", help="Confidence level."),
    method: str = typer.Option("REML", "--method", help="REML or ML."),
    title: str | None = typer.Option(None, "--title", help="Report title."),
) -> None:
    """Mixed models of within-session change and between-session carry-over.

    Random intercepts and session slopes per participant; augmentation, its timing,
    session success, time of day, exercise and brain measures as moderators; the
    augmentation effect per session, on the final outcome, and per augmented session.
    Writes results.json, moderators.tsv, per_session_effects.tsv, dose_response.tsv,
    figures and report.html into --out.
    """
    from brainmatch.errors import BrainmatchInputError
    from brainmatch.reports.sessions import write_report
    from brainmatch.sessions.analysis import analyse_sessions, check_output_dir

    if method.upper() not in ("REML", "ML"):
        raise BrainmatchInputError(f"--method {method!r}: use REML or ML")
    check_output_dir(out, create=False)
    res = analyse_sessions(
        input_file,
        brain_moderators=tuple(_split(brain_moderators)),
        window_minutes=window_minutes,
        level=level,
        reml=method.upper() == "REML",
        rating_scale=_pair(rating_scale, "--rating-scale"),
        participants=participants,
    )
    res.save(out)
    report = write_report(res, out, title=title)
    items: dict[str, object] = {
        "participants": res.descriptives["n_participants"],
        "sessions": res.descriptives["n_sessions"],
    }
    tab = res.moderators()
    for model, term in (
        ("between", "augmented:success"),
        ("between", "augmented:window"),
        ("within", "exercise"),
        ("within", "tod_c"),
    ):
        row = tab[(tab["model"] == model) & (tab["term"] == term)]
        if not row.empty:
            r = row.iloc[0]
            items[f"{model} {term}"] = (
                f"{r.estimate:.3f} [{r.ci_lb:.3f}, {r.ci_ub:.3f}] p = {r.p:.3g}"
            )
    if res.final:
        f = res.final
        items["final outcome"] = (
            f"{f['estimate']:.3f} [{f['ci_lb']:.3f}, {f['ci_ub']:.3f}] (session {f['session']})"
        )
    items["report"] = str(report)
    echo_kv("session-level mixed models", items)


@user_errors
def sessions_effects(
    tables: list[Path] = typer.Argument(
        ..., help="Session tables of several trials (or folders holding sessions.tsv)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file of study-level effects to write."),
    labels: str | None = typer.Option(
        None, "--labels", help="Comma-separated study labels (default: folder names)."
    ),
    outcome: str = typer.Option(
        "symptom_score", "--outcome", help="Final outcome column (lower is better)."
    ),
    diagnosis_dimension: str | None = typer.Option(
        None, "--diagnosis-dimension", help="fear, distress, obsessive, externalising or other."
    ),
    ipd: Path | None = typer.Option(
        None, "--ipd", help="Also fit the one-stage IPD model and write it to this JSON file."
    ),
) -> None:
    """Study-level effects (Hedges' g of the final outcome) for meta --schema augmentation.

    Writes one row per comparison (study, type, timing, g, se, means, SDs, ns) and, with
    --ipd, the one-stage individual-participant model of the same participants.
    """
    from brainmatch._io import write_json, write_text
    from brainmatch.errors import BrainmatchInputError
    from brainmatch.sessions.effects import one_stage_ipd, study_effects

    if out.exists() and out.is_dir():
        raise BrainmatchInputError("--out is a folder; give a .csv file name", out)
    if out.suffix.lower() != ".csv":
        raise BrainmatchInputError("--out must end in .csv", out)
    labs = _split(labels) or None
    tab = study_effects(tables, labs, outcome=outcome, diagnosis_dimension=diagnosis_dimension)
    write_text(out, tab.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    items: dict[str, object] = {"comparisons": len(tab), "effects": str(out)}
    if ipd is not None:
        res = one_stage_ipd(tables, labs, outcome=outcome)
        write_json(ipd, res)
        items["one-stage IPD"] = (
            f"{res['estimate']:.4f} [{res['ci_lb']:.4f}, {res['ci_ub']:.4f}] "
            f"(n = {res['n']}, k = {res['k']})"
        )
        items["ipd"] = str(ipd)
    echo_kv("study-level effects", items)


def register(app: typer.Typer) -> None:
    """Add ``sessions`` and ``sessions-effects`` to the CLI."""
    app.command("sessions")(sessions)
    app.command("sessions-effects")(sessions_effects)
