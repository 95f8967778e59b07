"""brainmatch: match patients to the treatment their brain is most likely to respond to.

The package is organised by pipeline stage (see ``docs/architecture.md``):
``simulate`` (a trial with known truth), ``atlases`` (shipped MNI atlases),
``reports`` (HTML reports) and ``cli`` (the ``brainmatch`` command).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainmatch")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

#: entry points imported on first use (statsmodels and pandas are heavy)
_LAZY = {
    "analyse_sessions": "brainmatch.sessions",
    "read_sessions": "brainmatch.sessions",
    "simulate_session_trial": "brainmatch.sessions",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'brainmatch' has no attribute {name!r}")


__all__ = ["__version__", "analyse_sessions", "read_sessions", "simulate_session_trial"]
