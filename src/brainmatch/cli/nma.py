"""``brainmatch nma``: frequentist random-effects network meta-analysis."""

from __future__ import annotations

from pathlib import Path

import typer

from brainmatch.cli._common import echo_kv, output_folder, overwrite_option, user_errors


@user_errors
def nma(
    input_file: Path = typer.Argument(
        ...,
        help="Table with one row per pairwise comparison "
        "(CSV / TSV / XLSX), or a Metapsy data.csv.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    study: str = typer.Option("study", "--study", help="Study column."),
    treat1: str = typer.Option("treat1", "--treat1", help="Treatment of arm 1."),
    treat2: str = typer.Option("treat2", "--treat2", help="Treatment of arm 2."),
    effect: str | None = typer.Option(
        None, "--effect", help="Effect of arm 1 vs arm 2 (default TE)."
    ),
    se: str | None = typer.Option(None, "--se", help="Its standard error (default seTE)."),
    variance: str | None = typer.Option(None, "--variance", help="Or its variance."),
    arm1: str | None = typer.Option(
        None, "--arm1", help="Arm-1 id, when a study has two arms of one treatment."
    ),
    arm2: str | None = typer.Option(None, "--arm2", help="Arm-2 id (likewise)."),
    n_control: str | None = typer.Option(
        None,
        "--n-control",
        help="Size of arm 2; needed for multi-arm studies that report "
        "only comparisons against a shared arm.",
    ),
    select: list[str] = typer.Option(
        [], "--select", help="Keep rows with COLUMN=VALUE; repeatable."
    ),
    reference: str | None = typer.Option(None, "--reference", help="Reference treatment."),
    method: str = typer.Option("DL", "--method", help="tau² estimator: DL or REML."),
    smaller_is_better: bool = typer.Option(
        False, "--smaller-is-better", help="Rank treatments with smaller effects as better."
    ),
    better: str | None = typer.Option(
        None,
        "--better",
        help="lower or higher: which effects rank better (as train's --better; "
        "--smaller-is-better is --better lower).",
    ),
    rho: float = typer.Option(0.5, "--rho", help="Metapsy: correlation between instruments."),
    level: float = typer.Option(0.95, "--level", help="Confidence level."),
    title: str | None = typer.Option(None, "--title", help="Report title."),
    overwrite: bool = overwrite_option(),
) -> None:
    """Compare many treatments at once (netmeta-style): league table, P-scores, inconsistency.

    Writes results.json, league_table.tsv, effects_vs_reference.tsv, edges.tsv, a network
    graph and a forest plot (SVG + PNG) and report.html into --out.
    """
    from brainmatch.errors import BrainmatchInputError
    from brainmatch.evidence.analysis import network_analysis

    if better is not None and better not in ("lower", "higher"):
        raise BrainmatchInputError(f"--better must be lower or higher, got {better!r}")
    larger_is_better = better == "higher" if better is not None else not smaller_is_better
    from brainmatch.reports import fmt_num, p_text
    from brainmatch.reports.evidence import write_nma_report

    with output_folder(out, "nma", overwrite=overwrite, inputs=[input_file]) as out:
        result = network_analysis(
            input_file,
            study=study,
            treat1=treat1,
            treat2=treat2,
            effect=effect,
            se=se,
            variance=variance,
            arm1=arm1,
            arm2=arm2,
            n_control=n_control,
            select=list(select),
            rho=rho,
            reference=reference,
            method_tau=method,
            larger_is_better=larger_is_better,
            level=level,
            title=title,
        )
        result.save(out)
        write_nma_report(result, out)
    res = result.to_dict()
    best = sorted(res["pscore_random"].items(), key=lambda kv: -kv[1])
    d = res["design_by_treatment"]
    echo_kv(
        "network meta-analysis",
        {
            "studies": f"{res['n_studies']} ({res['n_multiarm_studies']} multi-arm)",
            "treatments": len(res["treatments"]),
            "tau2": f"{fmt_num(res['tau2'], 4)} ({res['method_tau']})",
            "Q": f"{fmt_num(res['Q'], 2)} (df = {res['df']})",
            "inconsistency": f"Q = {fmt_num(d['Q_inc'], 2)}, df = {d['df_inc']}"
            + (f", {p_text(d['p_inc'])}" if d.get("p_inc") is not None else ""),
            "ranking (P-score)": ", ".join(f"{t} {p:.2f}" for t, p in best),
            "report": str(out / "report.html"),
            **({"warning": res["warnings"][0]} if res["warnings"] else {}),
        },
    )


def register(app: typer.Typer) -> None:
    """Add ``nma`` to the CLI."""
    app.command("nma")(nma)
