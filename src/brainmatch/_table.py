"""The one table reader of every command: Parquet, TSV, CSV (comma, semicolon or tab;
decimal commas with semicolons), Excel workbooks.

``brainmatch.evidence.readers.read_table`` (``meta``, ``nma``) and
``brainmatch.selection.data.read_table`` (``train``, ``recommend``) both read through
:func:`read_any_table`, so a semicolon-separated CSV written by a European Excel works
for every command.
"""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path

import pandas as pd

from brainmatch.errors import BrainmatchInputError

#: Cells read as missing.
NA_VALUES = ["NA", "N/A", "n/a", "na", "NaN", "nan", "", "."]


def _csv_dialect(path: Path, compression: str | None) -> tuple[str, str]:
    """Separator and decimal mark of a CSV, sniffed from its first 20 kB."""
    if compression == "gzip":
        import gzip

        with gzip.open(path, "rt", encoding="utf-8-sig", errors="replace") as fh:
            head = fh.read(20000)
    else:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            head = fh.read(20000)
    try:
        sep = csv.Sniffer().sniff(head, delimiters=",;\t").delimiter
    except csv.Error:
        sep = ","
    decimal = "," if sep == ";" and re.search(r"(?<![\d,])-?\d+,\d+", head) else "."
    return sep, decimal


def read_any_table(
    path: str | Path,
    what: str = "",
    *,
    header: bool = True,
    sheet: str | int | None = None,
) -> pd.DataFrame:
    """Read a table file; refuse, with one clear message, anything that is not one.

    Parameters
    ----------
    path : str or Path
        ``.parquet`` / ``.pq``; ``.tsv`` / ``.tab`` / ``.txt`` (tab separated, also
        ``.tsv.gz``); ``.csv`` (comma, semicolon or tab separated, sniffed; decimal commas
        with semicolons; also ``.csv.gz``); ``.xlsx`` / ``.xlsm`` / ``.xls`` (first sheet).
    what : str
        What the table is, for messages ("features", "outcomes", ...; empty: "table").
    header : bool
        False: the file is read as raw rows for a caller that finds its own header (e.g.
        below title lines): every row is data, cells are strings (Excel: as stored),
        blank lines are kept as rows of missing cells, columns are numbered (Parquet
        files always have a header and are refused).
    sheet : str or int, optional
        Excel sheet (name or 0-based position; default the first).

    Returns
    -------
    DataFrame
        ``NA``, ``n/a``, ``NaN`` and empty cells are missing; column names stripped.
    """
    path = Path(path)
    label = f"{what} table" if what else "table"
    if not path.exists():
        raise BrainmatchInputError(f"{what} file not found" if what else "file not found", path)
    if path.is_dir():
        raise BrainmatchInputError(f"expected a {label} file, got a folder", path)
    name = path.name.lower()
    gz = "gzip" if name.endswith(".gz") else None
    suffix = Path(name[:-3]).suffix if gz else path.suffix.lower()
    raw: dict[str, object] = (
        {}
        if header
        else {"header": None, "dtype": str, "keep_default_na": False, "skip_blank_lines": False}
    )
    # pandas' default float parser is off by one unit in the last place for about a third
    # of the values a float64 writer prints in full; "round_trip" reads them back exactly
    # (about 2x the parse time, under 2 s for 5 million values), so a table gives the same
    # results as the DataFrame it was written from (raw text rows are unaffected)
    try:
        if suffix in (".parquet", ".pq") and not header:
            raise BrainmatchInputError(f"a Parquet file is not accepted as a {label}", path)
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".xlsx", ".xlsm", ".xls"):
            if suffix != ".xls" and not zipfile.is_zipfile(path):
                raise BrainmatchInputError(
                    f"not an Excel workbook (a {suffix} file is a zip archive; this one is not: "
                    "save it from Excel again, or export it as .csv)",
                    path,
                )
            excel: dict[str, object] = {"sheet_name": 0 if sheet is None else sheet}
            if not header:
                excel.update(header=None, dtype=object)
            df = pd.read_excel(path, na_values=NA_VALUES, **excel)
        elif suffix in (".tsv", ".tab", ".txt"):
            df = pd.read_csv(
                path,
                sep="\t",
                na_values=NA_VALUES,
                compression=gz,
                float_precision="round_trip",
                **raw,
            )
        elif suffix == ".csv":
            sep, decimal = _csv_dialect(path, gz)
            df = pd.read_csv(
                path,
                sep=sep,
                decimal=decimal,
                na_values=NA_VALUES,
                encoding="utf-8-sig",
                encoding_errors="replace",
                compression=gz,
                float_precision="round_trip",
                **raw,
            )
        else:
            raise BrainmatchInputError(
                f"unknown {label} format {suffix!r} (unsupported file type); use .csv, .tsv, "
                ".xlsx or .parquet",
                path,
            )
    except BrainmatchInputError:
        raise
    except Exception as exc:  # pandas / pyarrow / openpyxl parse errors
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BrainmatchInputError(f"cannot read the {label}: {reason}", path) from None
    if df.empty:
        raise BrainmatchInputError(f"the {label} has no rows", path)
    df.columns = [str(c).strip() for c in df.columns]
    return df
