"""Treatment selection: potential outcomes under every arm, recommendation, advantage.

Public API::

    from brainmatch.selection import train, recommend
    result = train("features.parquet", "outcomes.tsv", treatment_column="arm",
                   outcome_column="hamd_week8", baseline_column="hamd_baseline",
                   site_column="site", covariates=("age", "sex"), out_dir="model/")
    rec = recommend("model/model.npz", "new_patient_features.tsv", "rec/")
"""

from brainmatch.selection.recommend import RecommendResult, recommend
from brainmatch.selection.train import TrainResult, train

__all__ = ["RecommendResult", "TrainResult", "recommend", "train"]
