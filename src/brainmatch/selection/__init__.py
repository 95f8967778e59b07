"""Treatment selection: potential outcomes under every arm, recommendation, advantage.

Public API::

    from brainmatch.selection import TreatmentSelector, cross_validate, validate, train, recommend

    # arrays, scikit-learn style
    sel = TreatmentSelector(learner="auto").fit(X, arm, y, baseline=hamd0, sites=site)
    sel.predict_outcomes(X_new, baseline=b_new)          # DataFrame, one column per arm
    result = cross_validate(sel, X, arm, y, baseline=hamd0)   # ValidationResult
    result.to_dict(); result.save("validation/")

    # tables and files (what ``brainmatch train`` / ``recommend`` run)
    res = train("features.parquet", "outcomes.tsv", treatment_column="arm",
                outcome_column="hamd_week8", baseline_column="hamd_baseline",
                site_column="site", covariates=("age", "sex"), out_dir="model/")
    rec = recommend("model/model.npz", "new_patient_features.tsv", "rec/")
"""

from brainmatch.selection.estimator import TreatmentSelector, cross_validate
from brainmatch.selection.learners import LEARNERS
from brainmatch.selection.recommend import RecommendResult, recommend
from brainmatch.selection.train import TrainResult, train, validate
from brainmatch.validation.result import ValidationResult

__all__ = [
    "LEARNERS",
    "RecommendResult",
    "TrainResult",
    "TreatmentSelector",
    "ValidationResult",
    "cross_validate",
    "recommend",
    "train",
    "validate",
]
