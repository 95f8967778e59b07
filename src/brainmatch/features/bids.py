"""Find the runs to extract: fMRIPrep BOLD files grouped by participant and session."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from brainmatch.errors import BrainmatchInputError

_BOLD = re.compile(r"^(?P<stem>.+)_desc-preproc_bold\.nii(\.gz)?$")
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

    @property
    def stem(self) -> str:
        """Output file stem: the BOLD's entities before ``_desc-``."""
        return _BOLD.match(self.bold.name).group("stem")  # type: ignore[union-attr]


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

    @property
    def key(self) -> str:
        """``sub-<id>[_ses-<id>]``."""
        return f"sub-{self.participant}" + (f"_ses-{self.session}" if self.session else "")

    @property
    def folder(self) -> Path:
        """Relative output folder ``sub-<id>/[ses-<id>/]func``."""
        p = Path(f"sub-{self.participant}")
        if self.session:
            p = p / f"ses-{self.session}"
        return p / "func"


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
) -> list[Unit]:
    """Group the derivative's preprocessed BOLD runs into participant(-session) units.

    Units with a problem that stops extraction (duplicate runs, no run in the atlas
    space) carry it in ``problem`` so it is reported in ``failures.tsv``.
    """
    if not derivatives.is_dir():
        raise BrainmatchInputError("fMRIPrep derivatives folder not found", derivatives)
    if not bids_dir.is_dir():
        raise BrainmatchInputError("BIDS folder not found", bids_dir)
    wanted = {strip_prefix(p, "sub") for p in participant_label or []}
    sessions = {strip_prefix(s, "ses") for s in session_label or []}
    found: dict[tuple[str, str | None], list[Path]] = {}
    for bold in sorted(derivatives.glob("sub-*/**/func/*_desc-preproc_bold.nii*")):
        if not _BOLD.match(bold.name):
            continue
        ent = parse_entities(bold.name)
        if "sub" not in ent or (wanted and ent["sub"] not in wanted):
            continue
        if sessions and ent.get("ses") not in sessions:
            continue
        if task and ent.get("task") != task:
            continue
        found.setdefault((ent["sub"], ent.get("ses")), []).append(bold)
    units = []
    for (sub, ses), bolds in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        units.append(_make_unit(sub, ses, bolds, space, freesurfer))
    for sub in sorted(wanted - {u.participant for u in units}):
        units.append(
            Unit(
                participant=sub,
                session=None,
                runs=(),
                problem="no preprocessed BOLD (*_desc-preproc_bold.nii[.gz]) found "
                f"for sub-{sub} under the derivatives folder",
                problem_file=derivatives,
            )
        )
    return units


def _make_unit(
    sub: str, ses: str | None, bolds: list[Path], space: str, freesurfer: Path | None
) -> Unit:
    aseg = None
    if freesurfer is not None:
        cand = [freesurfer / f"sub-{sub}" / "stats" / "aseg.stats"]
        if ses:
            cand.insert(0, freesurfer / f"sub-{sub}_ses-{ses}" / "stats" / "aseg.stats")
        aseg = next((c for c in cand if c.exists()), cand[-1])
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
            )
        )
    return Unit(sub, ses, tuple(runs), aseg)
