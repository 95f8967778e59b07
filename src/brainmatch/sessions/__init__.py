"""Session-level augmentation data: schema, readers, mixed models, simulator, evidence bridge.

- :mod:`~brainmatch.sessions.schema`: the long-format schema (one row per participant x
  session) and its checks; :func:`~brainmatch.sessions.readers.read_sessions` reads CSV /
  TSV / XLSX.
- :mod:`~brainmatch.sessions.mixed`: linear mixed models with random intercepts and slopes
  (statsmodels ``MixedLM`` with an optimiser fallback and convergence checks).
- :mod:`~brainmatch.sessions.analysis`: :func:`analyse_sessions` -> :class:`SessionsResult`
  (``brainmatch sessions``).
- :mod:`~brainmatch.sessions.simulate`: a session-level trial with known truth
  (``brainmatch simulate-sessions``).
- :mod:`~brainmatch.sessions.effects`: study-level effects for ``brainmatch meta --schema
  augmentation`` and the one-stage individual-participant model.
- :mod:`~brainmatch.reports.sessions`: ``report.html`` (figures, methods, citations).
"""

from brainmatch.sessions.analysis import SessionsResult, analyse_sessions
from brainmatch.sessions.effects import one_stage_ipd, study_effects
from brainmatch.sessions.mixed import MixedFit, fit_mixed
from brainmatch.sessions.readers import read_sessions
from brainmatch.sessions.schema import validate_sessions
from brainmatch.sessions.simulate import (
    SessionTrialSpec,
    draw_session_trial,
    simulate_session_trial,
)

__all__ = [
    "MixedFit",
    "SessionTrialSpec",
    "SessionsResult",
    "analyse_sessions",
    "draw_session_trial",
    "fit_mixed",
    "one_stage_ipd",
    "read_sessions",
    "simulate_session_trial",
    "study_effects",
    "validate_sessions",
]
