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
