"""``brainmatch serve`` as a real server: start-up, limits enforced by the WSGI server, and
background jobs that survive kill -9 of the server and its workers."""

from __future__ import annotations

import re
import signal
import sqlite3
from urllib.parse import urlsplit

import pytest

from _webtest import PASSWORD, LiveServer, csrf_from, trained_model, wait_for

pytest.importorskip("django", reason="the web extra (Django) is not installed")
pytest.importorskip("waitress", reason="the web extra (waitress) is not installed")
pytestmark = pytest.mark.slow


def _job(db, kind):
    with sqlite3.connect(db) as con:
        return con.execute(
            "SELECT status, attempts, message, error, progress_done FROM brainmatch_web_job "
            "WHERE kind = ? ORDER BY created_at DESC LIMIT 1",
            (kind,),
        ).fetchone()


def test_serve_survives_kill_and_resumes_the_job(tmp_path):
    trained = trained_model()
    limit = {"BRAINMATCH_MAX_UPLOAD_MB": "5"}
    server = LiveServer(tmp_path / "data", env=limit)
    for user, role in (("res", "researcher"), ("clin", "clinician")):
        r = server.cli(
            "createuser", user, "--role", role, "--password-stdin", stdin=PASSWORD + "\n"
        )
        assert r.returncode == 0, r.stderr
    r = server.cli("createuser", "weak", "--role", "clinician", "--password-stdin", stdin="abc\n")
    assert r.returncode == 2 and "error:" in r.stderr and "too short" in r.stderr
    assert "Traceback" not in r.stderr
    with server:
        import requests

        assert requests.get(server.url + "/healthz", timeout=10).text == "ok\n"
        # the WSGI server refuses a chunked body above the limit (no Content-Length to check)
        s = server.session("clin")

        def body():
            for _ in range(12):
                yield b"x" * (1 << 20)

        try:
            r = s.post(server.url + "/patients/new/", data=body(), timeout=60)
            assert r.status_code in (400, 403, 413)
        except requests.ConnectionError:
            pass  # the server may close the connection instead
        rs = server.session("res")
        page = rs.get(server.url + "/datasets/", timeout=30)
        r = rs.post(
            server.url + "/datasets/new/",
            data={"name": "trial", "csrfmiddlewaretoken": csrf_from(page.text)},
            files={
                "features": ("f.csv", trained.features.to_csv(index=False)),
                "outcomes": ("o.csv", trained.outcomes.to_csv(index=False)),
            },
            timeout=60,
        )
        assert r.status_code == 200 and "Train and validate" in r.text, r.text[:1000]
        r = rs.post(
            r.url,
            data={
                "csrfmiddlewaretoken": csrf_from(r.text),
                "treatment_column": "arm",
                "outcome_column": "hamd_week8",
                "baseline_column": "hamd_baseline",
                "site_column": "site",
                "model": "interaction",
                "n_repeats": 2,
                "n_permutations": 19,  # p is shown (>= 1/20); the job runs ~1 s
                "seed": 0,
            },
            timeout=60,
        )
        assert r.status_code == 200 and "<progress" in r.text
        training_path = urlsplit(r.url).path
        db = tmp_path / "data" / "db.sqlite3"
        wait_for(lambda: (_job(db, "train") or ("",))[0] == "running", 60, "the job to start",
                 interval=0.1)  # fmt: skip
        server.stop(signal.SIGKILL)  # the server and its worker die mid-job
    status, attempts, *_ = _job(db, "train")
    assert (status, attempts) == ("running", 1)  # as the killed worker left it
    with LiveServer(tmp_path / "data", env=limit) as server:
        wait_for(lambda: _job(db, "train")[0] == "done", 300, "the resumed job to finish")
        status, attempts, _, error, _ = _job(db, "train")
        assert attempts == 2 and not error
        page = server.session("res").get(server.url + training_path, timeout=30).text
        assert "Status: <b>done</b>" in page and "policy gain over the best single arm" in page
        m = re.search(
            r"permutation p \(no treatment-by-feature interaction\)</td><td class=\"num\">([\d.]+)",
            page,
        )
        assert m and 0 < float(m.group(1)) <= 1
