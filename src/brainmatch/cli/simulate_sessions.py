"""``brainmatch simulate-sessions``: a session-level augmentation trial with known truth."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import echo_kv, user_errors


def _effect(value: str) -> tuple[float, bool]:
    from brainmatch.errors import BrainmatchInputError

    named = {
        "null": (0.0, False),
        "none": (0.0, True),
        "realistic": (1.0, True),
        "strong": (2.0, True),
    }
    if value.lower() in named:
        return named[value.lower()]
    try:
        v = float(value)
    except ValueError:
        raise BrainmatchInputError(
            f"--effect-size {value!r}: use null, none, realistic, strong or a number"
        ) from None
    if v < 0:
        raise BrainmatchInputError("--effect-size must be >= 0")
    return v, True


@user_errors
def simulate_sessions(
    out_dir: Path = typer.Argument(..., help="Folder to create (must be new or empty)."),
    n_per_arm: int = typer.Option(40, "--n-per-arm", help="Participants per arm."),
    n_sessions: int = typer.Option(8, "--n-sessions", help="Exposure sessions (weekly)."),
    augmentation_type: str = typer.Option(
        "nmda",
        "--augmentation-type",
        help="pharmacological, nmda, psychedelic, brain_stimulation, exercise, "
        "sleep_circadian or other.",
    ),
    timing: str = typer.Option("before", "--timing", help="before, during or after the session."),
    effect_size: str = typer.Option(
        "realistic",
        "--effect-size",
        help="null (no planted moderator at all), none (no augmentation effect, other "
        "moderators kept), realistic (x1), strong (x2) or a multiplier of the augmentation "
        "effects.",
    ),
    dose_probability: float = typer.Option(
        0.8, "--dose-probability", help="Chance that an active-arm session is augmented."
    ),
    dropout: float = typer.Option(0.1, "--dropout", help="Expected share who drop out."),
    arms: str = typer.Option("placebo,active", "--arms", help="CONTROL,ACTIVE arm names."),
    study: str | None = typer.Option(None, "--study", help="Study label (default: folder name)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same data."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier simulate-sessions output in OUT_DIR."
    ),
) -> None:
    """Simulate a session-level augmentation trial (exposure therapy + augmentation).

    Writes sessions.tsv (the session schema), participants.tsv, features.tsv (baseline
    vmPFC-amygdala connectivity, for brainmatch train), phenotype/outcomes.tsv and
    ground_truth.{json,tsv} (true coefficients; every participant's final score under
    both arms).
    """
    from brainmatch.errors import BrainmatchInputError
    from brainmatch.sessions.simulate import SessionTrialSpec, simulate_session_trial

    names = tuple(a.strip() for a in arms.split(",") if a.strip())
    if len(names) != 2:
        raise BrainmatchInputError(f"--arms {arms!r}: give two names, CONTROL,ACTIVE")
    size, moderators = _effect(effect_size)
    spec = SessionTrialSpec(
        n_per_arm=n_per_arm,
        n_sessions=n_sessions,
        augmentation_type=augmentation_type,
        timing=timing,
        effect_size=size,
        moderators=moderators,
        dose_probability=dose_probability,
        dropout=dropout,
        seed=seed,
        study=study or out_dir.name,
        arms=(names[0], names[1]),
    )
    path = simulate_session_trial(spec, out_dir, overwrite=overwrite)
    echo_kv(
        "simulated session-level trial",
        {
            "folder": str(path),
            "participants": 2 * n_per_arm,
            "sessions": str(path / "sessions.tsv"),
            "ground truth": str(path / "ground_truth.json"),
        },
    )


def register(app: typer.Typer) -> None:
    """Add ``simulate-sessions`` to the CLI."""
    app.command("simulate-sessions")(simulate_sessions)
