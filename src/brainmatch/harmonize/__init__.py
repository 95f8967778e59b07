"""Site harmonisation fitted on training data only (ComBat as a scikit-learn transformer)."""

from brainmatch.harmonize.combat import ComBat

__all__ = ["ComBat"]
