"""``brainmatch meta``: effect-size meta-analysis (metafor-exact) with plots and a report."""

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


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@user_errors
def meta(
    input_file: Path = typer.Argument(
        ..., help="CSV / TSV / XLSX table of studies, or a Metapsy data.csv."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    effect: str | None = typer.Option(None, "--effect", help="Column with precomputed effects."),
    variance: str | None = typer.Option(None, "--variance", help="Column with their variances."),
    se: str | None = typer.Option(None, "--se", help="Column with their standard errors."),
    measure: str | None = typer.Option(
        None,
        "--measure",
        help="Compute effects from raw data: SMD (Hedges' g from means, "
        "SDs, ns), SMDC (from change scores), MD, OR (log odds ratio), RR (log risk ratio).",
    ),
    m1: str = typer.Option("m1", "--m1", help="Raw data: mean (or mean change) of group 1."),
    sd1: str = typer.Option("sd1", "--sd1", help="Raw data: SD of group 1."),
    n1: str = typer.Option("n1", "--n1", help="Raw data: size of group 1."),
    m2: str = typer.Option("m2", "--m2", help="Raw data: mean of group 2."),
    sd2: str = typer.Option("sd2", "--sd2", help="Raw data: SD of group 2."),
    n2: str = typer.Option("n2", "--n2", help="Raw data: size of group 2."),
    events1: str = typer.Option("events1", "--events1", help="Raw data: events in group 1."),
    events2: str = typer.Option("events2", "--events2", help="Raw data: events in group 2."),
    method: str = typer.Option("REML", "--method", help="FE, REML, ML, DL, PM or HE."),
    test: str = typer.Option("z", "--test", help="z, or knha (Knapp-Hartung)."),
    level: float = typer.Option(0.95, "--level", help="Confidence level."),
    subgroup: str | None = typer.Option(None, "--subgroup", help="Column for subgroups."),
    moderators: str | None = typer.Option(
        None, "--moderators", help="Comma-separated moderator columns."
    ),
    select: list[str] = typer.Option(
        [],
        "--select",
        help="Keep rows with COLUMN=VALUE (VALUE may be a|b; COLUMN!=VALUE drops); repeatable.",
    ),
    study: str | None = typer.Option(None, "--study", help="Column with study labels."),
    aggregate: str | None = typer.Option(
        None,
        "--aggregate",
        help="Columns identifying one comparison; rows sharing them "
        "(several instruments) are combined first.",
    ),
    rho: float = typer.Option(0.5, "--rho", help="Correlation between combined outcomes."),
    multiarm: str = typer.Option(
        "split",
        "--multiarm",
        help="Comparisons sharing a control group: split (divide the "
        "control group between them) or ignore.",
    ),
    control: str | None = typer.Option(
        None,
        "--control",
        help="Column naming the control arm (with --study: rows sharing both share a control).",
    ),
    n_control: str | None = typer.Option(
        None, "--n-control", help="Column with the control group's size."
    ),
    schema: str | None = typer.Option(
        None,
        "--schema",
        help="'augmentation': check the type / timing / diagnosis_dimension columns.",
    ),
    title: str | None = typer.Option(None, "--title", help="Report title."),
    xlabel: str | None = typer.Option(None, "--xlabel", help="Effect-size axis label."),
    overwrite: bool = overwrite_option(),
) -> None:
    """Pool effect sizes (FE / REML / ML / DL / PM / HE) exactly as R's metafor does.

    Writes results.json, studies.tsv, leave_one_out.tsv, forest and funnel plots (SVG +
    PNG) and report.html into --out.
    """
    from brainmatch.evidence.analysis import meta_analysis
    from brainmatch.evidence.readers import RawColumns
    from brainmatch.reports import fmt_num, fmt_p, p_text
    from brainmatch.reports.evidence import write_meta_report

    with output_folder(out, "meta", overwrite=overwrite, inputs=[input_file]) as out:
        with progress_bar("meta-analysis") as update:
            result = meta_analysis(
                input_file,
                effect=effect,
                se=se,
                variance=variance,
                measure=measure,
                raw=RawColumns(
                    m1=m1, sd1=sd1, n1=n1, m2=m2, sd2=sd2, n2=n2, events1=events1, events2=events2
                ),
                study=study,
                select=list(select),
                aggregate=_split(aggregate),
                rho=rho,
                multiarm=multiarm,
                control=control,
                n_control=n_control,
                method=method,
                test=test,
                level=level,
                subgroup=subgroup,
                moderators=_split(moderators),
                schema=schema,
                xlabel=xlabel,
                title=title,
                progress=lambda d, t: update(d, t + 5),
            )
            result.save(out, progress=lambda d, t: update(d + 4, t + 5))
            write_meta_report(result, out)
            update(9, 9)
    res = result.to_dict()
    items = {
        "k": res["k"],
        "estimate": f"{res['estimate']:.4f} [{res['ci_lb']:.4f}, {res['ci_ub']:.4f}]",
        "p": fmt_p(res["pval"]),
        "tau2": fmt_num(res["tau2"], 4),
        "I2": f"{fmt_num(res['I2'], 1)}%",
        "Q": f"{fmt_num(res['QE'], 2)} ({p_text(res['QEp'])})",
    }
    if res.get("pi_lb") is not None:
        items["prediction interval"] = f"[{res['pi_lb']:.4f}, {res['pi_ub']:.4f}]"
    if "subgroups" in res:
        s = res["subgroups"]
        items["subgroup test"] = (
            f"Q = {s['Q_between']:.2f}, df = {s['df_between']}, {p_text(s['p_between'])}"
        )
    for w in res["warnings"]:
        items.setdefault("warning", w)
    items["report"] = str(out / "report.html")
    echo_kv(f"meta-analysis ({res['model']}, test={res['test']})", items)


def register(app: typer.Typer) -> None:
    """Add ``meta`` to the CLI."""
    app.command("meta")(meta)
