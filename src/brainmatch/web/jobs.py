"""Background jobs: persisted in the database, run by worker processes, never in a request.

A worker (``brainmatch serve worker``, started by ``brainmatch serve``) polls the job
table, claims a queued job with one conditional ``UPDATE`` (safe with several workers,
on SQLite and PostgreSQL), beats a heartbeat while it runs and stores progress, the
result or the reason it failed.  A job whose worker died (server restart, kill -9) has a
stale heartbeat: it is queued again (the job is deterministic, so rerunning it resumes it)
up to :data:`MAX_ATTEMPTS` times, then marked failed with that reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from brainmatch.errors import BrainmatchError
from brainmatch.web import engine
from brainmatch.web.audit import record
from brainmatch.web.models import Dataset, DeployedModel, Job, Patient

log = logging.getLogger("brainmatch.web.jobs")

MAX_ATTEMPTS = 2
HEARTBEAT_S = 5.0
STALE_S = 30.0


def enqueue(kind: str, user: Any, params: dict[str, Any], **links: Any) -> Job:
    """Store a new queued job."""
    return Job.objects.create(kind=kind, created_by=user, params=params, **links)


def recover_interrupted(stale_after: float = STALE_S) -> list[Job]:
    """Requeue (or fail, after :data:`MAX_ATTEMPTS`) running jobs whose worker is gone."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    changed = []
    running = list(Job.objects.filter(status=Job.RUNNING))
    for job in running:
        if not (job.heartbeat_at is None or job.heartbeat_at < cutoff or _dead_here(job.worker)):
            continue
        if job.attempts >= MAX_ATTEMPTS:
            n = Job.objects.filter(pk=job.pk, status=Job.RUNNING).update(
                status=Job.FAILED,
                finished_at=timezone.now(),
                error=(
                    f"the job was interrupted {job.attempts} times (server restarted or worker "
                    "stopped while it ran); not retried again"
                ),
                message="failed",
            )
        else:
            n = Job.objects.filter(pk=job.pk, status=Job.RUNNING).update(
                status=Job.QUEUED,
                message="resumed after the server restarted while it ran",
                worker="",
            )
        if n:
            job.refresh_from_db()
            changed.append(job)
            log.warning("job %s was interrupted; now %s", job.pk, job.status)
    return changed


def _dead_here(worker: str) -> bool:
    """True when ``worker`` (host:pid) ran on this host and its process is gone."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim_next(worker: str) -> Job | None:
    """Atomically take the oldest queued job."""
    for pk in (
        Job.objects.filter(status=Job.QUEUED)
        .order_by("created_at")
        .values_list("pk", flat=True)[:10]
    ):
        now = timezone.now()
        n = Job.objects.filter(pk=pk, status=Job.QUEUED).update(
            status=Job.RUNNING,
            worker=worker,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
        )
        if n:
            return Job.objects.get(pk=pk)
    return None


class _Heartbeat:
    """Updates the job's heartbeat (and the latest progress) from a side thread."""

    def __init__(self, job: Job) -> None:
        self.job_id = job.pk
        self.done = 0
        self.total = 0
        self.message = ""
        self._dirty = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def progress(self, done: int, total: int, message: str = "") -> None:
        with self._lock:
            self.done, self.total, self._dirty = done, total, True
            if message:
                self.message = message

    def flush(self) -> None:
        """Write the latest progress now (the side thread does it every few seconds)."""
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            fields: dict[str, Any] = {"heartbeat_at": timezone.now()}
            if self._dirty:
                fields.update(progress_done=self.done, progress_total=self.total)
                if self.message:
                    fields["message"] = self.message[:300]
                self._dirty = False
        Job.objects.filter(pk=self.job_id, status=Job.RUNNING).update(**fields)

    def _run(self) -> None:
        try:
            while not self._stop.wait(min(HEARTBEAT_S, 1.0) if self._dirty else HEARTBEAT_S):
                self._flush()
        finally:
            close_old_connections()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def patient_dir(patient: Patient) -> Path:
    """The patient's private folder (input and results)."""
    return Path(settings.BRAINMATCH.data_dir) / "patients" / patient.storage


def dataset_dir(dataset: Dataset) -> Path:
    """A researcher dataset's private folder."""
    return Path(settings.BRAINMATCH.data_dir) / "datasets" / dataset.storage


def training_dir(job: Job) -> Path:
    """A training job's output folder."""
    return Path(settings.BRAINMATCH.data_dir) / "trainings" / job.storage


def model_path(model: Any) -> Path:
    """A deployed model's file."""
    return Path(settings.BRAINMATCH.data_dir) / "models" / model.file_name


def _run_recommend(job: Job, beat: _Heartbeat) -> dict[str, Any]:
    patient = job.patient
    assert patient is not None and job.model is not None
    folder = patient_dir(patient)
    out = folder / "output"
    if out.exists():  # an interrupted earlier attempt: start it again cleanly
        shutil.rmtree(out)
    beat.progress(0, 3 if job.params.get("normative") else 2, "predicting every arm's outcome")
    inp = folder / "input"
    source = inp / "bids" if patient.kind == "zip" else inp / "features.tsv"
    clinical = inp / "clinical.tsv"
    result = engine.recommend_patient(
        model_path(job.model),
        source,
        out,
        clinical=clinical if clinical.exists() else None,
        participant=patient.pseudonym,
        chromium=settings.BRAINMATCH.chromium,
        model_name=job.model.name,
    )
    norm_id = job.params.get("normative")
    if norm_id:
        norm = DeployedModel.objects.filter(pk=norm_id, kind="normative").first()
        if norm is None:
            raise BrainmatchError("the chosen normative reference was deleted")
        beat.progress(1, 3, "building the profile against the normative reference")
        try:
            profile = engine.build_patient_profile(
                model_path(norm),
                source,
                out / "profile",
                clinical=clinical if clinical.exists() else None,
                participant=patient.pseudonym,
                selection_path=model_path(job.model),
                normative_name=norm.name,
                selection_name=job.model.name,
                chromium=settings.BRAINMATCH.chromium,
            )
        except BrainmatchError as exc:
            # the recommendation stands; the page says why the profile is missing
            reason = getattr(exc, "reason", None) or str(exc)
            result["profile_error"] = reason.replace(str(Path(settings.BRAINMATCH.data_dir)), "")
            result["profile_name"] = norm.name
        else:
            profile["normative_name"] = norm.name
            result["profile"] = profile
    if not Patient.objects.filter(pk=patient.pk).exists():
        # deleted while the job ran: remove what the job wrote after the deletion
        shutil.rmtree(folder, ignore_errors=True)
        raise BrainmatchError("the patient was deleted while the job ran")
    steps = 3 if norm_id else 2
    beat.progress(steps, steps, "done")
    return result


def _run_train(job: Job, beat: _Heartbeat) -> dict[str, Any]:
    dataset = job.dataset
    assert dataset is not None
    out = training_dir(job)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = dataset_dir(dataset)

    def progress(done: int, total: int) -> None:
        beat.progress(done, total, f"cross-validation fold {done} of {total}")

    beat.progress(0, 0, "reading the trial")
    return engine.train_model(
        folder / "features.tsv", folder / "outcomes.tsv", out, job.params, progress
    )


RUNNERS = {"recommend": _run_recommend, "train": _run_train}


def run_job(job: Job) -> Job:
    """Run one claimed job to the end and store its result or failure."""
    runner = RUNNERS.get(job.kind)
    log.info("job %s (%s) started, attempt %d", job.pk, job.kind, job.attempts)
    with _Heartbeat(job) as beat:
        try:
            if runner is None:
                raise BrainmatchError(f"unknown job kind {job.kind!r}")
            result = runner(job, beat)
        except (KeyboardInterrupt, SystemExit):
            # the worker is being stopped: give the job back, it resumes on the next start
            Job.objects.filter(pk=job.pk, status=Job.RUNNING).update(
                status=Job.QUEUED,
                attempts=F("attempts") - 1,
                worker="",
                message="paused: the server stopped while it ran; resumes on restart",
            )
            log.warning("job %s paused by shutdown", job.pk)
            raise
        except BrainmatchError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            _finish(job, Job.FAILED, error=reason)
            log.info("job %s failed: input refused", job.pk)
        except Exception as exc:
            # the server log gets the exception type and the code locations only: its
            # message could quote a participant code or a value
            frames = "".join(traceback.format_tb(exc.__traceback__, limit=-8))
            log.error("job %s crashed with %s:\n%s", job.pk, type(exc).__name__, frames)
            _finish(
                job,
                Job.FAILED,
                error="internal error while running the job (see the "
                "server log for job " + str(job.pk) + ")",
            )
        else:
            # store the last progress first: a fast job can end before the side thread's
            # next beat, and a finished job's progress is never written again
            beat.flush()
            _finish(job, Job.DONE, result=result)
            log.info("job %s done", job.pk)
    try:
        job.refresh_from_db()
    except Job.DoesNotExist:  # its patient was deleted meanwhile
        return job
    record(None, f"job.{job.status}", job, username="(worker)",
           outcome="ok" if job.status == Job.DONE else "failed")  # fmt: skip
    return job


def _finish(job: Job, status: str, *, result: Any = None, error: str = "") -> None:
    with transaction.atomic():
        Job.objects.filter(pk=job.pk).update(
            status=status,
            result=result if result is not None else {},
            error=error[:2000],
            finished_at=timezone.now(),
            heartbeat_at=timezone.now(),
            message="done" if status == Job.DONE else "failed",
            progress_done=F("progress_total") if status == Job.DONE else F("progress_done"),
        )


def purge_expired() -> int:
    """Delete patients older than the retention setting, with their files."""
    days = settings.BRAINMATCH.retention_days
    if not days:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    n = 0
    for patient in Patient.objects.filter(created_at__lt=cutoff):
        delete_patient(patient)
        record(None, "patient.retention_delete", patient, username="(retention)")
        n += 1
    return n


def housekeeping() -> None:
    """Drop expired sessions and sign-in attempts older than a day."""
    from django.contrib.sessions.models import Session

    from brainmatch.web.models import LoginAttempt

    Session.objects.filter(expire_date__lt=timezone.now()).delete()
    LoginAttempt.objects.filter(at__lt=timezone.now() - timedelta(days=1)).delete()


def delete_patient(patient: Patient) -> None:
    """Delete a patient's files, then its row (and its jobs)."""
    folder = patient_dir(patient)
    pk = patient.pk
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        raise OSError(f"could not delete the files of patient {pk}")
    patient.delete()
    patient.pk = pk


def worker_id() -> str:
    """host:pid of this worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


def work(
    stop: threading.Event | None = None,
    *,
    poll: float = 1.0,
    once: bool = False,
) -> int:
    """The worker loop: recover, claim, run; returns the number of jobs run.

    Parameters
    ----------
    stop : Event, optional
        Set it to end the loop after the current job.
    poll : float
        Seconds between polls of an empty queue.
    once : bool
        Return when the queue is empty (tests).
    """
    stop = stop or threading.Event()
    me = worker_id()
    n = 0
    last_purge = 0.0
    while not stop.is_set():
        try:
            close_old_connections()
            recover_interrupted()
            if time.monotonic() - last_purge > 3600:
                purge_expired()
                housekeeping()
                last_purge = time.monotonic()
            job = claim_next(me)
        except Exception as exc:  # database unavailable for a moment: wait and retry
            log.error("worker %s: %s; retrying", me, type(exc).__name__)
            if once:
                raise
            stop.wait(max(poll, 5.0))
            continue
        if job is None:
            if once:
                break
            stop.wait(poll)
            continue
        run_job(job)
        n += 1
    close_old_connections()
    return n
