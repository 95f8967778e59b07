"""``brainmatch modalities``: the treatment knowledge base (circuits, systems, evidence)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from brainmatch.cli._common import out, user_errors
from brainmatch.errors import BrainmatchInputError

_FORMATS = ("table", "tsv", "json")


@user_errors
def modalities(
    modality: str | None = typer.Option(
        None, "--modality", help="Show one modality (key, e.g. cbt, ssri, rtms)."
    ),
    fmt: str = typer.Option("table", "--format", help="table, tsv or json."),
    knowledge_base: Path | None = typer.Option(
        None,
        "--knowledge-base",
        help="Another knowledge-base JSON file (checked against the schema).",
    ),
) -> None:
    """List treatments with the circuits / neurochemical systems each is reported to act on,
    the direction, the evidence grade (A meta-analysis ... E claim without a primary study)
    and the citation (DOI)."""
    from brainmatch.modalities import load_knowledge_base

    if fmt not in _FORMATS:
        raise BrainmatchInputError(f"--format {fmt!r}: choose one of {', '.join(_FORMATS)}")
    kb = load_knowledge_base(knowledge_base)
    links = kb.links()
    keys = [m["key"] for m in kb.modalities]
    if modality is not None:
        if modality not in keys:
            raise BrainmatchInputError(f"--modality {modality!r}: choose one of {', '.join(keys)}")
        links = links[links["modality"] == modality]
    if fmt == "tsv":
        typer.echo(links.to_csv(sep="\t", index=False, lineterminator="\n"), nl=False)
        return
    if fmt == "json":
        data = kb.to_dict()
        if modality is not None:
            data = {**data, "modalities": [m for m in data["modalities"] if m["key"] == modality]}
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"brainmatch modality knowledge base {kb.version}", show_lines=False)
    for col in ("modality", "link", "circuit / system", "direction", "grade", "citation"):
        table.add_column(col)
    for r in links.itertuples(index=False):
        where = r.circuit_label or r.system
        if r.region:
            where = f"{where}: {r.region}"
        table.add_row(
            r.modality_label,
            f"{r.kind} ({r.measure})",
            where,
            r.direction,
            f"{r.grade} {r.evidence}",
            f"{r.citation}" + (f" doi:{r.doi}" if r.doi else ""),
        )
    out.print(table)
    out.print(
        "Grades: A meta-analysis, B RCT, C single study, D review, E claim without a primary "
        "study. Links are hypotheses, not validated predictions.",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``modalities`` to the CLI."""
    app.command("modalities")(modalities)
