"""Per-unit records: what a unit's outputs were computed from, so reruns can resume.

A worker writes a unit's outputs atomically, then a small record
(``.records/<sub>[_<ses>]_seg-<atlas>.json``, in a dot-folder that BIDS tools ignore so
that only BIDS names appear under ``sub-*/``) holding the options' hash, the content
hash of every input file and the unit's feature values.  A rerun skips a unit whose
record matches; a unit killed half-way has no record and is redone.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from brainmatch.features.bids import Unit
from brainmatch.features.config import ExtractConfig
from brainmatch.features.lean import HASH_NAME, file_fingerprint

#: Folder of the per-unit records inside the output folder.
RECORDS = ".records"


def fingerprint(path: Path, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fingerprint of ``path``; the hash of ``previous`` is reused when size and mtime agree."""
    st = path.stat()
    entry = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if (
        previous
        and previous.get("size") == st.st_size
        and previous.get("mtime_ns") == st.st_mtime_ns
        and previous.get(HASH_NAME)
    ):
        entry[HASH_NAME] = previous[HASH_NAME]
        return entry
    return file_fingerprint(path)


def unit_inputs(unit: Unit, config: ExtractConfig | None = None) -> list[Path]:
    """Every input file of a unit that exists, over the modalities of ``config``.

    Without ``config``: the BOLD runs and their companions plus ``aseg.stats`` (the
    resting-state inputs).
    """
    from brainmatch.features.modalities import MODULES

    modalities = config.modalities if config is not None else ("func",)
    files: list[Path] = []
    for name in modalities:
        files += MODULES[name].inputs(unit)
    if config is None or config.freesurfer:
        files += MODULES["anat"].inputs(unit)
    return list(dict.fromkeys(files))


def record_path(config: ExtractConfig, unit: Unit) -> Path:
    """Where a unit's record lives (``<output>/.records/<key>_seg-<atlas>.json``)."""
    return config.output_dir / RECORDS / f"{unit.key}_seg-{config.seg}.json"


def read_record(path: Path) -> dict[str, Any] | None:
    """A record as a dict, or None when it is missing or unreadable."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def is_up_to_date(config: ExtractConfig, unit: Unit) -> bool:
    """True when the unit's record matches the options and every input's content."""
    rec = read_record(record_path(config, unit))
    if rec is None or rec.get("options_sha256") != config.options_hash():
        return False
    old = {e["path"]: e for e in rec.get("inputs", [])}
    files = unit_inputs(unit, config)
    if sorted(str(f) for f in files) != sorted(old):
        return False
    for f in files:
        if fingerprint(f, old[str(f)])[HASH_NAME] != old[str(f)].get(HASH_NAME):
            return False
    return all((config.output_dir / o).exists() for o in rec.get("outputs", []))


def remove(path: Path) -> None:
    """Delete ``path`` if it exists."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    isfinite = math.isfinite
    if isinstance(obj, float):
        return obj if isfinite(obj) else None
    if isinstance(obj, dict):  # a record's features: thousands of floats, inlined
        return {
            k: (v if isfinite(v) else None) if type(v) is float else finite(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [(v if isfinite(v) else None) if type(v) is float else finite(v) for v in obj]
    return obj


__all__ = [
    "fingerprint",
    "finite",
    "is_up_to_date",
    "read_record",
    "record_path",
    "remove",
    "unit_inputs",
]
