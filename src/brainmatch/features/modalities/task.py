"""The task part of the ``func`` modality (placeholder while being written)."""

from __future__ import annotations

from typing import Any

from brainmatch.features.bids import Run
from brainmatch.features.config import ExtractConfig
from brainmatch.features.schedule import Steps


def unit_task_steps(runs: list[Run], config: ExtractConfig) -> Steps:
    """Task GLMs of a unit's task runs."""
    out: dict[str, Any] = {"features": {}, "outputs": [], "hashes": {}, "runs": []}
    return out
    yield
