"""Build the optional C kernel; everything else is configured in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "brainmatch.features._regionsum",
            ["src/brainmatch/features/_regionsum.c"],
            extra_compile_args=["-O3"],
            # brainmatch falls back to numpy (slower, same numbers) without a compiler
            optional=True,
        )
    ]
)
