"""The web service (``brainmatch serve``): users, roles, sessions, flows, jobs, audit.

Runs Django in-process (SQLite in a temporary data folder, see ``_webtest.py``); the
real-server, browser, load and PostgreSQL tests are in the other ``test_web_*`` modules.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from _webtest import PASSWORD, django_ready, patient_csv, trained_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
_names = itertools.count()


@pytest.fixture(scope="module")
def cfg():
    return django_ready()


@pytest.fixture(scope="module")
def trained():
    return trained_model()


def make_user(role: str, prefix: str = "u"):
    from brainmatch.web.services import create_user

    return create_user(f"{prefix}{role[:3]}{next(_names)}-{os.getpid()}", role, PASSWORD)


def client_for(user):
    from django.test import Client

    c = Client()
    c.force_login(user)
    return c


@pytest.fixture(scope="module")
def deployed(cfg, trained):
    from brainmatch.web.services import deploy_model

    return deploy_model(trained.model, "Depression: CBT vs SSRI")


def upload(client, trained, deployed, i=0, **extra):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {
        "features": SimpleUploadedFile("row.csv", patient_csv(trained, i), "text/csv"),
        "model": str(deployed.pk),
        **extra,
    }
    return client.post("/patients/new/", data)


def run_jobs():
    from brainmatch.web.jobs import work

    return work(once=True)


# --- configuration ---------------------------------------------------------------------


def test_database_url_parsing(tmp_path):
    from brainmatch.errors import BrainmatchInputError
    from brainmatch.web.config import parse_database_url

    pg = parse_database_url(
        "postgres://bm:p%40ss@db.example:5433/brainmatch?sslmode=require", tmp_path
    )
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "brainmatch", "bm", "p@ss", "db.example", "5433"
    )  # fmt: skip
    assert pg["OPTIONS"] == {"sslmode": "require"}
    lite = parse_database_url("", tmp_path)
    assert lite["NAME"] == str(tmp_path / "db.sqlite3")
    assert lite["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert parse_database_url("sqlite:////srv/bm.sqlite3", tmp_path)["NAME"] == "/srv/bm.sqlite3"
    with pytest.raises(BrainmatchInputError, match="unsupported scheme 'mysql'"):
        parse_database_url("mysql://x@y/z", tmp_path)
    with pytest.raises(BrainmatchInputError, match="no database name"):
        parse_database_url("postgres://x@y/", tmp_path)


def test_data_folder_is_private_and_key_generated(cfg):
    assert (cfg.data_dir / "secret_key").stat().st_mode & 0o077 == 0
    assert len((cfg.data_dir / "secret_key").read_text()) >= 50
    assert cfg.data_dir.stat().st_mode & 0o077 == 0


def test_passwords_strong_hasher_and_validators(cfg):
    from django.contrib.auth.hashers import PBKDF2PasswordHasher, get_hasher

    import brainmatch.web.settings as web_settings
    from brainmatch.errors import BrainmatchInputError
    from brainmatch.web.services import create_user

    # the service keeps Django's default hasher list (PBKDF2-SHA256 first)
    assert not hasattr(web_settings, "PASSWORD_HASHERS")
    assert PBKDF2PasswordHasher.iterations >= 600_000  # OWASP 2023 minimum
    encoded = PBKDF2PasswordHasher().encode(PASSWORD, PBKDF2PasswordHasher().salt())
    assert encoded.startswith(f"pbkdf2_sha256${PBKDF2PasswordHasher.iterations}$")
    assert get_hasher("default").algorithm  # configured
    with pytest.raises(BrainmatchInputError, match="password: This password is too short"):
        create_user(f"weak{os.getpid()}", "clinician", "abc123")
    with pytest.raises(BrainmatchInputError, match="--role 'superuser'"):
        create_user(f"role{os.getpid()}", "superuser", PASSWORD)


def test_createuser_and_deploy_cli(cfg, trained):
    from typer.testing import CliRunner

    from brainmatch.cli.main import app
    from brainmatch.web.models import DeployedModel, Profile

    runner = CliRunner()
    name = f"cli-alice-{os.getpid()}"
    args = ["serve", "createuser", name, "--role", "clinician", "--password-stdin"]
    res = runner.invoke(app, [*args, "--data-dir", str(cfg.data_dir)], input=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    assert Profile.objects.get(user__username=name).role == "clinician"
    res = runner.invoke(app, [*args, "--data-dir", str(cfg.data_dir)], input=PASSWORD + "\n")
    assert res.exit_code == 2 and "exists" in res.output
    res = runner.invoke(
        app,
        ["serve", "createuser", name + "x", "--role", "boss", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert res.exit_code == 2 and "--role 'boss'" in res.output
    res = runner.invoke(app, ["serve", "deploy", str(trained.model), "--name", "cli model"])
    assert res.exit_code == 0, res.output
    model = DeployedModel.objects.get(name="cli model")
    assert model.summary["arms"] == ["CBT", "SSRI"]
    assert (cfg.data_dir / "models" / model.file_name).is_file()
    res = runner.invoke(app, ["serve", "migrate"])
    assert res.exit_code == 0 and "SQLite" in res.output
    res = runner.invoke(app, ["serve", "deploy", str(cfg.data_dir / "nope.npz"), "--name", "x"])
    assert res.exit_code == 2 and "model file not found" in res.output


def test_first_run_offers_to_create_the_administrator(cfg):
    from brainmatch.cli.serve import first_admin

    answers = iter(["boss", "short", "boss", PASSWORD])
    said = []
    make_user("clinician")
    # users exist in this test database: nothing is asked
    assert first_admin(lambda *a, **k: next(answers), said.append) is None and not said
    from django.contrib.auth import get_user_model
    from django.db import transaction

    with transaction.atomic():
        saved = list(get_user_model().objects.all())
        get_user_model().objects.all().delete()
        user = first_admin(lambda *a, **k: next(answers), said.append)
        assert user.username == "boss" and user.bm_profile.role == "admin"
        assert any("password: This password is too short" in s for s in said)
        transaction.set_rollback(True)
    assert len(saved) == get_user_model().objects.count()


# --- sign-in, throttling, sessions, roles ------------------------------------------------


def test_login_throttling(cfg):
    from django.test import Client

    from brainmatch.web.models import AuditEvent, LoginAttempt

    user = make_user("clinician")
    c = Client()
    for _ in range(cfg.login_max_failures):
        r = c.post("/login/", {"username": user.username, "password": "wrong-password-123"})
        assert r.status_code == 401 and b"Wrong user name or password" in r.content
    r = c.post("/login/", {"username": user.username, "password": PASSWORD})
    assert r.status_code == 429 and b"Too many failed sign-ins" in r.content
    assert "_auth_user_id" not in c.session
    assert AuditEvent.objects.filter(action="login.throttled", username=user.username).exists()
    # once the window has passed the right password works again
    LoginAttempt.objects.filter(username=user.username).update(at=time_ago(cfg.login_window_s + 5))
    r = c.post("/login/", {"username": user.username, "password": PASSWORD})
    assert r.status_code == 302 and c.session["_auth_user_id"] == str(user.pk)


def time_ago(seconds):
    from django.utils import timezone

    return timezone.now() - timedelta(seconds=seconds)


def test_login_redirect_stays_on_site(cfg):
    from django.test import Client

    user = make_user("clinician")
    r = Client().post(
        "/login/?next=https://evil.example/",
        {"username": user.username, "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert r.status_code == 302 and r["Location"] == "/"


def test_session_expires_when_idle(cfg):
    from brainmatch.web.models import AuditEvent

    user = make_user("clinician")
    c = client_for(user)
    assert c.get("/patients/").status_code == 200
    session = c.session
    session["_bm_seen"] = time.time() - cfg.idle_timeout_s - 1
    session.save()
    r = c.get("/patients/")
    assert r.status_code == 302 and r["Location"] == "/login/?expired=1"
    assert c.get("/patients/").status_code == 302  # signed out
    assert AuditEvent.objects.filter(action="session.expired", user=user).exists()
    from django.conf import settings

    assert settings.SESSION_COOKIE_AGE == cfg.session_max_age_s == 12 * 3600
    assert settings.SESSION_COOKIE_HTTPONLY and settings.SESSION_EXPIRE_AT_BROWSER_CLOSE


def test_roles_see_only_their_pages(cfg):
    from django.test import Client

    clin, res, adm = make_user("clinician"), make_user("researcher"), make_user("admin")
    expect = {
        "/patients/": {clin: 200, res: 403, adm: 403},
        "/datasets/": {clin: 403, res: 200, adm: 403},
        "/manage/users/": {clin: 403, res: 403, adm: 200},
        "/manage/models/": {clin: 403, res: 403, adm: 200},
        "/manage/audit/": {clin: 403, res: 403, adm: 200},
        "/manage/studies/": {clin: 403, res: 403, adm: 200},
    }
    for url, by_user in expect.items():
        for user, status in by_user.items():
            assert client_for(user).get(url).status_code == status, (url, user.username)
        r = Client().get(url)
        assert r.status_code == 302 and r["Location"].startswith("/login/?next=")
    assert client_for(clin).get("/").url == "/patients/"
    assert client_for(res).get("/").url == "/datasets/"


def test_admin_creates_and_deactivates_users(cfg):
    from django.contrib.auth import get_user_model

    from brainmatch.web.models import AuditEvent

    adm = make_user("admin")
    c = client_for(adm)
    name = f"bob{os.getpid()}"
    r = c.post(
        "/manage/users/",
        {"username": name, "role": "researcher", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert r.status_code == 302
    bob = get_user_model().objects.get(username=name)
    assert bob.bm_profile.role == "researcher" and bob.check_password(PASSWORD)
    r = c.post(
        "/manage/users/",
        {"username": name + "2", "role": "clinician", "password1": "123", "password2": "123"},
    )
    assert r.status_code == 400 and b"too short" in r.content
    c.post(f"/manage/users/{bob.pk}/", {"role": "clinician"})  # active unticked
    bob.refresh_from_db()
    assert not bob.is_active and bob.bm_profile.role == "clinician"
    assert AuditEvent.objects.filter(action="user.update", target_id=str(bob.pk)).exists()


# --- the clinician flow ----------------------------------------------------------------


def test_clinician_flow(cfg, trained, deployed, caplog):
    from brainmatch.selection import recommend
    from brainmatch.web.models import AuditEvent, Job, Patient

    caplog.set_level(logging.DEBUG)
    clin = make_user("clinician")
    c = client_for(clin)
    r = upload(c, trained, deployed, i=1)
    assert r.status_code == 302, r.content[:2000]
    patient = Patient.objects.get(owner=clin)
    pid = trained.new["participant_id"].iloc[1]
    assert patient.pseudonym == pid
    page = c.get(r["Location"]).content.decode()
    assert 'http-equiv="refresh"' in page and "queued" in page  # never computed in the request
    assert run_jobs() >= 1
    job = Job.objects.get(patient=patient)
    assert job.status == Job.DONE, job.error
    page = c.get(r["Location"]).content.decode()
    assert 'http-equiv="refresh"' not in page
    # the same numbers as brainmatch recommend on the same row
    direct = recommend(trained.model, trained.new.iloc[[1]], None).patients[0]
    res = job.result["patient"]
    for arm in ("CBT", "SSRI"):
        assert res["predicted"][arm]["value"] == pytest.approx(direct["predicted"][arm]["value"])
        assert f"{direct['predicted'][arm]['value']:.2f}" in page
    assert res["recommended"] == direct["recommended"]
    # the same honesty caveats as the HTML report, and the headline follows them
    from django.utils.html import escape

    for caveat in direct["caveats"]:
        assert escape(caveat) in page
    headline = job.result["headline"]
    assert escape(headline["text"]) in page
    sel = deployed.summary
    if sel["permutation_p"] is None or sel["permutation_p"] >= 0.05:
        assert headline["pick"] is None and "No reliable preference" in page
    html_report = cfg.data_dir / "patients" / patient.storage / "output" / "report.html"
    dl = c.get(f"/patients/{patient.pk}/report.html")
    assert dl.status_code == 200 and "attachment" in dl["Content-Disposition"]
    assert pid not in dl["Content-Disposition"]
    assert b"".join(dl.streaming_content) == html_report.read_bytes()
    assert "sandbox" in dl["Content-Security-Policy"]
    assert str(cfg.data_dir) not in html_report.read_text()  # no server paths in the report
    assert "Depression: CBT vs SSRI" in html_report.read_text()
    if cfg.chromium:
        pdf = c.get(f"/patients/{patient.pk}/report.pdf")
        assert pdf.status_code == 200 and b"".join(pdf.streaming_content)[:5] == b"%PDF-"
    status = c.get(f"/patients/{patient.pk}/status.json").json()
    assert status["status"] == "done" and status["percent"] == 100
    # uploads are stored outside any web root under generated names
    folder = cfg.data_dir / "patients" / patient.storage
    names = {p.name for p in folder.rglob("*")}
    assert "row.csv" not in names and len(patient.storage) == 32
    assert (folder / "input" / "features.tsv").stat().st_mode & 0o077 == 0
    # no participant identifier and no uploaded value in the logs or the audit log
    value = f"{trained.new.iloc[1]['activity__ctx-rh-insula']}"
    assert pid not in caplog.text and value not in caplog.text
    for e in AuditEvent.objects.all():
        assert pid not in f"{e.username} {e.target_id} {e.detail}"
    actions = set(AuditEvent.objects.filter(user=clin).values_list("action", flat=True))
    assert {"patient.create", "patient.view", "patient.download_html"} <= actions
    # deleting the patient deletes its files and jobs
    r = c.post(f"/patients/{patient.pk}/delete/")
    assert r.status_code == 302
    assert not folder.exists() and not Patient.objects.filter(pk=patient.pk).exists()
    assert not Job.objects.filter(pk=job.pk).exists()
    assert AuditEvent.objects.filter(action="patient.delete", target_id=str(patient.pk)).exists()
    assert c.get(f"/patients/{patient.pk}/").status_code == 404


def test_headline_is_honest():
    from brainmatch.web.engine import headline

    patient = {"recommended": "CBT", "next_best": "SSRI", "advantage_interval": [0.5, 4.0]}
    good = {"validation": {"selection": {"permutation_p": 0.001, "policy_gain_ci": [0.4, 2.1]}}}
    assert headline(patient, good) == {
        "pick": "CBT", "text": "The model favours CBT over SSRI", "reasons": []
    }  # fmt: skip
    bad_p = {"validation": {"selection": {"permutation_p": 0.3, "policy_gain_ci": [0.4, 2.1]}}}
    h = headline(patient, bad_p)
    assert h["pick"] is None and h["text"] == "No reliable preference between CBT and SSRI"
    assert "did not beat chance (permutation p = 0.3)" in h["reasons"][0]
    ci0 = {"validation": {"selection": {"permutation_p": 0.01, "policy_gain_ci": [-0.2, 2.0]}}}
    assert headline(patient, ci0)["pick"] is None
    unsure = dict(patient, advantage_interval=[-0.3, 3.0])
    assert headline(unsure, good)["reasons"] == ["this patient's advantage interval includes 0"]
    # recommend's own judgement wins when present: an extrapolated or single-arm model's
    # patient never gets a pick the page would otherwise grant
    judged = dict(patient, reliable_preference=False, no_preference_reasons=["extrapolation"])
    assert headline(judged, good) == {
        "pick": None, "text": "No reliable preference between CBT and SSRI",
        "reasons": ["extrapolation"],
    }  # fmt: skip
    assert headline(dict(patient, reliable_preference=True), bad_p)["pick"] == "CBT"


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("name", "Jane", "column 'name' looks like a direct identifier"),
        ("date_of_birth", "1970-01-02", "column 'date_of_birth' looks like a direct identifier"),
        ("DOB", "02/01/1970", "column 'DOB' looks like a direct identifier"),
        ("visit", "2024-03-05", "column 'visit' holds a date (line 2)"),
        ("participant_id", "John Smith", "participant_id in line 2 is not a pseudonymised code"),
    ],
)
def test_identifying_uploads_are_refused(cfg, trained, deployed, column, value, message):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from brainmatch.web.models import Patient

    clin = make_user("clinician")
    row = trained.new.iloc[[0]].copy()
    row[column] = value
    before = (
        set((cfg.data_dir / "patients").glob("*"))
        if (cfg.data_dir / "patients").exists()
        else set()
    )
    r = client_for(clin).post(
        "/patients/new/",
        {
            "features": SimpleUploadedFile("x.csv", row.to_csv(index=False).encode()),
            "model": str(deployed.pk),
        },
    )
    assert r.status_code == 400
    assert message in r.content.decode().replace("&#x27;", "'")
    assert value not in r.content.decode()  # the refused value is not echoed
    assert not Patient.objects.filter(owner=clin).exists()
    after = (
        set((cfg.data_dir / "patients").glob("*"))
        if (cfg.data_dir / "patients").exists()
        else set()
    )
    assert after == before  # nothing kept


def test_sharing_within_a_study(cfg, trained, deployed):
    from brainmatch.web.models import AuditEvent, Patient, Study

    a, b, outsider = (make_user("clinician") for _ in range(3))
    study = Study.objects.create(name=f"trial-{os.getpid()}-{next(_names)}")
    study.members.set([a, b])
    r = upload(client_for(a), trained, deployed, i=2, study=str(study.pk))
    assert r.status_code == 302
    patient = Patient.objects.get(owner=a)
    assert client_for(b).get(f"/patients/{patient.pk}/").status_code == 200
    assert client_for(outsider).get(f"/patients/{patient.pk}/").status_code == 404
    assert AuditEvent.objects.filter(
        action="patient.denied", user=outsider, target_id=str(patient.pk)
    ).exists()
    # a study member can read but not delete
    r = client_for(b).post(f"/patients/{patient.pk}/delete/")
    assert Patient.objects.filter(pk=patient.pk).exists()


# --- jobs --------------------------------------------------------------------------------


def test_interrupted_jobs_resume_or_fail_with_reason(cfg):
    from django.utils import timezone

    from brainmatch.web.jobs import MAX_ATTEMPTS, recover_interrupted, worker_id
    from brainmatch.web.models import Job

    host = worker_id().rsplit(":", 1)[0]
    dead = Job.objects.create(
        kind="train", status=Job.RUNNING, attempts=1, worker=f"{host}:999999999",
        heartbeat_at=timezone.now(),
    )  # fmt: skip
    stale = Job.objects.create(
        kind="train", status=Job.RUNNING, attempts=MAX_ATTEMPTS, worker="elsewhere:1",
        heartbeat_at=time_ago(600),
    )  # fmt: skip
    alive = Job.objects.create(
        kind="train", status=Job.RUNNING, attempts=1, worker=worker_id(),
        heartbeat_at=timezone.now(),
    )  # fmt: skip
    recover_interrupted()
    dead.refresh_from_db(), stale.refresh_from_db(), alive.refresh_from_db()
    assert dead.status == Job.QUEUED and "resumed after the server restarted" in dead.message
    assert stale.status == Job.FAILED and f"interrupted {MAX_ATTEMPTS} times" in stale.error
    assert alive.status == Job.RUNNING
    Job.objects.filter(pk__in=[dead.pk, alive.pk]).delete()


def test_failed_job_shows_its_reason(cfg, trained, deployed):
    """A patient row without the model's features fails in the worker with one clear line."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from brainmatch.web.models import Job, Patient

    clin = make_user("clinician")
    row = trained.new.iloc[[3]].drop(columns=["activity__ctx-rh-insula"])
    r = client_for(clin).post(
        "/patients/new/",
        {"features": SimpleUploadedFile("x.tsv", row.to_csv(sep="\t", index=False).encode()),
         "model": str(deployed.pk)},
    )  # fmt: skip
    assert r.status_code == 302
    run_jobs()
    job = Job.objects.get(patient=Patient.objects.get(owner=clin))
    assert job.status == Job.FAILED
    assert "1 of the model's 13 features are not in the table: activity__ctx-rh-insula" in job.error
    assert str(cfg.data_dir) not in job.error  # no server paths shown
    page = client_for(clin).get(r["Location"]).content.decode()
    assert "could not be computed" in page and "activity__ctx-rh-insula" in page


def test_retention_deletes_old_patients(cfg, trained, deployed):
    from brainmatch.web.jobs import purge_expired
    from brainmatch.web.models import AuditEvent, Patient

    clin = make_user("clinician")
    upload(client_for(clin), trained, deployed, i=4)
    patient = Patient.objects.get(owner=clin)
    folder = cfg.data_dir / "patients" / patient.storage
    assert folder.is_dir()
    Patient.objects.filter(pk=patient.pk).update(created_at=time_ago(3 * 86400))
    old = cfg.retention_days
    try:
        cfg.retention_days = 0
        assert purge_expired() == 0
        cfg.retention_days = 2
        assert purge_expired() >= 1
    finally:
        cfg.retention_days = old
    assert not folder.exists() and not Patient.objects.filter(pk=patient.pk).exists()
    assert AuditEvent.objects.filter(action="patient.retention_delete").exists()
    # housekeeping drops expired sessions and old sign-in attempts
    from django.contrib.sessions.models import Session

    from brainmatch.web.jobs import housekeeping
    from brainmatch.web.models import LoginAttempt

    old_attempt = LoginAttempt.objects.create(username="x")
    LoginAttempt.objects.filter(pk=old_attempt.pk).update(at=time_ago(2 * 86400))
    Session.objects.create(session_key="k" * 32, session_data="", expire_date=time_ago(1))
    housekeeping()
    assert not LoginAttempt.objects.filter(pk=old_attempt.pk).exists()
    assert not Session.objects.filter(session_key="k" * 32).exists()


# --- the researcher flow -----------------------------------------------------------------


def test_researcher_trains_with_progress_and_admin_deploys(cfg, trained):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from brainmatch.web.models import Dataset, DeployedModel, Job

    res = make_user("researcher")
    c = client_for(res)
    r = c.post(
        "/datasets/new/",
        {
            "name": "Trial <b>A</b>",
            "features": SimpleUploadedFile("f.csv", trained.features.to_csv(index=False).encode()),
            "outcomes": SimpleUploadedFile(
                "o.tsv", trained.outcomes.to_csv(sep="\t", index=False).encode()
            ),
        },
    )
    assert r.status_code == 302, r.content[:3000]
    ds = Dataset.objects.get(owner=res)
    assert ds.n_rows == len(trained.outcomes)
    page = c.get(r["Location"]).content.decode()
    assert "Trial &lt;b&gt;A&lt;/b&gt;" in page and "<b>A</b>" not in page
    r = c.post(
        r["Location"],
        {
            "treatment_column": "arm", "outcome_column": "hamd_week8",
            "baseline_column": "hamd_baseline", "site_column": "site", "covariates": ["age", "sex"],
            "model": "interaction", "n_repeats": 1, "n_permutations": 19, "seed": 3,
        },
    )  # fmt: skip
    assert r.status_code == 302
    job = Job.objects.get(dataset=ds)
    page = c.get(r["Location"]).content.decode()
    assert "<progress" in page and 'http-equiv="refresh"' in page
    run_jobs()
    job.refresh_from_db()
    assert job.status == Job.DONE, job.error
    assert job.progress_total == 5 and job.progress_done == 5  # 5 folds x 1 repeat
    metrics = json.loads((cfg.data_dir / "trainings" / job.storage / "metrics.json").read_text())
    assert job.result["selection"]["policy_gain"] == pytest.approx(
        metrics["selection"]["policy_gain"]
    )
    page = c.get(r["Location"]).content.decode()
    assert f"{metrics['selection']['policy_gain']:.3f}" in page
    assert c.get(f"/trainings/{job.pk}/report.html").status_code == 200
    # another researcher cannot see it
    assert client_for(make_user("researcher")).get(f"/trainings/{job.pk}/").status_code == 404
    # an admin deploys it; clinicians can then pick it
    adm = client_for(make_user("admin"))
    r = adm.post(f"/manage/trainings/{job.pk}/deploy/", {"name": "from the web"})
    assert r.status_code == 302
    model = DeployedModel.objects.get(name="from the web")
    assert model.summary["n"] == metrics["n"]
    page = client_for(make_user("clinician")).get("/patients/").content.decode()
    assert "from the web" in page


def test_health_and_headers(cfg):
    from django.test import Client

    r = Client().get("/healthz")
    assert r.status_code == 200 and r.content == b"ok\n"
    r = Client().get("/login/")
    assert "script-src" not in r["Content-Security-Policy"]  # no scripts allowed at all
    assert "default-src 'none'" in r["Content-Security-Policy"]
    assert r["X-Frame-Options"] == "DENY" and r["X-Content-Type-Options"] == "nosniff"
    assert r["Cache-Control"].startswith("no-store") or "no-cache" in r["Cache-Control"]
    assert Path(__file__).exists()


@pytest.mark.slow
def test_zipped_fmriprep_subject_is_extracted_with_the_models_options(cfg, small_trial, tmp_path):
    """A clinician uploads a zipped fMRIPrep (+ FreeSurfer) subject: the worker extracts its
    features with the model's atlas and options and recommends, exactly as
    ``brainmatch recommend`` does on the extracted row."""
    import shutil
    import zipfile

    import numpy as np
    import pandas as pd
    from django.core.files.uploadedfile import SimpleUploadedFile

    from brainmatch.features import extract_dataset
    from brainmatch.selection import recommend, train
    from brainmatch.web.models import Job, Patient
    from brainmatch.web.services import deploy_model

    deriv = small_trial / "derivatives"
    ext = extract_dataset(small_trial, tmp_path / "ext", derivatives=deriv / "fmriprep",
                          atlas="affect", freesurfer=deriv / "freesurfer")  # fmt: skip
    real = pd.read_parquet(ext.features_path)
    cols = [c for c in real.columns if c not in ("participant_id", "session")]
    rng = np.random.default_rng(1)
    n = 60
    train_f = pd.DataFrame(
        real[cols].mean().to_numpy()
        + rng.normal(size=(n, len(cols))) * (real[cols].std().fillna(0).to_numpy() + 1e-3),
        columns=cols,
    )
    train_f.insert(0, "participant_id", [f"sub-t{i:03d}" for i in range(n)])
    train_f.to_parquet(tmp_path / "features.parquet")
    shutil.copy(ext.metadata_path, tmp_path / "features.json")
    arms = np.tile(["CBT", "SSRI"], n // 2)
    o = pd.DataFrame({"participant_id": train_f["participant_id"], "arm": arms,
                      "y": rng.normal(15, 5, n)})  # fmt: skip
    res = train(tmp_path / "features.parquet", o, treatment_column="arm", outcome_column="y",
                out_dir=tmp_path / "model", n_repeats=1, n_permutations=20, n_boot=50,
                learning_curve=False)  # fmt: skip
    model = deploy_model(res.model_path, "from images")
    assert model.summary["from_images"]
    zpath = tmp_path / "subject.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for base, prefix in ((deriv / "fmriprep", "fmriprep"), (deriv / "freesurfer", "fs")):
            for f in sorted((base / "sub-001").rglob("*")):
                if f.is_file():
                    zf.write(f, f"{prefix}/{f.relative_to(base)}")
    clin = make_user("clinician")
    c = client_for(clin)
    r = c.post(
        "/patients/new/",
        {
            "features": SimpleUploadedFile("subject.zip", zpath.read_bytes()),
            "clinical": SimpleUploadedFile("c.csv", b"participant_id,age\nsub-001,41\n"),
            "model": str(model.pk),
        },
    )
    assert r.status_code == 302, r.content[-3000:]
    patient = Patient.objects.get(owner=clin)
    assert patient.kind == "zip" and patient.pseudonym == "sub-001"
    run_jobs()
    job = Job.objects.get(patient=patient)
    assert job.status == Job.DONE, job.error
    direct = recommend(res.model_path, real[real["participant_id"] == "sub-001"], None)
    direct = direct.patients[0]
    for arm in ("CBT", "SSRI"):
        assert job.result["patient"]["predicted"][arm]["value"] == pytest.approx(
            direct["predicted"][arm]["value"], rel=1e-6
        )
    page = c.get(r["Location"]).content.decode()
    assert "Treatment recommendation for sub-001" in page
    folder = cfg.data_dir / "patients" / patient.storage
    assert not (folder / "input" / "subject.zip").exists()  # only the laid-out copy is kept
    assert (folder / "input" / "bids" / "derivatives" / "fmriprep" / "sub-001").is_dir()
    c.post(f"/patients/{patient.pk}/delete/")
    assert not folder.exists()


def test_a_crashing_job_fails_without_leaking_values_to_the_log(cfg, monkeypatch, caplog):
    from brainmatch.web import jobs
    from brainmatch.web.models import Job

    def boom(job, beat):
        beat.progress(1, 3, "working")
        secret = "-".join(["sub", "SECRET", "042"])  # not literally in the source line below
        raise KeyError(f"{secret} value {17 + 0.25}")

    monkeypatch.setitem(jobs.RUNNERS, "boom", boom)
    caplog.set_level(logging.DEBUG)
    job = jobs.enqueue("boom", None, {})
    Job.objects.filter(pk=job.pk).update(status=Job.RUNNING, worker="test:1")
    job.refresh_from_db()
    jobs.run_job(job)
    job.refresh_from_db()
    assert job.status == Job.FAILED
    assert job.error.startswith("internal error while running the job")
    assert "crashed with KeyError" in caplog.text and "sub-SECRET" not in caplog.text
    assert "17.25" not in caplog.text


def test_a_stopped_worker_gives_its_job_back(cfg, monkeypatch):
    """SIGTERM of a worker (``brainmatch serve`` stopping) queues its running job again."""
    from brainmatch.web import jobs
    from brainmatch.web.models import Job

    def stopped(job, beat):
        raise SystemExit(143)

    monkeypatch.setitem(jobs.RUNNERS, "stopped", stopped)
    job = jobs.enqueue("stopped", None, {})
    Job.objects.filter(pk=job.pk).update(status=Job.RUNNING, attempts=1, worker="test:2")
    job.refresh_from_db()
    with pytest.raises(SystemExit):
        jobs.run_job(job)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.worker) == (Job.QUEUED, 0, "")
    assert "resumes on restart" in job.message
    job.delete()


def test_deleting_a_patient_while_its_job_runs_leaves_no_files(cfg, trained, deployed, monkeypatch):
    from brainmatch.web import engine, jobs
    from brainmatch.web.models import Job, Patient

    clin = make_user("clinician")
    assert upload(client_for(clin), trained, deployed, i=5).status_code == 302
    patient = Patient.objects.get(owner=clin)
    folder = jobs.patient_dir(patient)
    original = engine.recommend_patient

    def delete_first(*args, **kwargs):
        jobs.delete_patient(Patient.objects.get(pk=patient.pk))  # the clinician deletes it
        return original(*args, **kwargs)  # ... while the worker writes its results

    monkeypatch.setattr(engine, "recommend_patient", delete_first)
    run_jobs()
    assert not folder.exists()
    assert not Patient.objects.filter(pk=patient.pk).exists()
    assert not Job.objects.filter(patient_id=patient.pk).exists()


# --- normative reference and the patient's profile ----------------------------------------


@pytest.fixture(scope="module")
def normative(cfg, tmp_path_factory):
    """A small normative model fitted on simulated controls, and patients to profile."""
    import numpy as np

    from brainmatch.normative import fit_normative
    from brainmatch.simulate.controls import draw_cohort

    # a strong planted effect (4 SD) so that the planted circuits are called at |z| >= 1
    cohort = draw_cohort(160, 4, n_sites=2, seed=11, connectivity=False, circuit_effect=4.0)
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    out = tmp_path_factory.mktemp("norm")
    fit_normative(
        tab[tab.group == "control"].drop(columns=["group"]),
        covariate_columns=("age",),
        site_column="site",
        seed=1,
        out_dir=out,
    )
    patients = tab[tab.group == "patient"].reset_index(drop=True)
    assert np.isfinite(patients["age"]).all()
    patients = patients.merge(cohort.truth, on="participant_id")
    return out / "normative_model.npz", patients


def profile_row(trained, normative, i):
    """One held-out trial patient's row (selection features, clinical columns) with a
    simulated patient's normative features (circuits planted to deviate)."""
    import pandas as pd

    _, patients = normative
    row = trained.new.iloc[[i]].reset_index(drop=True)
    norm = patients.iloc[[i]].reset_index(drop=True)
    extra = norm.drop(columns=[c for c in norm.columns if c in row.columns] + ["group", "planted"])
    return pd.concat([row, extra], axis=1)


def test_normative_profile_flow(cfg, trained, deployed, normative):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils.html import escape
    from typer.testing import CliRunner

    from brainmatch.cli.main import app
    from brainmatch.normative.profile import build_profile
    from brainmatch.web.models import AuditEvent, DeployedModel, Job, Patient

    path, _ = normative
    name = "Norm <b>controls</b>"
    res = CliRunner().invoke(app, ["serve", "deploy", str(path), "--name", name])
    assert res.exit_code == 0, res.output
    norm = DeployedModel.objects.get(name=name)
    assert norm.kind == "normative" and norm.summary["n_controls"] == 160
    assert (cfg.data_dir / "models" / norm.file_name).is_file()
    clin = make_user("clinician")
    c = client_for(clin)
    form_page = c.get("/patients/").content.decode()
    assert escape(name) in form_page and name not in form_page  # escaped in the choice
    # a normative model cannot be picked as the treatment-selection model, nor vice versa
    row = profile_row(trained, normative, 0)
    csv = row.to_csv(index=False).encode()
    bad = c.post(
        "/patients/new/",
        {"features": SimpleUploadedFile("r.csv", csv, "text/csv"), "model": str(norm.pk)},
    )
    assert bad.status_code == 400 and not Patient.objects.filter(owner=clin).exists()
    r = c.post(
        "/patients/new/",
        {
            "features": SimpleUploadedFile("r.csv", csv, "text/csv"),
            "model": str(deployed.pk),
            "normative": str(norm.pk),
        },
    )
    assert r.status_code == 302, r.content[:2000]
    patient = Patient.objects.get(owner=clin)
    assert run_jobs() >= 1
    job = Job.objects.get(patient=patient)
    assert job.status == Job.DONE, job.error
    assert job.params == {"normative": str(norm.pk)}
    got = job.result["profile"]
    # the same profile as build_profile on the same row, with the same selection model
    direct = build_profile(path, row, selection_model=trained.model)
    called = direct.circuits[direct.circuits["call"] != ""]
    want = [(r.circuit, r.score, r.call) for r in called.itertuples()]
    assert [(x["circuit"], x["score"], x["call"]) for x in got["calls"]] == want
    planted = set(normative[1]["planted"].iloc[0].split(";"))
    assert planted and planted <= {x["circuit"] for x in got["calls"]}  # ground truth
    for x, (_, y) in zip(got["calls"], called.iterrows(), strict=True):
        assert x["mean_z"] == pytest.approx(y["mean_z"])
    assert got["n_hypotheses"] == len(direct.hypotheses)
    assert [(h["circuit"], h["modality"]) for h in got["hypotheses"]] == [
        (h["circuit"], h["modality"]) for h in direct.hypotheses
    ]
    assert got["selection"]["recommended"] == direct.selection["recommended"]
    assert got["selection"]["recommended"] == job.result["patient"]["recommended"]
    page = c.get(f"/patients/{patient.pk}/").content.decode()
    assert f'id="n-calls">{len(want)}<' in page
    assert f'id="n-hypotheses">{len(direct.hypotheses)}<' in page
    for x in got["calls"]:
        assert escape(x["circuit_label"]) in page
    assert escape(name) in page and name not in page
    assert "not validated predictions" in page  # hypotheses are labelled as such
    # the downloadable profile: the written report, attachment, sandboxed, audited
    report = cfg.data_dir / "patients" / patient.storage / "output" / "profile" / "report.html"
    dl = c.get(f"/patients/{patient.pk}/profile.html")
    assert dl.status_code == 200 and "attachment" in dl["Content-Disposition"]
    assert row["participant_id"].iloc[0] not in dl["Content-Disposition"]
    assert "sandbox" in dl["Content-Security-Policy"]
    body = b"".join(dl.streaming_content)
    assert body == report.read_bytes()
    html = body.decode()
    assert str(cfg.data_dir) not in html  # server paths replaced by the models' names
    assert name not in html
    # the selection model's validated prediction has its own section, named by its name
    assert "Validated prediction (treatment-selection model)" in html
    assert "Depression: CBT vs SSRI" in html
    assert AuditEvent.objects.filter(
        action="patient.download_profile_html", user=clin, target_id=str(patient.pk)
    ).exists()
    pdf = c.get(f"/patients/{patient.pk}/profile.pdf")
    if cfg.chromium:
        assert pdf.status_code == 200 and b"".join(pdf.streaming_content)[:5] == b"%PDF-"
    else:
        assert pdf.status_code == 404 and "Profile PDF: not available" in page
    assert c.get(f"/patients/{patient.pk}/profile.exe").status_code == 404
    # another clinician: 404 on the page and on the profile, each attempt audited
    other = client_for(make_user("clinician"))
    urls = [f"/patients/{patient.pk}/{x}" for x in ("", "profile.html", "profile.pdf")]
    for url in urls:
        n = AuditEvent.objects.filter(outcome="denied", target_id=str(patient.pk)).count()
        assert other.get(url).status_code == 404
        assert (
            AuditEvent.objects.filter(outcome="denied", target_id=str(patient.pk)).count() == n + 1
        )
    # without a normative reference there is no profile to download
    r = upload(c, trained, deployed, i=2)
    run_jobs()
    plain = Patient.objects.filter(owner=clin).exclude(pk=patient.pk).get()
    assert "profile" not in Job.objects.get(patient=plain).result
    assert c.get(f"/patients/{plain.pk}/profile.html").status_code == 404
    # a patient without the norm's features: the recommendation stands, the page says why
    r = upload(c, trained, deployed, i=3, normative=str(norm.pk))
    assert r.status_code == 302
    run_jobs()
    done = {patient.pk, plain.pk}
    lacking = Patient.objects.filter(owner=clin).exclude(pk__in=done).get()
    job = Job.objects.get(patient=lacking)
    assert job.status == Job.DONE and "profile" not in job.result, job.error
    page = c.get(f"/patients/{lacking.pk}/").content.decode()
    assert "The profile could not be built" in page and escape(job.result["profile_error"]) in page
    assert job.result["patient"]["recommended"] in page
    assert str(cfg.data_dir) not in job.result["profile_error"]


def _resave(src, dest, change):
    """Rewrite a model file's arrays (keeping its recorded hash and signature)."""
    import io

    import numpy as np

    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    dest.write_bytes(buf.getvalue())
    return dest


def test_forged_or_foreign_normative_models_are_refused_at_deploy(
    cfg, normative, tmp_path, monkeypatch
):
    import numpy as np
    from django.core.files.uploadedfile import SimpleUploadedFile
    from typer.testing import CliRunner

    from brainmatch.cli.main import app
    from brainmatch.normative import fit_normative
    from brainmatch.simulate.controls import draw_cohort
    from brainmatch.web.models import AuditEvent, DeployedModel

    path, _ = normative

    def scale_first_float(arrays):
        key = next(k for k, v in arrays.items() if k != "__meta__" and v.dtype.kind == "f")
        arrays[key] = arrays[key] * np.float64(-50)

    forged = _resave(path, tmp_path / "forged.npz", scale_first_float)
    # signed with another site's key
    cohort = draw_cohort(40, 0, n_sites=1, seed=2, connectivity=False)
    tab = cohort.features.merge(cohort.participants, on="participant_id")
    monkeypatch.setenv("BRAINMATCH_MODEL_KEY", "another-site-key-" + "x" * 32)
    fit_normative(tab.drop(columns=["group"]), covariate_columns=("age",), holdout=0,
                  out_dir=tmp_path / "foreign")  # fmt: skip
    monkeypatch.delenv("BRAINMATCH_MODEL_KEY")
    foreign = tmp_path / "foreign" / "normative_model.npz"
    adm = make_user("admin")
    n_models = DeployedModel.objects.count()
    n_files = len(list((cfg.data_dir / "models").glob("*")))
    for bad, message in (
        (forged, "modified after it was written"),
        (foreign, "signed with another key"),
    ):
        r = client_for(adm).post(
            "/manage/models/",
            {"name": "forged norm", "file": SimpleUploadedFile("n.npz", bad.read_bytes())},
        )
        assert r.status_code == 400 and message in r.content.decode(), r.content[:3000]
        res = CliRunner().invoke(app, ["serve", "deploy", str(bad), "--name", "forged norm"])
        assert res.exit_code == 2 and message in res.output, res.output
    assert DeployedModel.objects.count() == n_models
    assert len(list((cfg.data_dir / "models").glob("*"))) == n_files
    assert AuditEvent.objects.filter(action="model.refused", user=adm).count() == 2
    # the admin page deploys a genuine one and lists it as normative
    r = client_for(adm).post(
        "/manage/models/",
        {"name": "norm via page", "file": SimpleUploadedFile("n.npz", path.read_bytes())},
    )
    assert r.status_code == 302
    model = DeployedModel.objects.get(name="norm via page")
    assert model.kind == "normative"
    page = client_for(adm).get("/manage/models/").content.decode()
    assert "160 controls" in page
    from brainmatch.web import engine

    assert str(model.pk) in {m["id"] for m in engine.normative_references()}
