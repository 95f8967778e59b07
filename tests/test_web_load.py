"""Load test: 100 concurrent requests (page views and uploads) to ``brainmatch serve`` on
127.0.0.1; zero errors required; p50 / p95 latency printed (bounded: exactly 100
requests, each with a 120 s timeout)."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from _webtest import LiveServer, csrf_from, patient_csv, trained_model

pytest.importorskip("django", reason="the web extra (Django) is not installed")
pytest.importorskip("waitress", reason="the web extra (waitress) is not installed")
pytestmark = pytest.mark.slow

N_REQUESTS = 100
N_SESSIONS = 2


def test_100_concurrent_requests_without_errors(tmp_path, capsys, record_property):
    trained = trained_model()
    server = LiveServer(tmp_path / "data", workers=0, threads=8)
    users = [(f"clin{i}", "clinician") for i in range(N_SESSIONS)]
    (model_id,) = server.provision(users, [(trained.model, "load model")])
    with server:
        sessions = [server.session(f"clin{i}") for i in range(N_SESSIONS)]
        tokens = [csrf_from(s.get(server.url + "/patients/", timeout=30).text) for s in sessions]
        row = patient_csv(trained, 0)
        barrier = threading.Barrier(N_REQUESTS, timeout=120)

        def one(i):
            s, token = sessions[i % N_SESSIONS], tokens[i % N_SESSIONS]
            kind = ("upload", "list", "home", "health")[i % 4]
            barrier.wait()
            t0 = time.perf_counter()
            if kind == "upload":
                r = s.post(
                    server.url + "/patients/new/",
                    data={"csrfmiddlewaretoken": token, "model": model_id},
                    files={"features": ("row.csv", row)},
                    timeout=120,
                    allow_redirects=False,
                )
                ok = r.status_code == 302 and "/patients/" in r.headers.get("Location", "")
            elif kind == "list":
                r = s.get(server.url + "/patients/", timeout=120)
                ok = r.status_code == 200 and "Your patients" in r.text
            elif kind == "home":
                r = s.get(server.url + "/", timeout=120)  # redirects to the patient list
                ok = r.status_code == 200 and "Upload a patient" in r.text
            else:
                r = s.get(server.url + "/healthz", timeout=120)
                ok = r.status_code == 200 and r.text == "ok\n"
            return kind, ok, r.status_code, time.perf_counter() - t0

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=N_REQUESTS) as pool:
            results = list(pool.map(one, range(N_REQUESTS)))
        wall = time.perf_counter() - t0
        errors = [(k, code) for k, ok, code, _ in results if not ok]
        lat = sorted(t for *_, t in results)
        p50 = statistics.median(lat)
        p95 = lat[int(0.95 * len(lat)) - 1]
        uploads = [t for k, _, _, t in results if k == "upload"]
        line = (
            f"load test: {N_REQUESTS} concurrent requests (25 uploads, 75 page views) "
            f"to brainmatch serve (8 threads, SQLite) on 127.0.0.1: {len(errors)} errors; "
            f"latency p50 {1000 * p50:.0f} ms, p95 {1000 * p95:.0f} ms, max "
            f"{1000 * lat[-1]:.0f} ms (uploads p50 {1000 * statistics.median(uploads):.0f} "
            f"ms); wall {wall:.1f} s (measured on a shared, loaded 2-core machine)"
        )
        record_property("terminal_summary", line)  # printed at the end, also under xdist
        with capsys.disabled():
            print("\n" + line)
        assert not errors, errors
        # every upload became a patient with a queued job
        page = sessions[0].get(server.url + "/patients/", timeout=30).text
        assert page.count("status-queued") >= N_REQUESTS // 4 // N_SESSIONS
