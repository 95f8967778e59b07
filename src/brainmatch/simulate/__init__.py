"""A generative model of a multi-site randomised treatment trial with known truth.

``simulate_trial(TrialSpec(...), out_dir)`` writes a BIDS dataset with fMRIPrep-style
derivatives, FreeSurfer ``aseg.stats`` and ``ground_truth.{json,tsv}`` holding every
patient's true outcome under every arm.
"""

from brainmatch.simulate.bids import read_trial_tables, simulate_trial
from brainmatch.simulate.model import EFFECT_SIZES, Trial, TrialSpec, draw_trial

__all__ = [
    "EFFECT_SIZES",
    "Trial",
    "TrialSpec",
    "draw_trial",
    "read_trial_tables",
    "simulate_trial",
]
