"""A context manager that spares a block's garbage collections the long-lived heap."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Freeze the objects alive now (``gc.freeze``) for the block's duration.

    nilearn calls ``gc.collect()`` for every image it loads; with a large heap (nilearn,
    matplotlib, pandas) each call costs ~0.15 s.  Frozen objects are not rescanned, and
    they are unfrozen on exit (unless the heap was already frozen by an outer block).
    """
    frozen = gc.get_freeze_count() > 0
    if not frozen:
        gc.freeze()
    try:
        yield
    finally:
        if not frozen:
            gc.unfreeze()
