"""One module per modality of ``brainmatch extract``.

Each module offers ``inputs(unit)`` (the files whose content the unit's record hashes),
``streamed(unit)`` (those hashed by a lean worker as it reads them) and
``steps(unit, config)``: a generator (:data:`brainmatch.features.schedule.Steps`) that
yields its lean jobs and returns ``{"features", "outputs", "hashes", ...}``.  Scheduling,
records and the group table are shared (:mod:`brainmatch.features.schedule`,
:mod:`brainmatch.features.records`, :mod:`brainmatch.features.group`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import ClassVar


class _Lazy(dict[str, ModuleType]):
    """Modality name -> module, imported on first use."""

    _names: ClassVar[dict[str, str]] = {
        "func": "brainmatch.features.modalities.func",
        "dwi": "brainmatch.features.modalities.dwi",
        "anat": "brainmatch.features.modalities.anat",
    }

    def __missing__(self, key: str) -> ModuleType:
        module = importlib.import_module(self._names[key])
        self[key] = module
        return module


MODULES: dict[str, ModuleType] = _Lazy()

__all__ = ["MODULES"]
