"""Per-run output tables in XCP-D / QSIRecon style, each with its JSON sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from brainmatch._io import write_json, write_text


def sidecar_path(path: Path) -> Path:
    """``x.tsv`` -> ``x.json`` (the BIDS sidecar of a tabular file)."""
    return path.with_name(path.name.removesuffix(".tsv") + ".json")


def write_sidecar(path: Path, meta: dict[str, Any]) -> Path:
    """Write the JSON sidecar of the TSV ``path``; returns the sidecar's path."""
    out = sidecar_path(path)
    write_json(out, meta)
    return out


def write_series(path: Path, series: np.ndarray, names: list[str]) -> None:
    """Write a (time x region) table as TSV with a header of region names."""
    fmt = "\t".join(["%.8g"] * series.shape[1])
    lines = ["\t".join(names)] + [fmt % tuple(row) for row in series.tolist()]
    write_text(path, "\n".join(lines) + "\n")


def write_matrix(path: Path, matrix: np.ndarray, names: list[str]) -> None:
    """Write a region x region matrix as XCP-D's relmat TSV (first column ``Node``)."""
    fmt = "%s" + "\t%.8g" * matrix.shape[1]
    lines = ["\t".join(["Node", *names])]
    lines += [fmt % (n, *row) for n, row in zip(names, matrix.tolist(), strict=True)]
    write_text(path, "\n".join(lines) + "\n")


def write_region_table(path: Path, columns: dict[str, list[Any]]) -> None:
    """Write a long table (one row per region) as a BIDS TSV (``n/a`` for missing)."""
    keys = list(columns)
    n = len(columns[keys[0]]) if keys else 0
    lines = ["\t".join(keys)]
    for i in range(n):
        cells = []
        for k in keys:
            v = columns[k][i]
            if isinstance(v, float | np.floating):
                cells.append("n/a" if not np.isfinite(v) else f"{float(v):.8g}")
            else:
                cells.append(str(v))
        lines.append("\t".join(cells))
    write_text(path, "\n".join(lines) + "\n")


__all__ = ["sidecar_path", "write_matrix", "write_region_table", "write_series", "write_sidecar"]
