"""Evidence synthesis: effect-size and network meta-analysis (and, in ``cbma``, coordinates).

- :mod:`~brainmatch.evidence.effects`: effect sizes as metafor's ``escalc`` (Hedges' g,
  mean difference, log odds / risk ratios) and combining dependent effects.
- :mod:`~brainmatch.evidence.meta`: ``rma`` (FE, REML, ML, DL, PM, HE; z or Knapp-Hartung;
  Q-profile tau² CI; prediction interval), subgroups, meta-regression, leave-one-out,
  Egger's test, trim-and-fill: numbers equal to R's metafor.
- :mod:`~brainmatch.evidence.nma`: frequentist random-effects network meta-analysis with
  multi-arm correlations, P-scores, league table, design-by-treatment inconsistency.
- :mod:`~brainmatch.evidence.readers`: CSV / TSV / XLSX and the Metapsy data standard.
- :mod:`~brainmatch.evidence.schema`: the augmentation coding schema.
- :mod:`~brainmatch.evidence.analysis`: ``meta_analysis`` / ``network_analysis`` (result
  objects that ``save`` their outputs; ``brainmatch.reports.evidence`` renders their
  reports) behind the CLI; ``run_meta`` / ``run_nma``
  fit and save in one call.
"""

from brainmatch.evidence.analysis import (
    MetaAnalysis,
    NetworkMetaAnalysis,
    meta_analysis,
    network_analysis,
    run_meta,
    run_nma,
)
from brainmatch.evidence.meta import MetaResult, rma, subgroup_analysis
from brainmatch.evidence.nma import NMAResult, network_meta_analysis

__all__ = [
    "MetaAnalysis",
    "MetaResult",
    "NMAResult",
    "NetworkMetaAnalysis",
    "meta_analysis",
    "network_analysis",
    "network_meta_analysis",
    "rma",
    "run_meta",
    "run_nma",
    "subgroup_analysis",
]
