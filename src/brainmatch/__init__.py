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

#: Main entry points, imported on first use (NiMARE and friends are slow to import).
_LAZY = {
    "CoordinateMetaAnalysis": "brainmatch.evidence.cbma",
    "compare_coordinates": ("brainmatch.evidence.cbma", "compare"),
    "run_cbma": "brainmatch.evidence.cbma",
    "read_coordinates": "brainmatch.evidence.cbma_io",
}


def __getattr__(name: str) -> object:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'brainmatch' has no attribute {name!r}")
    import importlib

    module, attr = (target, name) if isinstance(target, str) else target
    return getattr(importlib.import_module(module), attr)


__all__ = ["__version__", *_LAZY]
