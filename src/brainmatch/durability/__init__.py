"""Durability: does the benefit last?  Time-to-relapse outcomes with censoring.

:class:`SurvivalSelector` (lasso or ridge Cox per arm or ridge Cox with arm interactions,
lifelines; a lasso T-learner on pseudo-observations, scikit-learn; or the one chosen by
inner cross-validation of the policy's RMST) predicts each patient's relapse-free
probability at a horizon under every arm and recommends the arm with the highest;
:func:`validate_durability` validates it out of fold
(Harrell's and Uno's C, time-dependent AUC and Brier score, calibration at the horizon,
policy RMST gain over the best single arm with CI, permutation test).  The simulator's
follow-up is :func:`brainmatch.simulate.followup.draw_followup`.  Repeated follow-up
scores become one sustained outcome per patient with :func:`summarise_followup`.
"""

from brainmatch.durability.followup import summarise_followup
from brainmatch.durability.recommend import DurabilityRecommendation, recommend_durability
from brainmatch.durability.selector import CoxModel, PseudoSurvivalModel, SurvivalSelector
from brainmatch.durability.train import DurabilityTrainResult, train_durability
from brainmatch.durability.validate import DurabilityResult, validate_durability

__all__ = [
    "CoxModel",
    "DurabilityRecommendation",
    "DurabilityResult",
    "DurabilityTrainResult",
    "PseudoSurvivalModel",
    "SurvivalSelector",
    "recommend_durability",
    "summarise_followup",
    "train_durability",
    "validate_durability",
]
