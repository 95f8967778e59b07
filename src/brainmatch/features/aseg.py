"""Read FreeSurfer's ``stats/aseg.stats``: structure volumes and eTIV."""

from __future__ import annotations

import re
from pathlib import Path

from brainmatch.errors import BrainmatchInputError


def read_aseg_stats(path: Path) -> tuple[dict[str, float], float]:
    """Structure volumes (mm^3, by ``StructName``) and estimated total intracranial volume.

    Raises
    ------
    BrainmatchInputError
        Missing file, no eTIV measure, or no table rows.
    """
    if not path.exists():
        raise BrainmatchInputError("FreeSurfer aseg.stats not found", path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BrainmatchInputError(f"cannot read aseg.stats: {exc}", path) from None
    etiv = None
    headers: list[str] = []
    vols: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.match(
                r"#\s*Measure\s+EstimatedTotalIntraCranialVol\s*,[^,]*,[^,]*,\s*([^,]+),", line
            )
            if m:
                etiv = float(m.group(1))
            if line.startswith("# ColHeaders"):
                headers = line.split()[2:]
            continue
        parts = line.split()
        if not parts:
            continue
        if not headers:
            raise BrainmatchInputError("aseg.stats has rows before its '# ColHeaders' line", path)
        try:
            row = dict(zip(headers, parts, strict=False))
            vols[row["StructName"]] = float(row["Volume_mm3"])
        except (KeyError, ValueError):
            raise BrainmatchInputError(
                f"malformed aseg.stats row: {line.strip()!r}", path
            ) from None
    if etiv is None or not etiv > 0:
        raise BrainmatchInputError("aseg.stats has no EstimatedTotalIntraCranialVol measure", path)
    if not vols:
        raise BrainmatchInputError("aseg.stats holds no structure rows", path)
    return vols, etiv
