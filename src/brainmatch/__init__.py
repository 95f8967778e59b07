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

__all__ = ["__version__"]

# treatment selection (imported on first use: scikit-learn and pandas are heavy)
_SELECTION = ("TreatmentSelector", "ValidationResult", "cross_validate", "validate")


def __getattr__(name: str) -> object:
    if name in _SELECTION:
        from brainmatch import selection

        return getattr(selection, name)
    raise AttributeError(f"module 'brainmatch' has no attribute {name!r}")
