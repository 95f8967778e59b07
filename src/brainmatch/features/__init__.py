"""Brain features from scans: resting state, task activation, diffusion tensors, FreeSurfer.

The entry point is :func:`extract_dataset` (``brainmatch extract`` on the command line).

The public names are imported lazily (PEP 562) so that the lean streaming worker
(:mod:`brainmatch.features.lean`) can import ``brainmatch.features.regions`` without
pulling in pandas, scipy or nilearn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from brainmatch.features.config import DwiOptions, TaskOptions
    from brainmatch.features.denoise import CleanOptions
    from brainmatch.features.extract import ExtractResult, extract_dataset, read_features
    from brainmatch.features.regions import RegionPlan

_WHERE = {
    "CleanOptions": "brainmatch.features.denoise",
    "DwiOptions": "brainmatch.features.config",
    "TaskOptions": "brainmatch.features.config",
    "ExtractResult": "brainmatch.features.extract",
    "extract_dataset": "brainmatch.features.extract",
    "read_features": "brainmatch.features.extract",
    "RegionPlan": "brainmatch.features.regions",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CleanOptions",
    "DwiOptions",
    "ExtractResult",
    "RegionPlan",
    "TaskOptions",
    "extract_dataset",
    "read_features",
]
