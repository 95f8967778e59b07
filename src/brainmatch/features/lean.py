"""The lean worker step of ``brainmatch extract``: stream one BOLD into region sums.

(and hash the BOLD file for the resume record while it is read: one pass, not two).

This module (and everything it imports: numpy, nibabel, python-isal and brainmatch's
``errors`` / ``niftistream`` / ``regions``) is all a worker process loads, so a worker's
peak memory is the streaming buffers plus ~50 MB of imports, not the ~250 MB that
pandas, scipy and nilearn would add.  Everything else (confounds, cleaning,
connectivity, amplitude, writes) runs in the parent on the small region x time matrix.

Two ways to run the step out of process:

- :class:`LeanPool`: local worker subprocesses (``python -c "...serve()"``) that read
  :class:`StreamJob` objects on stdin and write replies on stdout (pickles exchanged
  between brainmatch's own processes; no user file is ever unpickled);
- :func:`run_job` submitted to a Dask cluster.

Either way the reply is a plain tuple: ``("ok", value, maxrss_bytes)`` (value: the
:class:`RegionSignals` of a :class:`StreamJob`),
``("input", reason, path, maxrss_bytes)`` for a :class:`BrainmatchInputError` or
``("internal", description, None, maxrss_bytes)`` for anything else.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import queue
import resource
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from brainmatch.errors import BrainmatchInputError
from brainmatch.features.regions import RegionPlan

#: Modules a lean worker must never import (checked by the tests).  nibabel imports the
#: bare ``scipy`` package (its version and config only), never these.
HEAVY_MODULES = (
    "pandas",
    "nilearn",
    "sklearn",
    "scipy.signal",
    "scipy.linalg",
    "scipy.ndimage",
    "scipy.sparse",
    "scipy.stats",
)


#: The content hash recorded for every input (so that a rerun can tell what changed):
#: BLAKE2b-256, a cryptographic hash faster than SHA-256 on CPUs without SHA
#: instructions (1.3-2.1x on this project's 2-core test machine: 0.26-0.44 s vs
#: 0.44-0.94 s for a 168 MB BOLD, depending on the machine's load).
HASH_NAME = "blake2b"


def new_hash() -> Any:
    """A fresh :data:`HASH_NAME` hash object."""
    return hashlib.blake2b(digest_size=32)


@dataclass(frozen=True)
class StreamJob:
    """One BOLD run to stream through a prepared :class:`RegionPlan`.

    With ``fingerprint``, the BOLD file is also hashed as it is read (one pass instead
    of two); the reply's ``extra["fingerprint"]`` is its :func:`file_fingerprint`.
    """

    bold: Path
    plan: RegionPlan
    volumes_per_block: int = 1
    fingerprint: bool = False


def _fingerprint_entry(path: Path, st: os.stat_result, digest: str) -> dict[str, Any]:
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, HASH_NAME: digest}


def file_fingerprint(path: Path, chunk: int = 1 << 20) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns", HASH_NAME}`` of a file."""
    st = path.stat()
    h = new_hash()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return _fingerprint_entry(path, st, h.hexdigest())


def do_job(job: Any) -> Any:
    """Run a job here; raises what it raises.

    A :class:`StreamJob`, or any other lean job: an object whose ``run()`` does the
    work with the modules allowed here (e.g. :class:`brainmatch.features.dtifit.TensorJob`).
    """
    if not isinstance(job, StreamJob):
        return job.run()
    if not job.fingerprint:
        return job.plan.extract(job.bold, job.volumes_per_block)
    try:
        st = job.bold.stat()
    except OSError as exc:
        raise BrainmatchInputError(f"cannot open: {exc.strerror or exc}", job.bold) from None
    h = new_hash()
    sig = job.plan.extract(job.bold, job.volumes_per_block, hasher=h)
    sig.extra["fingerprint"] = _fingerprint_entry(job.bold, st, h.hexdigest())
    return sig


def peak_rss_bytes() -> int:
    """This process's peak resident set size in bytes.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` would not do,
    because Linux carries the parent's peak over ``fork`` + ``exec`` into the child's.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if sys.platform == "darwin" else 1024)


def run_job(job: Any) -> tuple[Any, ...]:
    """Run one job; never raises (errors come back as values, see the module notes)."""
    try:
        value = do_job(job)
    except BrainmatchInputError as exc:
        path = str(exc.path) if exc.path is not None else None
        return ("input", exc.reason, path, peak_rss_bytes())
    except Exception as exc:
        where = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return ("internal", f"{type(exc).__name__}: {exc}; {where}", None, peak_rss_bytes())
    return ("ok", value, peak_rss_bytes())


def serve() -> None:
    """Worker loop: read pickled :class:`StreamJob` on stdin, write replies on stdout.

    Stray prints go to stderr (stdout is rebound there) so they cannot corrupt replies.
    Returns when stdin closes (the parent finished or died).
    """
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    source = sys.stdin.buffer
    while True:
        try:
            # trusted: stdin is a pipe from the brainmatch parent that spawned this worker;
            # no user file is ever unpickled here
            job = pickle.load(source)
        except EOFError:
            return
        try:
            pickle.dump(run_job(job), reply, protocol=pickle.HIGHEST_PROTOCOL)
            reply.flush()
        except BrokenPipeError:
            return


_SERVE = "from brainmatch.features.lean import serve; serve()"


class _Worker:
    """One worker subprocess, restarted when it dies."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.used = False  # a job was sent to the current process

    def _start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        env["MKL_NUM_THREADS"] = "1"
        return subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def run(self, job: Any) -> tuple[Any, ...]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        self.used = True
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        try:
            pickle.dump(job, stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
            out = pickle.load(stdout)  # trusted: the pipe from our own worker subprocess
        except (EOFError, OSError, pickle.UnpicklingError):
            code = self.proc.wait()
            self.proc = None
            return ("died", f"worker process died (exit code {code})", None, 0)
        return tuple(out)

    def close(self) -> None:
        if self.proc is None:
            return
        if not self.used:  # started ahead but never given work: do not wait for its imports
            self.proc.kill()
        for fh in (self.proc.stdin, self.proc.stdout):
            try:
                if fh is not None:
                    fh.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck worker
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class LeanPool:
    """``n`` lean worker subprocesses fed from one queue.

    Parameters
    ----------
    n_workers : int

    Notes
    -----
    :meth:`submit` a job with a token; :meth:`get` returns ``(token, reply)`` pairs in
    completion order.  :attr:`peak_rss` is the largest ``ru_maxrss`` any worker reported.
    """

    def __init__(self, n_workers: int) -> None:
        self._jobs: queue.Queue[tuple[Any, Any] | None] = queue.Queue()
        self._done: queue.Queue[tuple[Any, tuple[Any, ...]]] = queue.Queue()
        self.n_workers = max(1, n_workers)
        self._workers = [_Worker() for _ in range(self.n_workers)]
        self._threads = [
            threading.Thread(target=self._loop, args=(w,), daemon=True) for w in self._workers
        ]
        self.peak_rss = 0
        for t in self._threads:
            t.start()

    def _loop(self, worker: _Worker) -> None:
        try:
            try:  # start now: the worker's imports overlap the parent's first preparations
                worker.proc = worker._start()
            except OSError:  # pragma: no cover - reported by the first job
                pass
            while True:
                item = self._jobs.get()
                if item is None:
                    return
                token, job = item
                try:
                    out = worker.run(job)
                except Exception as exc:  # pragma: no cover - cannot start a process
                    out = ("died", f"cannot run a worker process ({exc})", None, 0)
                self._done.put((token, out))
        finally:
            worker.close()

    def submit(self, token: Any, job: Any) -> None:
        """Queue ``job``; its reply comes back from :meth:`get` with ``token``."""
        self._jobs.put((token, job))

    def get(self) -> tuple[Any, tuple[Any, ...]]:
        """The next finished ``(token, reply)``."""
        token, out = self._done.get()
        self.peak_rss = max(self.peak_rss, int(out[-1] or 0))
        return token, out

    def close(self) -> None:
        """Stop the workers (after the jobs already queued)."""
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()

    def __enter__(self) -> LeanPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:  # an error or Ctrl-C in the parent: drop queued jobs
            try:
                while True:
                    self._jobs.get_nowait()
            except queue.Empty:
                pass
        self.close()


__all__ = [
    "HASH_NAME",
    "HEAVY_MODULES",
    "LeanPool",
    "StreamJob",
    "do_job",
    "file_fingerprint",
    "new_hash",
    "peak_rss_bytes",
    "run_job",
    "serve",
]
