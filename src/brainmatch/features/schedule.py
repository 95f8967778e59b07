"""Running units of work: in this process, on local lean workers, or on Dask.

A unit's (or run's) work is a generator (:data:`Steps`): it yields the heavy, lean
steps (a :class:`~brainmatch.features.lean.StreamJob` streaming a BOLD into region
sums, a :class:`~brainmatch.features.dtifit.TensorJob` fitting a DWI's tensors) to
whoever runs them (a worker process, Dask, or this process), is sent back their value
(or has the worker's error thrown in) and returns its result.  One code path thus
serves in-process, pooled and Dask runs; the schedulers here know nothing about
modalities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from brainmatch.errors import BrainmatchInputError
from brainmatch.features.bids import Unit
from brainmatch.features.lean import LeanPool, StreamJob, do_job, run_job

#: A lean job (anything :func:`brainmatch.features.lean.do_job` runs).
Job = Any
Steps = Generator[Job, Any, dict[str, Any]]

#: units prepared and queued per worker (each holds its RegionPlan, ~5 MB at 2 mm)
LOOKAHEAD = 4


def is_job(value: Any) -> bool:
    """True for a lean job yielded by steps (as opposed to their final result)."""
    return not isinstance(value, dict)


class LeanFailure(Exception):
    """A worker process died or failed outside brainmatch's checks (message: the reason)."""


def from_worker(reply: tuple[Any, ...]) -> Any:
    """A lean worker's reply tuple as what to send (or throw) into the steps."""
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "input":
        return BrainmatchInputError(reply[1], reply[2])
    if kind == "internal":
        return LeanFailure(f"internal error in the worker ({reply[1]})")
    return LeanFailure(str(reply[1]))


def advance(steps: Steps, reply: Any) -> Job | dict[str, Any]:
    """Resume ``steps`` with a reply (None to start); its next job, or its result."""
    try:
        if isinstance(reply, BaseException):
            return steps.throw(reply)
        return steps.send(reply)
    except StopIteration as stop:
        return stop.value


def drive_here(steps: Steps) -> dict[str, Any]:
    """Run ``steps`` to the end, doing the lean steps in this process."""
    reply: Any = None
    while True:
        out = advance(steps, reply)
        if not is_job(out):
            return out
        try:
            reply = do_job(out)
        except Exception as exc:
            reply = exc


def one_thread() -> Any:
    """``threadpool_limits(1)`` over every BLAS the finishing steps use.

    threadpoolctl limits only the libraries already loaded: scipy.linalg (which brings
    scipy's own OpenBLAS, apart from numpy's) is imported first, or its threads would
    spin beside the workers' on every confound regression.
    """
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def run_local(
    units: Sequence[Unit],
    make_steps: Callable[[Unit], Steps],
    pool: LeanPool,
    done: Callable[[dict[str, Any]], None],
) -> int:
    """Run the lean steps in the worker processes of ``pool`` (one even with ``--n-jobs 1``).

    The parent prepares each unit, hands its lean steps to the workers and finishes
    the unit when their results come back; a few units are prepared ahead so the
    workers never wait for the parent.  Returns the workers' peak RSS in bytes.
    """
    from contextlib import ExitStack

    from threadpoolctl import threadpool_limits

    n_workers = pool.n_workers
    todo = list(reversed(units))
    active: dict[int, Steps] = {}
    with ExitStack() as limits:
        limits.enter_context(threadpool_limits(1))
        scipy_limited = False

        def feed(token: int, steps: Steps, reply: Any) -> None:
            out = advance(steps, reply)
            if is_job(out):
                active[token] = steps
                pool.submit(token, out)
            else:
                active.pop(token, None)
                done(out)

        token = 0
        while todo or active:
            # keep LOOKAHEAD units per worker queued, so the workers keep streaming while
            # this process finishes a unit
            while todo and len(active) < LOOKAHEAD * n_workers:
                token += 1
                feed(token, make_steps(todo.pop()), None)
            if not scipy_limited:  # once the workers have work: import scipy, limit it
                limits.enter_context(one_thread())
                scipy_limited = True
            if active:
                tok, reply = pool.get()
                feed(tok, active[tok], from_worker(reply))
        return pool.peak_rss


def run_dask(
    units: Sequence[Unit],
    make_steps: Callable[[Unit], Steps],
    scheduler: str,
    done: Callable[[dict[str, Any]], None],
) -> int:
    """Run the lean steps on a Dask cluster; the rest runs here (as :func:`run_local`)."""
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise BrainmatchInputError(f"--scheduler needs dask.distributed: {exc}") from None

    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise BrainmatchInputError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    peak = 0
    try:
        width = 2 * max(1, sum(client.nthreads().values()))
        todo = list(reversed(units))
        active: dict[str, tuple[Unit, Steps]] = {}
        pending = as_completed()

        def feed(unit: Unit, steps: Steps, reply: Any) -> None:
            out = advance(steps, reply)
            if is_job(out):
                key = f"extract-{unit.key}-{time.monotonic_ns()}"
                fut = client.submit(run_job, out, pure=False, key=key)
                active[key] = (unit, steps)
                pending.add(fut)
            else:
                done(out)

        with one_thread():
            while todo or active:
                while todo and len(active) < width:
                    unit = todo.pop()
                    feed(unit, make_steps(unit), None)
                if not active:
                    continue
                fut = next(pending)
                unit, steps = active.pop(str(fut.key))
                try:
                    reply = fut.result()
                except Exception as exc:
                    reply = ("died", f"Dask task failed ({type(exc).__name__}: {exc})", None, 0)
                peak = max(peak, int(reply[-1] or 0))
                feed(unit, steps, from_worker(reply))
    finally:
        client.close()
    return peak


__all__ = [
    "LOOKAHEAD",
    "Job",
    "LeanFailure",
    "Steps",
    "StreamJob",
    "advance",
    "drive_here",
    "from_worker",
    "one_thread",
    "run_dask",
    "run_local",
]
