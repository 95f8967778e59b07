"""Readers of peak-coordinate files for coordinate-based meta-analysis (``brainmatch cbma``).

Every reader returns the same tidy table, a :class:`CoordinateTable`: one row per
focus with the columns ``experiment``, ``x``, ``y``, ``z`` (MNI mm), ``space`` (the
space the focus was *reported* in: ``MNI`` or ``TAL``), ``n_subjects``, the reported
coordinates ``x_reported`` / ``y_reported`` / ``z_reported``, the source ``row`` (line
or spreadsheet row, for messages) and any further columns of the input (such as
``contrast``).

Formats
-------
- **Sleuth / GingerALE text** (``.txt``): ``// Reference=MNI`` (or ``Talairach``), then
  experiments separated by blank lines, each ``// Study: contrast`` and
  ``// Subjects=N`` followed by one ``x y z`` line per focus.
- **NiMARE dataset JSON** (``.json``): ``{study: {"contrasts": {id: {"coords":
  {"space", "x", "y", "z"}, "metadata": {"sample_sizes": [...]}}}}}``; several sample
  sizes of one contrast are averaged, as NiMARE does.
- **Tables** (``.tsv``, ``.csv``, ``.xlsx``, ``.xls``) with columns ``experiment``,
  ``x``, ``y``, ``z``, ``space`` and ``n_subjects`` (common aliases such as
  ``Experiments``/``Articles``/``study``, ``Subjects``/``n``, ``Coordinates space``
  are understood).  **pyALE spreadsheets** (``coordinates.xlsx`` of pyALE and of
  ``amnsbr/antidepressants_meta``) are tables whose experiments are separated by blank
  rows: there an experiment is a run of consecutive rows with the same name, sample
  size and tags, as pyALE defines it; elsewhere all rows with the same ``experiment``
  form one experiment.

Talairach foci are converted to MNI with Lancaster et al. (2007)'s ``tal2icbm``
transforms (``spm`` by default, as pyALE and GingerALE do for SPM-normalised studies;
``fsl`` and ``other`` on request); the conversion is recorded in
:attr:`CoordinateTable.notes`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainmatch._table import read_any_table
from brainmatch.errors import BrainmatchInputError

#: Lancaster et al. 2007 (Hum Brain Mapp 28:1194) ``icbm2tal`` affine matrices; their
#: inverses take Talairach to MNI (ICBM-152) coordinates.
LANCASTER_ICBM2TAL: dict[str, np.ndarray] = {
    "spm": np.array(
        [
            [0.9254, 0.0024, -0.0118, -1.0207],
            [-0.0048, 0.9316, -0.0871, -1.7667],
            [0.0152, 0.0883, 0.8924, 4.0926],
            [0.0, 0.0, 0.0, 1.0],
        ]
    ),
    "fsl": np.array(
        [
            [0.9464, 0.0034, -0.0026, -1.0680],
            [-0.0083, 0.9479, -0.0580, -1.0239],
            [0.0053, 0.0617, 0.9010, 3.1883],
            [0.0, 0.0, 0.0, 1.0],
        ]
    ),
    "other": np.array(
        [
            [0.9357, 0.0029, -0.0072, -1.0423],
            [-0.0065, 0.9396, -0.0726, -1.3940],
            [0.0103, 0.0752, 0.8967, 3.6475],
            [0.0, 0.0, 0.0, 1.0],
        ]
    ),
}

TABLE_SUFFIXES = (".tsv", ".csv", ".xlsx", ".xls")
REQUIRED = ("experiment", "x", "y", "z", "space", "n_subjects")

#: Accepted spellings of the required columns (compared lower-case, without spaces,
#: underscores and dashes).
_ALIASES: dict[str, tuple[str, ...]] = {
    "experiment": (
        "experiment",
        "experiments",
        "articles",
        "article",
        "study",
        "studyid",
        "studies",
        "author",
        "authors",
        "id",
    ),
    "x": ("x",),
    "y": ("y",),
    "z": ("z",),
    "space": ("space", "coordinatesspace", "coordinatespace", "reference", "template"),
    "n_subjects": ("nsubjects", "subjects", "n", "samplesize", "samplesizes", "nsubj"),
}

_SPACES = {"mni": "MNI", "icbm": "MNI", "tal": "TAL", "talairach": "TAL"}


@dataclass
class CoordinateTable:
    """Foci of a coordinate-based meta-analysis, in MNI space.

    Attributes
    ----------
    foci : pandas.DataFrame
        One row per focus (columns described in the module docstring).
    source : Path
        The file read.
    notes : list of str
        What was done to the input on the way (Talairach conversion, selections).
    """

    foci: pd.DataFrame
    source: Path
    notes: list[str] = field(default_factory=list)

    @property
    def experiments(self) -> pd.DataFrame:
        """One row per experiment: ``experiment``, ``n_subjects``, ``n_foci``, ``space``."""
        grouped = self.foci.groupby("experiment", sort=False)
        return pd.DataFrame(
            {
                "experiment": list(grouped.groups),
                "n_subjects": grouped["n_subjects"].first().to_numpy(),
                "n_foci": grouped.size().to_numpy(),
                "space": grouped["space"].first().to_numpy(),
            }
        )

    @property
    def n_experiments(self) -> int:
        """Number of experiments."""
        return int(self.foci["experiment"].nunique())

    @property
    def n_subjects(self) -> float:
        """Total number of subjects over experiments."""
        return float(self.experiments["n_subjects"].sum())

    def to_nimare_dict(self) -> dict[str, Any]:
        """The foci as a NiMARE dataset dictionary (MNI coordinates, one contrast per study)."""
        out: dict[str, Any] = {}
        for name, rows in self.foci.groupby("experiment", sort=False):
            out[str(name)] = {
                "contrasts": {
                    "1": {
                        "coords": {
                            "space": "MNI",
                            "x": rows["x"].tolist(),
                            "y": rows["y"].tolist(),
                            "z": rows["z"].tolist(),
                        },
                        "metadata": {"sample_sizes": [float(rows["n_subjects"].iloc[0])]},
                    }
                }
            }
        return out


def tal_to_mni(xyz: np.ndarray, transform: str = "spm") -> np.ndarray:
    """Convert Talairach coordinates to MNI with Lancaster et al. (2007)'s ``tal2icbm``.

    Parameters
    ----------
    xyz : ndarray of shape (n, 3)
        Talairach coordinates in mm.
    transform : {"spm", "fsl", "other"}
        Which of Lancaster's transforms: for studies normalised with SPM, FSL or other
        software (``other`` is NiMARE's ``tal2mni``).

    Returns
    -------
    ndarray of shape (n, 3)
        MNI coordinates in mm (not rounded).
    """
    if transform not in LANCASTER_ICBM2TAL:
        raise BrainmatchInputError(
            f"unknown Talairach transform {transform!r}; choose one of "
            f"{', '.join(LANCASTER_ICBM2TAL)}"
        )
    matrix = np.linalg.inv(LANCASTER_ICBM2TAL[transform])
    xyz = np.asarray(xyz, dtype=float).reshape(-1, 3)
    return xyz @ matrix[:3, :3].T + matrix[:3, 3]


def parse_selection(items: list[str] | None) -> dict[str, list[str]]:
    """Parse ``COLUMN=VALUE`` strings; the same column given twice keeps either value."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise BrainmatchInputError(f"--select expects COLUMN=VALUE, got {item!r}")
        column, value = item.split("=", 1)
        column = column.strip()
        if not column:
            raise BrainmatchInputError(f"--select expects COLUMN=VALUE, got {item!r}")
        out.setdefault(column, []).append(value.strip())
    return out


def read_coordinates(
    path: str | Path,
    *,
    select: dict[str, list[str]] | list[str] | None = None,
    space: str | None = None,
    tal_transform: str = "spm",
    sheet: str | int | None = None,
) -> CoordinateTable:
    """Read foci from a Sleuth text file, a NiMARE JSON file or a table.

    Parameters
    ----------
    path : str or Path
        ``.txt`` (Sleuth / GingerALE), ``.json`` (NiMARE dataset) or ``.tsv`` / ``.csv`` /
        ``.xlsx`` / ``.xls`` (table, including pyALE's spreadsheet format).
    select : dict or list of str, optional
        Keep only rows whose column equals one of the values (``{"contrast":
        ["Untreated<Treated"]}`` or ``["contrast=Untreated<Treated"]``); several columns
        must all match.  Column names and values are compared case-insensitively.
    space : {"MNI", "TAL"}, optional
        Space of every focus when a table has no ``space`` column.
    tal_transform : {"spm", "fsl", "other"}
        Lancaster transform used for Talairach foci.
    sheet : str or int, optional
        Worksheet of a spreadsheet (default: the first).

    Returns
    -------
    CoordinateTable

    Raises
    ------
    BrainmatchInputError
        When the file is missing or malformed: the message names the file, the row or
        line and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise BrainmatchInputError("no such file", path)
    selection = parse_selection(select) if isinstance(select, list) else (select or {})
    suffix = path.suffix.lower()
    if suffix == ".txt":
        foci = _read_sleuth(path)
    elif suffix == ".json":
        foci = _read_nimare_json(path)
    elif suffix in TABLE_SUFFIXES:
        foci = _read_table(path, space=space, sheet=sheet)
    else:
        raise BrainmatchInputError(
            f"unknown coordinate file type {suffix or '(none)'!r}: use a Sleuth text file "
            "(.txt), a NiMARE dataset (.json) or a table (.tsv, .csv, .xlsx)",
            path,
        )
    notes: list[str] = []
    if selection:
        foci = _apply_selection(foci, selection, path)
        notes.append(
            "kept rows with "
            + " and ".join(f"{col} = {' or '.join(vals)}" for col, vals in selection.items())
        )
    foci = _finish(foci, path, tal_transform, notes)
    return CoordinateTable(foci=foci, source=path, notes=notes)


# --------------------------------------------------------------------------- readers


def _read_sleuth(path: Path) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    rows: list[dict[str, Any]] = []
    space: str | None = None
    name: str | None = None
    n_subjects: float | None = None
    header_open = False  # inside a run of // lines
    counter = 0
    for lineno, raw in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        line = raw.strip()
        if not line:
            name, n_subjects, header_open = None, None, False
            continue
        if line.startswith("//"):
            body = line[2:].strip()
            key, _, value = body.partition("=")
            key_norm = key.strip().lower()
            if key_norm == "reference":
                space = _parse_space(value, path, f"line {lineno}")
            elif key_norm == "subjects":
                try:
                    n_subjects = float(value.strip())
                except ValueError:
                    raise BrainmatchInputError(
                        f"line {lineno}: 'Subjects=' must be a number, got {value.strip()!r}", path
                    ) from None
            else:
                if not header_open or name is None:
                    name, n_subjects = body, None
                else:
                    name = f"{name} {body}"
            header_open = True
            continue
        header_open = False
        if space is None:
            raise BrainmatchInputError(
                "a Sleuth file must start with '// Reference=MNI' or '// Reference=Talairach'", path
            )
        if name is None:
            counter += 1
            name = f"experiment {counter} (line {lineno})"
        if n_subjects is None:
            raise BrainmatchInputError(
                f"line {lineno}: experiment {name!r} has no '// Subjects=N' line before its foci",
                path,
            )
        parts = line.replace(",", " ").split()
        if len(parts) != 3:
            raise BrainmatchInputError(
                f"line {lineno}: expected three coordinates 'x y z', got {raw.strip()!r}", path
            )
        try:
            x, y, z = (float(p) for p in parts)
        except ValueError:
            raise BrainmatchInputError(
                f"line {lineno}: non-numeric coordinate in {raw.strip()!r}", path
            ) from None
        rows.append(
            {
                "experiment": name,
                "x": x,
                "y": y,
                "z": z,
                "space": space,
                "n_subjects": n_subjects,
                "row": f"line {lineno}",
            }
        )
    if not rows:
        raise BrainmatchInputError("no foci found in the Sleuth file", path)
    foci = pd.DataFrame(rows)
    # The same header twice is two experiments of one name: tell them apart.
    return _disambiguate_blocks(foci, block=_runs(foci, ["experiment", "n_subjects"]), extra=[])


def _read_nimare_json(path: Path) -> pd.DataFrame:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BrainmatchInputError(f"not valid JSON ({exc})", path) from None
    if not isinstance(data, dict):
        raise BrainmatchInputError("a NiMARE dataset JSON must be an object of studies", path)
    rows: list[dict[str, Any]] = []
    for study, content in data.items():
        contrasts = content.get("contrasts") if isinstance(content, dict) else None
        if not isinstance(contrasts, dict):
            raise BrainmatchInputError(f"study {study!r} has no 'contrasts' object", path)
        for cid, contrast in contrasts.items():
            where = f"study {study!r}, contrast {cid!r}"
            coords = contrast.get("coords") if isinstance(contrast, dict) else None
            if not coords:
                continue  # an image-only contrast: nothing for a coordinate analysis
            missing = [k for k in ("space", "x", "y", "z") if k not in coords]
            if missing:
                raise BrainmatchInputError(f"{where}: 'coords' lacks {', '.join(missing)}", path)
            xs, ys, zs = coords["x"], coords["y"], coords["z"]
            if not (len(xs) == len(ys) == len(zs)):
                raise BrainmatchInputError(f"{where}: x, y and z have different lengths", path)
            meta = contrast.get("metadata") or {}
            sizes = meta.get("sample_sizes", meta.get("sample_size"))
            if sizes is None:
                raise BrainmatchInputError(f"{where}: metadata has no 'sample_sizes'", path)
            sizes_list = sizes if isinstance(sizes, list) else [sizes]
            try:
                n = float(np.mean([float(s) for s in sizes_list]))
            except (TypeError, ValueError):
                raise BrainmatchInputError(
                    f"{where}: sample_sizes must be numbers, got {sizes!r}", path
                ) from None
            for i, (x, y, z) in enumerate(zip(xs, ys, zs, strict=True)):
                rows.append(
                    {
                        "experiment": f"{study}-{cid}",
                        "x": x,
                        "y": y,
                        "z": z,
                        "space": coords["space"],
                        "n_subjects": n,
                        "row": f"{where}, focus {i + 1}",
                    }
                )
    if not rows:
        raise BrainmatchInputError("no coordinates found in the NiMARE dataset", path)
    foci = pd.DataFrame(rows)
    for col in ("x", "y", "z"):
        values = pd.to_numeric(foci[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            first = foci.loc[bad].iloc[0]
            raise BrainmatchInputError(
                f"{first['row']}: non-numeric {col} value {first[col]!r}", path
            )
        foci[col] = values
    foci["space"] = [
        _parse_space(s, path, str(r)) for s, r in zip(foci["space"], foci["row"], strict=True)
    ]
    return foci


def _read_table(path: Path, *, space: str | None, sheet: str | int | None) -> pd.DataFrame:
    # the one table reader, as raw rows: the header is found below any title lines
    raw = read_any_table(path, header=False, sheet=sheet)
    raw = raw.dropna(axis=1, how="all")
    # the header is the first non-blank row
    blank = raw.isna().all(axis=1)
    if blank.all():
        raise BrainmatchInputError("the table is empty", path)
    first = int(np.flatnonzero(~blank.to_numpy())[0])
    header = [str(h).strip() for h in raw.iloc[first].tolist()]
    body = raw.iloc[first + 1 :].copy()
    body.columns = header
    # file row numbers (1-based, as a spreadsheet shows them)
    body["row"] = np.arange(first + 2, first + 2 + len(body))
    columns = _map_columns(header, path, has_space_option=space is not None)
    body = body.rename(columns={v: k for k, v in columns.items()})
    if "space" not in body.columns:
        body["space"] = space
    blank_rows = body.drop(columns="row").isna().all(axis=1)
    block = blank_rows.cumsum().to_numpy()
    body = body.loc[~blank_rows.to_numpy()].copy()
    body["_block"] = block[~blank_rows.to_numpy()]
    if body.empty:
        raise BrainmatchInputError("the table has a header but no rows", path)
    # numbers
    for col in ("x", "y", "z", "n_subjects"):
        values = pd.to_numeric(
            body[col].astype(str).str.strip().str.replace(",", ".", regex=False), errors="coerce"
        )
        bad = values.isna()
        if bad.any():
            r = body.loc[bad].iloc[0]
            shown = "an empty cell" if pd.isna(r[col]) else f"{r[col]!r}"
            n_bad = int(bad.sum())
            more = f" (and {n_bad - 1} more rows)" if n_bad > 1 else ""
            raise BrainmatchInputError(
                f"row {r['row']}: column {header_name(columns, col)!r} must be a number, "
                f"found {shown}{more}",
                path,
            )
        body[col] = values.astype(float)
    missing_name = body["experiment"].isna()
    if missing_name.any():
        raise BrainmatchInputError(
            f"row {body.loc[missing_name, 'row'].iloc[0]}: column "
            f"{header_name(columns, 'experiment')!r} is empty",
            path,
        )
    body["experiment"] = body["experiment"].astype(str).str.strip()
    bad_space = body["space"].isna()
    if bad_space.any():
        raise BrainmatchInputError(
            f"row {body.loc[bad_space, 'row'].iloc[0]}: column "
            f"{header_name(columns, 'space')!r} is empty (MNI or TAL)",
            path,
        )
    body["space"] = [
        _parse_space(s, path, f"row {r}") for s, r in zip(body["space"], body["row"], strict=True)
    ]
    extra = [c for c in body.columns if c not in (*REQUIRED, "row", "_block")]
    if int(block.max()) > 0:
        # pyALE layout: blank rows separate experiments; within a block, a change of
        # name, sample size or tags starts a new experiment (as pyALE reads it).
        keys = ["_block", "experiment", "n_subjects", *extra]
        runs = _runs(body, keys)
        body = _disambiguate_blocks(body, block=runs, extra=extra)
    else:
        _check_consistent_n(body, path, columns)
    return body.drop(columns="_block").reset_index(drop=True)


def header_name(columns: dict[str, str], key: str) -> str:
    """The user's name of a canonical column (for messages)."""
    return columns.get(key, key)


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", str(name).lower())


def _map_columns(header: list[str], path: Path, *, has_space_option: bool) -> dict[str, str]:
    normalised = {_norm(h): h for h in header}
    columns: dict[str, str] = {}
    for key, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in normalised:
                columns[key] = normalised[alias]
                break
    missing = [k for k in REQUIRED if k not in columns and not (k == "space" and has_space_option)]
    if missing:
        hint = ""
        if missing == ["space"]:
            hint = " (or give --space MNI / --space TAL for the whole file)"
        raise BrainmatchInputError(
            f"missing column(s) {', '.join(missing)}{hint}; the table has columns: "
            f"{', '.join(header)}",
            path,
        )
    return columns


def _runs(frame: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Number consecutive rows that agree on ``keys`` (a new number at every change)."""
    values = frame[keys].astype(str).to_numpy()
    change = np.ones(len(frame), dtype=bool)
    if len(frame) > 1:
        change[1:] = (values[1:] != values[:-1]).any(axis=1)
    return np.cumsum(change)


def _disambiguate_blocks(
    frame: pd.DataFrame, *, block: np.ndarray, extra: list[str]
) -> pd.DataFrame:
    """Give every run of rows its own experiment id; a name used by several runs gets the
    distinguishing tag values (``name [Untreated<Treated]``) or a number appended."""
    frame = frame.copy()
    frame["_run"] = block
    names = frame.groupby("_run", sort=False)["experiment"].first()
    counts = names.value_counts()
    new_names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for run, name in names.items():
        if counts[name] == 1:
            new_names[int(run)] = name
            continue
        first_row = frame.loc[frame["_run"] == run].iloc[0]
        tags = [str(first_row[c]) for c in extra if pd.notna(first_row[c])]
        label = f"{name} [{', '.join(tags)}]" if tags else name
        seen[label] = seen.get(label, 0) + 1
        new_names[int(run)] = label
    # same name and same tags in several runs: number them (the duplicate check then
    # compares their foci)
    totals: dict[str, int] = {}
    for label in new_names.values():
        totals[label] = totals.get(label, 0) + 1
    index: dict[str, int] = {}
    for run, label in list(new_names.items()):
        if totals[label] > 1:
            index[label] = index.get(label, 0) + 1
            new_names[run] = f"{label} #{index[label]}"
    frame["experiment"] = frame["_run"].map(new_names)
    return frame.drop(columns="_run")


def _check_consistent_n(frame: pd.DataFrame, path: Path, columns: dict[str, str]) -> None:
    n_per = frame.groupby("experiment", sort=False)["n_subjects"].nunique()
    bad = n_per[n_per > 1]
    if len(bad):
        name = bad.index[0]
        values = sorted(frame.loc[frame["experiment"] == name, "n_subjects"].unique())
        raise BrainmatchInputError(
            f"experiment {name!r} has different {header_name(columns, 'n_subjects')!r} values "
            f"on different rows ({', '.join(f'{v:g}' for v in values)}); give each experiment "
            "one sample size, or separate experiments by blank rows / distinct names",
            path,
        )


def _parse_space(value: Any, path: Path, where: str) -> str:
    key = re.sub(r"[\s_\-]", "", str(value).lower())
    key = key.replace("152", "").replace("mni305", "mni")
    if key in _SPACES:
        return _SPACES[key]
    if key.startswith("mni") or key.startswith("icbm"):
        return "MNI"
    if key.startswith("tal"):
        return "TAL"
    raise BrainmatchInputError(
        f"{where}: unknown coordinate space {value!r} (use MNI or TAL)", path
    )


def _apply_selection(
    foci: pd.DataFrame, selection: dict[str, list[str]], path: Path
) -> pd.DataFrame:
    lower = {str(c).lower(): c for c in foci.columns}
    keep = np.ones(len(foci), dtype=bool)
    for column, values in selection.items():
        if column.lower() not in lower:
            available = [c for c in foci.columns if c not in ("row", "_block")]
            raise BrainmatchInputError(
                f"--select: no column {column!r}; columns are: {', '.join(map(str, available))}",
                path,
            )
        col = lower[column.lower()]
        cells = foci[col].astype(str).str.strip().str.lower()
        match = cells.isin([v.lower() for v in values])
        if not match.any():
            present = sorted(set(foci[col].dropna().astype(str)))
            raise BrainmatchInputError(
                f"--select: no row has {col} = {' or '.join(values)}; values present: "
                f"{', '.join(present[:20])}",
                path,
            )
        keep &= match.to_numpy()
    out = foci.loc[keep]
    if out.empty:
        raise BrainmatchInputError("--select: no row matches all the selections", path)
    return out


def _finish(foci: pd.DataFrame, path: Path, tal_transform: str, notes: list[str]) -> pd.DataFrame:
    foci = foci.reset_index(drop=True).copy()
    bad_n = ~(foci["n_subjects"] > 0) | ~np.isfinite(foci["n_subjects"])
    if bad_n.any():
        r = foci.loc[bad_n].iloc[0]
        raise BrainmatchInputError(
            f"{_where(r['row'])}: experiment {r['experiment']!r} has {r['n_subjects']:g} "
            "subjects; the sample size must be a positive number",
            path,
        )
    xyz = foci[["x", "y", "z"]].to_numpy(dtype=float)
    if not np.isfinite(xyz).all():
        r = foci.loc[~np.isfinite(xyz).all(axis=1)].iloc[0]
        raise BrainmatchInputError(f"{_where(r['row'])}: coordinates must be finite numbers", path)
    foci["x_reported"], foci["y_reported"], foci["z_reported"] = xyz.T
    tal = (foci["space"] == "TAL").to_numpy()
    if tal.any():
        xyz[tal] = tal_to_mni(xyz[tal], tal_transform)
        n_exp = foci.loc[tal, "experiment"].nunique()
        notes.append(
            f"{int(tal.sum())} Talairach foci from {n_exp} experiment(s) were converted to MNI "
            f"with Lancaster et al. (2007)'s tal2icbm_{tal_transform} transform"
        )
    foci["x"], foci["y"], foci["z"] = xyz.T
    _check_duplicates(foci, path)
    ordered = [
        "experiment",
        "x",
        "y",
        "z",
        "space",
        "n_subjects",
        "x_reported",
        "y_reported",
        "z_reported",
        "row",
    ]
    return foci[ordered + [c for c in foci.columns if c not in ordered]]


def _where(row: Any) -> str:
    return f"row {row}" if isinstance(row, (int, np.integer)) else str(row)


def _check_duplicates(foci: pd.DataFrame, path: Path) -> None:
    """Two experiments with the same sample size and the same foci are one study entered twice."""
    signatures: dict[tuple[Any, ...], str] = {}
    for name, rows in foci.groupby("experiment", sort=False):
        key = (
            float(rows["n_subjects"].iloc[0]),
            tuple(
                sorted(
                    map(
                        tuple,
                        np.round(rows[["x_reported", "y_reported", "z_reported"]].to_numpy(), 3),
                    )
                )
            ),
        )
        if key in signatures:
            raise BrainmatchInputError(
                f"duplicate experiment: {name!r} ({_where(rows['row'].iloc[0])}) has the same "
                f"sample size and the same {len(rows)} foci as {signatures[key]!r}; an "
                "experiment entered twice would count its subjects twice - remove one copy",
                path,
            )
        signatures[key] = str(name)
