"""brainmatch: match patients to the treatment their brain is most likely to respond to.

The package is organised by pipeline stage (see ``docs/architecture.md``):
``simulate`` (a trial with known truth), ``atlases`` (shipped MNI atlases),
``reports`` (HTML reports) and ``cli`` (the ``brainmatch`` command).

The main entry points are importable from here (loaded on first use):
``simulate_trial``, ``extract_dataset``, ``train``, ``recommend``, ``meta_analysis``,
``network_analysis``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainmatch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

#: Main entry points, imported on first use (keeps ``import brainmatch`` light).
_LAZY = {
    "simulate_trial": "brainmatch.simulate",
    "TrialSpec": "brainmatch.simulate",
    "extract_dataset": "brainmatch.features",
    "train": "brainmatch.selection",
    "recommend": "brainmatch.selection",
    "meta_analysis": "brainmatch.evidence",
    "network_analysis": "brainmatch.evidence",
    "NormativeModel": "brainmatch.normative",
    "fit_normative": "brainmatch.normative",
    "score_normative": "brainmatch.normative",
    "build_profile": "brainmatch.normative.profile",
    "load_knowledge_base": "brainmatch.modalities",
    "analyse_change": "brainmatch.change",
    "fit_random_intercept": "brainmatch.change",
    "SurvivalSelector": "brainmatch.durability",
    "validate_durability": "brainmatch.durability",
    "analyse_sessions": "brainmatch.sessions",
    "read_sessions": "brainmatch.sessions",
    "simulate_session_trial": "brainmatch.sessions",
}


def __getattr__(name: str) -> object:
    """Import an entry point on first use (keeps ``import brainmatch`` light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'brainmatch' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
