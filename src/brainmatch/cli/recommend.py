"""``brainmatch recommend``: recommend a treatment for new patients from a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import (
    echo_kv,
    output_folder,
    overwrite_option,
    progress_bar,
    user_errors,
)


@user_errors
def recommend(
    model: Path = typer.Argument(..., help="model.npz written by `brainmatch train`."),
    input: Path = typer.Argument(
        ..., help="Feature table of one or many patients, or a BIDS / fMRIPrep folder."
    ),
    out: Path = typer.Option(Path("recommendation"), "--out", "-o", help="Output folder."),
    overwrite: bool = overwrite_option(),
    clinical: Path | None = typer.Option(
        None,
        "--clinical",
        help="Table with the baseline / covariates / site the model needs, if INPUT lacks them.",
    ),
    derivatives: Path | None = typer.Option(
        None,
        "--derivatives",
        help="fMRIPrep folder of a BIDS INPUT (default INPUT/derivatives/fmriprep).",
    ),
    participant_label: list[str] | None = typer.Option(
        None, "--participant-label", help="Participant(s) of a BIDS INPUT."
    ),
    no_report: bool = typer.Option(False, "--no-report", help="Skip report.html."),
    trust_unsigned: bool = typer.Option(
        False,
        "--trust-unsigned",
        help="Use a model that is unsigned or signed with another key (with a warning); "
        "only for a file whose origin you know.",
    ),
) -> None:
    """Predict each arm's outcome with a prediction interval and recommend the best arm.

    Writes recommend.json, recommend.tsv and a one-page report.html into OUT.
    """
    from brainmatch.cli.train import flag_errors
    from brainmatch.durability.modelfile import is_durability_model

    inputs = [model, input, clinical, derivatives]
    # --- durability branch: a model from `train --time-column` (brainmatch.durability) ---
    if is_durability_model(model):
        from brainmatch.durability.recommend import recommend_durability
        from brainmatch.reports import durability as durability_report

        with output_folder(out, "recommend", overwrite=overwrite, inputs=inputs) as out:
            res = recommend_durability(
                model,
                input,
                out,
                clinical=clinical,
                derivatives=derivatives,
                participant=participant_label or None,
                trust_model=trust_unsigned,
            )
            if not no_report:
                durability_report.write_recommend_report(res, out)
        for p in res.patients[:20]:
            unit = p["time_unit"]
            echo_kv(
                p["participant_id"],
                {
                    "recommendation": p["statement"],
                    **{
                        f"relapse-free at {p['horizon']:g} {unit}, {a}": f"{q['probability']:.3f}"
                        + (
                            f" [{q['interval'][0]:.3f}, {q['interval'][1]:.3f}]"
                            if q["interval"]
                            else ""
                        )
                        for a, q in p["relapse_free"].items()
                    },
                },
            )
        echo_kv("written", {"json": str(out / "recommend.json"), "report": str(res.report_path)})
        return
    from brainmatch.reports.qc import write_reportlets
    from brainmatch.reports.selection import write_recommend_report
    from brainmatch.selection import recommend as recommend_fn

    claim = output_folder(out, "recommend", overwrite=overwrite, inputs=inputs)
    with claim as out, flag_errors(), progress_bar("recommending"):
        result = recommend_fn(
            model,
            input,
            out,
            clinical=clinical,
            derivatives=derivatives,
            participant=participant_label or None,
            trust_model=trust_unsigned,
        )
        if not no_report:
            write_recommend_report(result)
        write_reportlets(out / "features")  # QC of a BIDS input's extraction, if any
    for p in result.patients[:20]:
        echo_kv(
            p["participant_id"],
            {
                "recommendation": p["statement"],
                "difference": f"{p['advantage']:.2f} for {p['recommended']} over "
                f"{p['next_best']} "
                + (
                    f"(95% interval {p['advantage_interval'][0]:.2f} to "
                    f"{p['advantage_interval'][1]:.2f}; {100 * p['bootstrap_agreement']:.0f}% "
                    "of bootstrap models agree)"
                    if p["advantage_interval"]
                    else "(no bootstrap refits in the model file: no interval)"
                ),
                **{
                    f"predicted {a}": f"{q['value']:.2f}"
                    + (
                        f" [{q['interval'][0]:.1f}, {q['interval'][1]:.1f}]"
                        if q["interval"]
                        else ""
                    )
                    for a, q in p["predicted"].items()
                },
                "caveats": len(p["caveats"]),
            },
        )
    if len(result.patients) > 20:
        echo_kv("...", {"patients": len(result.patients)})
    echo_kv(
        "written",
        {
            "json": str(out / "recommend.json"),
            "report": str(result.report_path) if result.report_path else "(skipped)",
        },
    )


def register(app: typer.Typer) -> None:
    """Add ``recommend`` to the CLI."""
    app.command("recommend")(recommend)
