"""Brain change under treatment: per-feature mixed models of pre/post scans.

:func:`analyse_change` (``brainmatch change``) fits, for every feature, a linear mixed
model with a random intercept per participant (:func:`fit_random_intercept`, an exact
vectorised equivalent of statsmodels' ``MixedLM``), reports each arm's change with its
confidence interval, the arm-by-time interaction with FDR and permutation FWE control,
circuit-level contrasts (the affect network) and the change-outcome association, and
returns a :class:`ChangeResult` (``.save(dir)`` writes ``change.tsv``, ``results.json``
and figures; ``brainmatch.reports.change`` its ``report.html``).  Guide: ``docs/change.md``.
"""

from brainmatch.change.analysis import ChangeResult, analyse_change, default_contrast
from brainmatch.change.data import ChangeData, load_change_data
from brainmatch.change.mixed import RandomInterceptFit, fit_random_intercept

__all__ = [
    "ChangeData",
    "ChangeResult",
    "RandomInterceptFit",
    "analyse_change",
    "default_contrast",
    "fit_random_intercept",
    "load_change_data",
]
