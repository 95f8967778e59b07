"""The ``brainmatch`` command line (Typer + Rich).

Each capability lives in its own module here exposing ``register(app)``;
:mod:`brainmatch.cli.main` discovers and registers them.
"""
