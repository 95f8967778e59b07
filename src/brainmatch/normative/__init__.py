"""Normative models: each brain measure's distribution in healthy controls given age, sex
and site, and everyone's deviation from it.

Public API::

    from brainmatch.normative import NormativeModel, fit_normative, score_normative
    fit = fit_normative("controls.parquet", covariate_columns=("age", "sex"),
                        site_column="site", out_dir="norm/")
    scores = score_normative("norm/normative_model.npz", "patients.parquet", out_dir="dev/")
"""

from brainmatch.normative.analysis import (
    NormativeFitResult,
    NormativeScoreResult,
    fit_normative,
    load_normative_model,
    score_normative,
)
from brainmatch.normative.model import NormativeModel

__all__ = [
    "NormativeFitResult",
    "NormativeModel",
    "NormativeScoreResult",
    "fit_normative",
    "load_normative_model",
    "score_normative",
]
