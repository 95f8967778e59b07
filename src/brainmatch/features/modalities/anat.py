"""The ``anat`` modality: FreeSurfer ``aseg.stats`` volumes and ``aparc.stats`` cortex.

Cortical measures per Desikan-Killiany region are named as the ENIGMA cortical protocol
names them (``L_bankssts_thickavg``, ``R_insula_surfavg``, ``LThickness``,
``RSurfArea``), so ENIGMA's shared effect sizes can be matched to the columns:

- ``ctx__<hemi>_<region>_thickavg``: mean cortical thickness (mm), not normalised
  (thickness does not scale with head size);
- ``ctx__<hemi>_<region>_surfavg``: white-surface area / eTIV x 1000;
- ``ctx__<hemi>_<region>_grayvol``: grey-matter volume / eTIV x 1000;
- ``ctx__LThickness`` / ``ctx__RThickness`` (mm) and ``ctx__LSurfArea`` /
  ``ctx__RSurfArea`` (/ eTIV x 1000), from the files' ``MeanThickness`` and
  ``WhiteSurfArea`` measures.

eTIV is FreeSurfer's ``EstimatedTotalIntraCranialVol`` from ``aseg.stats``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from brainmatch.errors import BrainmatchInputError
from brainmatch.features.aseg import read_aseg_stats
from brainmatch.features.bids import Unit
from brainmatch.features.config import ExtractConfig, feature_name
from brainmatch.features.schedule import Steps

#: The 34 Desikan-Killiany cortical regions of FreeSurfer's ``aparc.stats``.
DK_REGIONS = (
    "bankssts",
    "caudalanteriorcingulate",
    "caudalmiddlefrontal",
    "cuneus",
    "entorhinal",
    "fusiform",
    "inferiorparietal",
    "inferiortemporal",
    "isthmuscingulate",
    "lateraloccipital",
    "lateralorbitofrontal",
    "lingual",
    "medialorbitofrontal",
    "middletemporal",
    "parahippocampal",
    "paracentral",
    "parsopercularis",
    "parsorbitalis",
    "parstriangularis",
    "pericalcarine",
    "postcentral",
    "posteriorcingulate",
    "precentral",
    "precuneus",
    "rostralanteriorcingulate",
    "rostralmiddlefrontal",
    "superiorfrontal",
    "superiorparietal",
    "superiortemporal",
    "supramarginal",
    "frontalpole",
    "temporalpole",
    "transversetemporal",
    "insula",
)


def inputs(unit: Unit) -> list[Path]:
    """The unit's FreeSurfer stats files that exist (``aseg.stats``, ``?h.aparc.stats``)."""
    files = [unit.aseg] if unit.aseg is not None and unit.aseg.exists() else []
    if unit.aparc is not None:
        files += [p for p in unit.aparc if p.exists()]
    return files


def streamed(unit: Unit) -> set[str]:
    """No anat input is streamed by a worker."""
    return set()


def aseg_features(path: Path) -> dict[str, float]:
    """ICV-normalised FreeSurfer volumes: ``vol__<structure>`` = volume / eTIV x 1000."""
    vols, etiv = read_aseg_stats(path)
    out = {f"vol__{feature_name(k)}": 1000.0 * v / etiv for k, v in vols.items()}
    out["vol__eTIV_ml"] = etiv / 1000.0
    return out


def read_aparc_stats(path: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Rows of a FreeSurfer ``?h.aparc.stats`` and its global measures.

    Returns
    -------
    rows : dict
        ``StructName -> {"SurfArea", "GrayVol", "ThickAvg", ...}``.
    measures : dict
        ``MeanThickness``, ``WhiteSurfArea`` (and any other ``# Measure Cortex`` line).

    Raises
    ------
    BrainmatchInputError
        Missing or unreadable file, rows before the header, missing columns, no rows.
    """
    if not path.exists():
        raise BrainmatchInputError("FreeSurfer aparc.stats not found", path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BrainmatchInputError(f"cannot read aparc.stats: {exc}", path) from None
    headers: list[str] = []
    rows: dict[str, dict[str, float]] = {}
    measures: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.match(r"#\s*Measure\s+Cortex\s*,\s*([^,]+),[^,]*,\s*([^,]+),", line)
            if m:
                try:
                    measures[m.group(1).strip()] = float(m.group(2))
                except ValueError:
                    raise BrainmatchInputError(
                        f"malformed measure line: {line.strip()!r}", path
                    ) from None
            if line.startswith("# ColHeaders"):
                headers = line.split()[2:]
            continue
        parts = line.split()
        if not parts:
            continue
        if not headers:
            raise BrainmatchInputError("aparc.stats has rows before its '# ColHeaders' line", path)
        row = dict(zip(headers, parts, strict=False))
        try:
            rows[row["StructName"]] = {
                k: float(row[k]) for k in ("SurfArea", "GrayVol", "ThickAvg")
            }
        except (KeyError, ValueError):
            raise BrainmatchInputError(
                f"malformed aparc.stats row (needs StructName, SurfArea, GrayVol, ThickAvg): "
                f"{line.strip()!r}",
                path,
            ) from None
    if not rows:
        raise BrainmatchInputError("aparc.stats holds no region rows", path)
    return rows, measures


def aparc_features(lh: Path, rh: Path, etiv: float) -> dict[str, float]:
    """ENIGMA-named cortical thickness, area and volume (see the module notes)."""
    out: dict[str, float] = {}
    for hemi, path in (("L", lh), ("R", rh)):
        rows, measures = read_aparc_stats(path)
        for region, vals in rows.items():
            name = f"{hemi}_{feature_name(region)}"
            out[f"ctx__{name}_thickavg"] = vals["ThickAvg"]
            out[f"ctx__{name}_surfavg"] = 1000.0 * vals["SurfArea"] / etiv
            out[f"ctx__{name}_grayvol"] = 1000.0 * vals["GrayVol"] / etiv
        if "MeanThickness" in measures:
            out[f"ctx__{hemi}Thickness"] = measures["MeanThickness"]
        if "WhiteSurfArea" in measures:
            out[f"ctx__{hemi}SurfArea"] = 1000.0 * measures["WhiteSurfArea"] / etiv
    return out


def steps(unit: Unit, config: ExtractConfig) -> Steps:
    """FreeSurfer features of one unit (no lean step).

    ``aseg.stats`` is required; ``lh/rh.aparc.stats`` are used when both exist (a run
    with FreeSurfer subjects that have only ``aseg.stats`` keeps working).
    """
    if unit.aseg is None:
        raise BrainmatchInputError("no FreeSurfer folder for this participant", unit.key)
    values = aseg_features(unit.aseg)
    _, etiv = read_aseg_stats(unit.aseg)
    if unit.aparc is not None:
        lh, rh = unit.aparc
        if lh.exists() != rh.exists():
            missing = rh if lh.exists() else lh
            raise BrainmatchInputError("one hemisphere's aparc.stats is missing", missing)
        if lh.exists():
            values.update(aparc_features(lh, rh, etiv))
    result: dict[str, Any] = {"features": values, "outputs": [], "hashes": {}}
    return result
    yield  # a generator without lean steps


__all__ = ["DK_REGIONS", "aparc_features", "aseg_features", "inputs", "read_aparc_stats", "steps"]
