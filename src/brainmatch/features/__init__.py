"""Brain features from scans: region time series, connectivity, amplitude and volumes.

The entry point is :func:`extract_dataset` (``brainmatch extract`` on the command line).
"""

from __future__ import annotations

from brainmatch.features.denoise import CleanOptions
from brainmatch.features.extract import ExtractResult, extract_dataset, read_features
from brainmatch.features.regions import RegionPlan

__all__ = ["CleanOptions", "ExtractResult", "RegionPlan", "extract_dataset", "read_features"]
