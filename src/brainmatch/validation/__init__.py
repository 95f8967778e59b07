"""Honest validation: CV schemes, metrics, fast permutation tests, selection benefit.

- :mod:`.splits`: repeated stratified k-fold and leave-site-out outer splits;
- :mod:`.metrics`: prediction metrics (R² by sums of squares, MAE, AUC, balanced accuracy,
  Brier, calibration slope / intercept), Cohen's d, bootstrap intervals;
- :mod:`.policy`: selection benefit (recommended vs not) and a doubly robust estimate of
  the value of a recommendation policy against the best single arm;
- :mod:`.permutation`: all permutations of a ridge model at once, identical to
  scikit-learn's ``permutation_test_score`` and hundreds of times faster.
"""

from brainmatch.validation.metrics import (
    binary_metrics,
    bootstrap_ci,
    calibration,
    cohens_d,
    regression_metrics,
)
from brainmatch.validation.permutation import ridge_permutation_test_score
from brainmatch.validation.policy import dr_scores, policy_gain, selection_benefit
from brainmatch.validation.splits import outer_splits

__all__ = [
    "binary_metrics",
    "bootstrap_ci",
    "calibration",
    "cohens_d",
    "dr_scores",
    "outer_splits",
    "policy_gain",
    "regression_metrics",
    "ridge_permutation_test_score",
    "selection_benefit",
]
