"""Run the outer folds, permutation blocks and bootstrap refits on a Dask cluster.

``validate(..., scheduler="tcp://host:8786")`` (``brainmatch train --scheduler``) sends
each outer fold (with its block of permuted targets) and each bootstrap refit of the final
model to an existing Dask distributed cluster, as the feature extraction and the ALE
Monte Carlo do.  The inputs are scattered once per analysis step; tasks are pure functions
of them and of their fold indices; results are collected in task order, so every sum over
folds is taken in the same order as in a serial run and the results are identical for the
same seed.  Each task limits BLAS to one thread (``threadpoolctl``): OpenBLAS 0.3.31
collapses when the cores are oversubscribed (``docs/architecture.md``); parallelism comes
from the cluster's workers.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from brainmatch.errors import BrainmatchInputError

#: How long to wait for the scheduler before giving up (a Dask duration).
CONNECT_TIMEOUT = "20s"
#: Modules whose upper-case settings (documented knobs such as ``screen.CRITERION`` or
#: ``screen.SCREEN_SE``) every task sees as the driver has them: a worker process imports
#: its own copy of each module, which would otherwise keep the defaults.
SETTINGS_MODULES = (
    "brainmatch.selection.screen",
    "brainmatch.selection.train",
    "brainmatch.selection.pipeline",
    "brainmatch.selection._ridge",
    "brainmatch.selection._logistic",
    "brainmatch.selection.fourier",
    "brainmatch.selection.hinge",
    "brainmatch.selection.product",
    "brainmatch.selection.learners",
    "brainmatch.selection.trees",
)
_MISSING = object()


def _plain(value: Any) -> bool:
    """Whether a module setting is plain data (numbers, strings, arrays, tuples of them)."""
    if isinstance(value, (bool, int, float, str, type(None), np.ndarray, np.generic)):
        return True
    return isinstance(value, tuple) and all(_plain(v) for v in value)


def module_settings() -> dict[str, dict[str, Any]]:
    """The upper-case plain-data settings of :data:`SETTINGS_MODULES` loaded here."""
    out: dict[str, dict[str, Any]] = {}
    for name in SETTINGS_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            out[name] = {k: v for k, v in vars(module).items() if k.isupper() and _plain(v)}
    return out


def call_with_settings(
    settings: dict[str, dict[str, Any]], task: Callable[..., Any], *args: Any
) -> Any:
    """``task(*args)`` with the modules' settings as the driver had them, restored after."""
    saved: list[tuple[Any, str, Any]] = []
    try:
        for name, values in settings.items():
            module = importlib.import_module(name)
            for key, value in values.items():
                saved.append((module, key, getattr(module, key, _MISSING)))
                setattr(module, key, value)
        return task(*args)
    finally:
        for module, key, value in reversed(saved):
            if value is _MISSING:
                delattr(module, key)
            else:
                setattr(module, key, value)


class DaskRunner:
    """A connection to a Dask distributed scheduler that maps tasks in order.

    Parameters
    ----------
    scheduler : str
        Scheduler address, e.g. ``tcp://127.0.0.1:8786``.
    timeout : str, optional
        How long to wait for the scheduler (default :data:`CONNECT_TIMEOUT`).
    """

    def __init__(self, scheduler: str, timeout: str | None = None) -> None:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - dask is a dependency
            raise BrainmatchInputError(f"scheduler= needs dask.distributed: {exc}") from None
        self.address = scheduler
        try:
            self.client = Client(scheduler, timeout=timeout or CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise BrainmatchInputError(
                f"scheduler={scheduler!r}: cannot reach the Dask scheduler ({exc})"
            ) from None

    def map(
        self,
        task: Callable[..., Any],
        shared: Any,
        jobs: Sequence[tuple[Any, ...]],
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[Any]:
        """``task(shared, *job)`` on the cluster for every job, with the driver's module
        settings (:func:`module_settings`); results in job order."""
        remote = self.client.scatter(shared, broadcast=True, hash=False)
        settings = module_settings()
        futures = [
            self.client.submit(call_with_settings, settings, task, remote, *job, pure=False)
            for job in jobs
        ]
        try:
            for i, fut in enumerate(futures):
                result = fut.result()
                fut.release()
                if progress is not None:
                    progress(i + 1, len(jobs))
                yield result
        finally:
            for fut in futures:
                fut.cancel()
            remote.release()

    def close(self) -> None:
        """Disconnect from the scheduler (the cluster keeps running)."""
        self.client.close()


@contextlib.contextmanager
def dask_runner(scheduler: str | DaskRunner) -> Iterator[DaskRunner]:
    """A :class:`DaskRunner` for an address (closed on exit), or the runner given."""
    if isinstance(scheduler, DaskRunner):
        yield scheduler
        return
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise BrainmatchInputError(
            f"scheduler={scheduler!r}: expected a Dask scheduler address such as "
            "tcp://127.0.0.1:8786"
        )
    runner = DaskRunner(scheduler)
    try:
        # tasks running in this process (a LocalCluster with processes=False) see one
        # BLAS thread as well
        with threadpool_limits(1):
            yield runner
    finally:
        runner.close()
