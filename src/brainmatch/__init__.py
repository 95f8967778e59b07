"""brainmatch: match patients to the treatment their brain is most likely to respond to.

The package is organised by pipeline stage (see ``docs/architecture.md``): ``simulate``
(trials with known truth), ``features`` (``extract``), ``harmonize``, ``selection``
(treatment selection), ``normative`` and ``circuits`` (a patient against healthy norms),
``change`` (brain change under treatment), ``durability`` (time to relapse), ``sessions``
(session-level augmentation data), ``evidence`` (meta-analysis, network and
coordinate-based meta-analysis), ``reports``, ``web`` (``brainmatch serve``) and ``cli``.

The main entry points are importable from here and loaded on first use, so that
``import brainmatch`` stays light (see ``__all__`` and the README's Python section).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainmatch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

#: name -> module (or (module, attribute)); imported on first use.
_LAZY: dict[str, str | tuple[str, str]] = {
    # trials, features
    "simulate_trial": "brainmatch.simulate",
    "TrialSpec": "brainmatch.simulate",
    "extract_dataset": "brainmatch.features",
    # treatment selection
    "train": "brainmatch.selection",
    "recommend": "brainmatch.selection",
    "TreatmentSelector": "brainmatch.selection",
    "ValidationResult": "brainmatch.selection",
    "cross_validate": "brainmatch.selection",
    "validate": "brainmatch.selection",
    # a patient against healthy norms
    "NormativeModel": "brainmatch.normative",
    "fit_normative": "brainmatch.normative",
    "score_normative": "brainmatch.normative",
    "build_profile": "brainmatch.normative.profile",
    "load_knowledge_base": "brainmatch.modalities",
    # brain change, durability, session-level data
    "analyse_change": "brainmatch.change",
    "fit_random_intercept": "brainmatch.change",
    "SurvivalSelector": "brainmatch.durability",
    "validate_durability": "brainmatch.durability",
    "analyse_sessions": "brainmatch.sessions",
    "read_sessions": "brainmatch.sessions",
    "simulate_session_trial": "brainmatch.sessions",
    # evidence synthesis
    "meta_analysis": "brainmatch.evidence",
    "network_analysis": "brainmatch.evidence",
    "CoordinateMetaAnalysis": "brainmatch.evidence.cbma",
    "compare_coordinates": ("brainmatch.evidence.cbma", "compare"),
    "run_cbma": "brainmatch.evidence.cbma",
    "read_coordinates": "brainmatch.evidence.cbma_io",
}


def __getattr__(name: str) -> object:
    """Import an entry point on first use (keeps ``import brainmatch`` light)."""
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'brainmatch' has no attribute {name!r}")
    import importlib

    module, attr = (target, name) if isinstance(target, str) else target
    return getattr(importlib.import_module(module), attr)


__all__ = ["__version__", *_LAZY]
