"""The same service on PostgreSQL: a real server from Debian's packages (initdb / pg_ctl
in a temporary folder, as the ``postgres`` user when run as root), ``DATABASE_URL``
pointing at it, and the clinician flow through ``brainmatch serve``."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from _webtest import LiveServer, csrf_from, patient_csv, trained_model, wait_for

pytest.importorskip("django", reason="the web extra (Django) is not installed")
psycopg = pytest.importorskip("psycopg", reason="psycopg (the web extra) is not installed")
pytestmark = pytest.mark.slow


def _pg_bin(name):
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if isinstance(found, list):
        found = found[-1] if found else None
    return found


@pytest.fixture(scope="module")
def postgres():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are absent: apt-get install "
                    "postgresql (.ci/run does it)")  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="bm-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pwfile = root / "pw"
    pwfile.write_text("s3cret-pg-password\n")
    if run_as:
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)

    def run(*cmd):
        return subprocess.run([*run_as, *cmd], capture_output=True, text=True, timeout=120)

    r = run(initdb, "-D", str(root / "data"), "-U", "bm", f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8")  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    r = run(pg_ctl, "-D", str(root / "data"), "-o", opts, "-l", str(root / "log"), "-w", "start")
    assert r.returncode == 0, r.stderr + (root / "log").read_text()
    try:
        url = f"postgres://bm:s3cret-pg-password@127.0.0.1:{port}/postgres"
        with psycopg.connect(url.replace("postgres://", "postgresql://"), autocommit=True) as con:
            con.execute("CREATE DATABASE brainmatch")
        yield f"postgres://bm:s3cret-pg-password@127.0.0.1:{port}/brainmatch"
    finally:
        run(pg_ctl, "-D", str(root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_clinician_flow_on_postgresql(postgres, tmp_path):
    trained = trained_model()
    server = LiveServer(tmp_path / "data", env={"DATABASE_URL": postgres})
    server.provision([("clin", "clinician")], [(trained.model, "pg model")])
    with server:
        s = server.session("clin")
        page = s.get(server.url + "/patients/", timeout=30).text
        model_id = page.split('<option value="')[2].split('"')[0]
        r = s.post(
            server.url + "/patients/new/",
            data={"csrfmiddlewaretoken": csrf_from(page), "model": model_id},
            files={"features": ("row.csv", patient_csv(trained, 2))},
            timeout=60,
        )
        assert r.status_code == 200, r.text[:1000]
        done = wait_for(
            lambda: 'id="recommendation"' in (t := s.get(r.url, timeout=30).text) and t,
            180,
            "the recommendation",
        )
        assert "Treatment recommendation for " + trained.new["participant_id"].iloc[2] in done
    # everything lives in PostgreSQL; no SQLite file was created
    assert not (tmp_path / "data" / "db.sqlite3").exists()
    with psycopg.connect(postgres.replace("postgres://", "postgresql://")) as con:
        status = con.execute("SELECT status FROM brainmatch_web_job").fetchall()
        events = con.execute(
            "SELECT count(*) FROM brainmatch_web_auditevent WHERE action = 'patient.view'"
        ).fetchone()[0]
    assert status == [("done",)] and events >= 1
