"""Find the inputs to extract, grouped by participant and session.

fMRIPrep BOLD runs (with their raw ``events.tsv`` when they are task runs), QSIPrep
preprocessed DWI runs (``.bval`` / ``.bvec`` / brain mask), FreeSurfer stats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from brainmatch.errors import BrainmatchInputError

_BOLD = re.compile(r"^(?P<stem>.+)_desc-preproc_bold\.nii(\.gz)?$")
_DWI = re.compile(r"^(?P<stem>.+)_desc-preproc_dwi\.nii(\.gz)?$")
#: Entities that identify a run; two files that agree on all of them are duplicates.
RUN_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "space")


def parse_entities(name: str) -> dict[str, str]:
    """BIDS ``key-value`` entities of a file name (suffix and extension dropped)."""
    base = name.split(".")[0]
    out = {}
    for part in base.split("_"):
        if "-" in part:
            key, _, value = part.partition("-")
            out[key] = value
    return out


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` -> ``01`` (labels may be given with or without the prefix)."""
    return label[len(prefix) + 1 :] if label.startswith(prefix + "-") else label


@dataclass(frozen=True)
class Run:
    """One preprocessed BOLD run and its companion files."""

    bold: Path
    entities: dict[str, str]
    sidecar: Path
    mask: Path | None
    events: Path | None = None

    @property
    def stem(self) -> str:
        """Output file stem: the BOLD's entities before ``_desc-``."""
        return _BOLD.match(self.bold.name).group("stem")  # type: ignore[union-attr]

    @property
    def is_task(self) -> bool:
        """A task run: it has an ``events.tsv`` (and is not ``task-rest``)."""
        return self.events is not None and self.entities.get("task") != "rest"


@dataclass(frozen=True)
class DwiRun:
    """One preprocessed DWI run (QSIPrep) and its gradient table and mask."""

    dwi: Path
    entities: dict[str, str]
    bval: Path
    bvec: Path
    mask: Path | None
    sidecar: Path | None = None
    #: QSIRecon tensor maps (scalar -> path) used instead of fitting, when all four exist
    scalar_maps: tuple[tuple[str, Path], ...] = ()

    @property
    def stem(self) -> str:
        """Output file stem: the DWI's entities before ``_desc-``."""
        return _DWI.match(self.dwi.name).group("stem")  # type: ignore[union-attr]


@dataclass(frozen=True)
class Unit:
    """All runs of one participant (and session): one row of the features table."""

    participant: str
    session: str | None
    runs: tuple[Run, ...]
    aseg: Path | None = None
    problem: str | None = None
    problem_file: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    dwi: tuple[DwiRun, ...] = ()

    @property
    def key(self) -> str:
        """``sub-<id>[_ses-<id>]``."""
        return f"sub-{self.participant}" + (f"_ses-{self.session}" if self.session else "")

    def datatype_folder(self, datatype: str) -> Path:
        """Relative output folder ``sub-<id>/[ses-<id>/]<datatype>``."""
        p = Path(f"sub-{self.participant}")
        if self.session:
            p = p / f"ses-{self.session}"
        return p / datatype

    @property
    def folder(self) -> Path:
        """Where the unit's record lives: ``func`` (or ``dwi`` / ``anat`` without BOLD)."""
        kind = "func" if self.runs or not (self.dwi or self.aseg) else "dwi" if self.dwi else "anat"
        return self.datatype_folder(kind)

    @property
    def aparc(self) -> tuple[Path, Path] | None:
        """FreeSurfer ``lh.aparc.stats`` / ``rh.aparc.stats`` beside ``aseg.stats``."""
        if self.aseg is None:
            return None
        return self.aseg.parent / "lh.aparc.stats", self.aseg.parent / "rh.aparc.stats"


def _companion(bold: Path, suffix: str) -> Path:
    name = bold.name
    base = name[: name.index("_desc-preproc_bold")]
    return bold.with_name(f"{base}{suffix}")


def discover(
    bids_dir: Path,
    derivatives: Path,
    *,
    participant_label: list[str] | None = None,
    session_label: list[str] | None = None,
    task: str | None = None,
    space: str = "MNI152NLin2009cAsym",
    freesurfer: Path | None = None,
    modalities: tuple[str, ...] = ("func",),
    dwi_derivatives: Path | None = None,
    dwi_space: str = "T1w",
    qsirecon: Path | None = None,
) -> list[Unit]:
    """Group the derivatives' inputs into participant(-session) units.

    ``func``: fMRIPrep BOLD runs (and the raw ``events.tsv`` of task runs); ``dwi``:
    QSIPrep DWI runs under ``dwi_derivatives`` (default ``derivatives``); ``anat``:
    FreeSurfer subjects.  Units with a problem that stops extraction (duplicate runs, no
    run in the atlas space, a modality missing) carry it in ``problem`` so it is
    reported in ``failures.tsv``.
    """
    if not derivatives.is_dir():
        raise BrainmatchInputError("fMRIPrep derivatives folder not found", derivatives)
    if not bids_dir.is_dir():
        raise BrainmatchInputError("BIDS folder not found", bids_dir)
    dwi_root = dwi_derivatives if dwi_derivatives is not None else derivatives
    if "dwi" in modalities and not dwi_root.is_dir():
        raise BrainmatchInputError("QSIPrep derivatives folder not found", dwi_root)
    wanted = {strip_prefix(p, "sub") for p in participant_label or []}
    sessions = {strip_prefix(s, "ses") for s in session_label or []}

    def keep(ent: dict[str, str]) -> bool:
        if "sub" not in ent or (wanted and ent["sub"] not in wanted):
            return False
        return not (sessions and ent.get("ses") not in sessions)

    found: dict[tuple[str, str | None], list[Path]] = {}
    if "func" in modalities:
        for bold in sorted(derivatives.glob("sub-*/**/func/*_desc-preproc_bold.nii*")):
            if not _BOLD.match(bold.name):
                continue
            ent = parse_entities(bold.name)
            if not keep(ent) or (task and ent.get("task") != task):
                continue
            found.setdefault((ent["sub"], ent.get("ses")), []).append(bold)
    found_dwi: dict[tuple[str, str | None], list[Path]] = {}
    if "dwi" in modalities:
        for dwi in sorted(dwi_root.glob("sub-*/**/dwi/*_desc-preproc_dwi.nii*")):
            ent = parse_entities(dwi.name)
            if _DWI.match(dwi.name) and keep(ent):
                found_dwi.setdefault((ent["sub"], ent.get("ses")), []).append(dwi)
    found_fs: set[tuple[str, str | None]] = set()
    if "anat" in modalities and freesurfer is not None and not found and not found_dwi:
        for stats in sorted(freesurfer.glob("sub-*/stats/aseg.stats")):
            ent = parse_entities(stats.parent.parent.name)
            if keep(ent):
                found_fs.add((ent["sub"], ent.get("ses")))
    keys = sorted(set(found) | set(found_dwi) | found_fs, key=lambda k: (k[0], k[1] or ""))
    units = []
    for sub, ses in keys:
        unit = _make_unit(sub, ses, found.get((sub, ses), []), space, freesurfer, bids_dir)
        if "func" in modalities and not found.get((sub, ses)) and not unit.problem:
            unit = replace(
                unit,
                problem="no preprocessed BOLD (*_desc-preproc_bold.nii[.gz]) found for "
                f"{unit.key} under the derivatives folder (or leave func out of --modalities)",
                problem_file=derivatives,
            )
        if "dwi" in modalities:
            runs, problem, where = _dwi_runs(found_dwi.get((sub, ses), []), dwi_space, qsirecon)
            unit = replace(unit, dwi=runs)
            if not unit.problem and problem:
                unit = replace(unit, problem=problem, problem_file=where or dwi_root)
            elif not unit.problem and not runs:
                unit = replace(
                    unit,
                    problem="no preprocessed DWI (*_desc-preproc_dwi.nii[.gz]) found for "
                    f"{unit.key} under {dwi_root} (or leave dwi out of --modalities)",
                    problem_file=dwi_root,
                )
        units.append(unit)
    for sub in sorted(wanted - {u.participant for u in units}):
        what = "BOLD (*_desc-preproc_bold.nii[.gz])" if "func" in modalities else "input"
        units.append(
            Unit(
                participant=sub,
                session=None,
                runs=(),
                problem=f"no preprocessed {what} found for sub-{sub} under the derivatives folder",
                problem_file=derivatives,
            )
        )
    return units


def qsirecon_maps(qsirecon: Path, entities: dict[str, str]) -> tuple[tuple[str, Path], ...]:
    """QSIRecon's FA / MD / AD / RD maps of a DWI run (all four, or none).

    Looked for anywhere under ``qsirecon`` as
    ``sub-<id>/[ses-<id>/]dwi/*_model-tensor_param-<fa|md|ad|rd>_dwimap.nii[.gz]`` with
    the run's ``sub``, ``ses``, ``acq``, ``run`` and ``space`` entities.
    """
    keys = ("sub", "ses", "acq", "run", "space")
    found: dict[str, Path] = {}
    pattern = f"**/sub-{entities['sub']}/**/dwi/*_model-tensor_*dwimap.nii*"
    for path in sorted(qsirecon.glob(pattern)):
        ent = parse_entities(path.name)
        if any(ent.get(k) != entities.get(k) for k in keys):
            continue
        param = ent.get("param", "").lower()
        if param in ("fa", "md", "ad", "rd") and param not in found:
            found[param] = path
    if len(found) < 4:
        return ()
    return tuple((k, found[k]) for k in ("fa", "md", "ad", "rd"))


def _dwi_runs(
    files: list[Path], space: str, qsirecon: Path | None = None
) -> tuple[tuple[DwiRun, ...], str | None, Path | None]:
    """DWI runs in ``space`` with their companions; or a problem and its file."""
    if not files:
        return (), None, None
    in_space = [f for f in files if parse_entities(f.name).get("space", space) == space]
    if not in_space:
        spaces = sorted({parse_entities(f.name).get("space", "(none)") for f in files})
        return (
            (),
            f"no DWI in space {space}: found space {', '.join(spaces)} (pass --dwi-space)",
            files[0],
        )
    runs = []
    for f in in_space:
        stem = f.name[: f.name.index("_desc-preproc_dwi")]
        base = f.with_name(f"{stem}_desc-preproc_dwi")
        bval, bvec = base.with_suffix(".bval"), base.with_suffix(".bvec")
        for need in (bval, bvec):
            if not need.exists():
                return (), f"gradient table file {need.name} is missing", f
        mask = next(
            (
                m
                for m in (
                    f.with_name(f"{stem}_desc-brain_mask.nii.gz"),
                    f.with_name(f"{stem}_desc-brain_mask.nii"),
                )
                if m.exists()
            ),
            None,
        )
        side = base.with_suffix(".json")
        runs.append(
            DwiRun(
                dwi=f,
                entities=parse_entities(f.name),
                bval=bval,
                bvec=bvec,
                mask=mask,
                sidecar=side if side.exists() else None,
                scalar_maps=qsirecon_maps(qsirecon, parse_entities(f.name))
                if qsirecon is not None
                else (),
            )
        )
    return tuple(runs), None, None


def find_events(bold: Path, bids_dir: Path) -> Path | None:
    """The raw ``events.tsv`` of a BOLD run (BIDS inheritance: run file, then top level)."""
    ent = parse_entities(bold.name)
    if "task" not in ent:
        return None
    keys = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo")
    stem = "_".join(f"{k}-{ent[k]}" for k in keys if k in ent)
    folder = bids_dir / f"sub-{ent['sub']}"
    if "ses" in ent:
        folder = folder / f"ses-{ent['ses']}"
    for cand in (
        folder / "func" / f"{stem}_events.tsv",
        bids_dir / f"task-{ent['task']}_events.tsv",
    ):
        if cand.exists():
            return cand
    return None


def _make_unit(
    sub: str,
    ses: str | None,
    bolds: list[Path],
    space: str,
    freesurfer: Path | None,
    bids_dir: Path | None = None,
) -> Unit:
    aseg = None
    if freesurfer is not None:
        cand = [freesurfer / f"sub-{sub}" / "stats" / "aseg.stats"]
        if ses:
            cand.insert(0, freesurfer / f"sub-{sub}_ses-{ses}" / "stats" / "aseg.stats")
        aseg = next((c for c in cand if c.exists()), cand[-1])
    if not bolds:
        return Unit(sub, ses, (), aseg)
    in_space = [b for b in bolds if parse_entities(b.name).get("space") == space]
    if not in_space:
        spaces = sorted({parse_entities(b.name).get("space", "(none)") for b in bolds})
        return Unit(
            sub,
            ses,
            (),
            aseg,
            problem=f"no BOLD in the atlas space {space}: found space "
            f"{', '.join(spaces)} (atlases are in MNI space; rerun fMRIPrep "
            f"with --output-spaces {space} or pass --space)",
            problem_file=bolds[0],
        )
    groups: dict[tuple[str, ...], list[Path]] = {}
    for b in in_space:
        ent = parse_entities(b.name)
        groups.setdefault(tuple(ent.get(k, "") for k in RUN_ENTITIES), []).append(b)
    for files in groups.values():
        if len(files) > 1:
            return Unit(
                sub,
                ses,
                (),
                aseg,
                problem=f"duplicate runs: {' and '.join(f.name for f in files)} are the "
                "same run (same entities); remove one or select with --task",
                problem_file=files[0],
            )
    runs = []
    for b in in_space:
        mask = _companion(b, "_desc-brain_mask.nii.gz")
        if not mask.exists():
            alt = _companion(b, "_desc-brain_mask.nii")
            mask = alt if alt.exists() else None  # type: ignore[assignment]
        runs.append(
            Run(
                bold=b,
                entities=parse_entities(b.name),
                sidecar=_companion(b, "_desc-preproc_bold.json"),
                mask=mask,
                events=find_events(b, bids_dir) if bids_dir is not None else None,
            )
        )
    return Unit(sub, ses, tuple(runs), aseg)
