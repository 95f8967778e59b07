"""Durability: does the benefit last?  Time-to-relapse outcomes with censoring.

:class:`SurvivalSelector` (penalised Cox per arm or with arm interactions, lifelines)
predicts each patient's relapse-free probability at a horizon under every arm and
recommends the arm with the highest; :func:`validate_durability` validates it out of fold
(Harrell's and Uno's C, time-dependent AUC and Brier score, calibration at the horizon,
policy RMST gain over the best single arm with CI, permutation test).  The simulator's
follow-up is :func:`brainmatch.simulate.followup.draw_followup`.
"""

from brainmatch.durability.recommend import DurabilityRecommendation, recommend_durability
from brainmatch.durability.selector import CoxModel, SurvivalSelector
from brainmatch.durability.train import DurabilityTrainResult, train_durability
from brainmatch.durability.validate import DurabilityResult, validate_durability

__all__ = [
    "CoxModel",
    "DurabilityRecommendation",
    "DurabilityResult",
    "DurabilityTrainResult",
    "SurvivalSelector",
    "recommend_durability",
    "train_durability",
    "validate_durability",
]
