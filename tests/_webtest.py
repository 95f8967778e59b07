"""Helpers of the web-service tests (``tests/test_web*.py``).

- :func:`django_ready`: configures Django once per test process on a private temporary
  data folder (SQLite), migrates, and uses a fast password hasher (the real one is
  tested in ``test_web.py`` and by the real-server tests);
- :func:`trained_model`: a small treatment-selection model trained once per process on a
  simulated trial (3 sites, strong effect), with held-out patients to upload;
- :class:`LiveServer`: ``brainmatch serve`` in a subprocess (port chosen by the OS), with
  a ``requests`` session helper that signs in and submits forms with their CSRF token.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery-staple-42"
CLIN = ["participant_id", "site", "age", "sex", "hamd_baseline"]
_STATE: dict[str, Any] = {}


def django_ready() -> Any:
    """Set Django up once for this process; returns ``settings.BRAINMATCH``."""
    pytest.importorskip("django", reason="the web extra (Django) is not installed")
    if "cfg" not in _STATE:
        data = Path(tempfile.mkdtemp(prefix="bm-webtest-"))
        os.environ["BRAINMATCH_WEB_DATA"] = str(data)
        os.environ["DJANGO_SETTINGS_MODULE"] = "brainmatch.web.settings"
        os.environ.pop("DATABASE_URL", None)
        from django.test.utils import override_settings, setup_test_environment

        from brainmatch.web.server import migrate, setup

        cfg = setup()
        setup_test_environment()
        migrate()
        override_settings(
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
            ALLOWED_HOSTS=["testserver", "127.0.0.1", "localhost"],
        ).enable()
        _STATE["cfg"] = cfg
    return _STATE["cfg"]


@dataclass
class Trained:
    """A trained model and patients it has never seen."""

    model: Path
    new: pd.DataFrame  # features + clinical columns of held-out patients
    features: pd.DataFrame
    outcomes: pd.DataFrame


def trained_model() -> Trained:
    """Train (once per process) a small model on a simulated 3-site trial."""
    if "trained" not in _STATE:
        from brainmatch.selection import train
        from brainmatch.simulate import TrialSpec, draw_trial
        from brainmatch.validation.synthetic import measured_features, outcome_table

        out = Path(tempfile.mkdtemp(prefix="bm-webmodel-"))
        trial = draw_trial(TrialSpec(n_subjects=160, n_sites=2, effect_size=1.2, seed=5))
        f = measured_features(trial, n_noise=10, reliability=0.9, seed=5)
        o = outcome_table(trial)
        assert list(f["participant_id"]) == list(o["participant_id"])
        held = np.arange(len(o)) % 8 == 0
        res = train(
            f[~held],
            o[~held],
            treatment_column="arm",
            outcome_column="hamd_week8",
            baseline_column="hamd_baseline",
            site_column="site",
            covariates=("age", "sex"),
            out_dir=out,
            n_repeats=1,
            n_permutations=99,
            n_boot=100,
            learning_curve=False,
        )
        new = f.merge(o[CLIN])[held].reset_index(drop=True)
        _STATE["trained"] = Trained(res.model_path, new, f, o)
    return _STATE["trained"]


def patient_csv(trained: Trained, i: int = 0) -> bytes:
    """One held-out patient's feature row with clinical columns, as CSV bytes."""
    return trained.new.iloc[[i]].to_csv(index=False).encode()


def csrf_from(html: str) -> str:
    """The CSRF token of the first form in a page."""
    m = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


class LiveServer:
    """``brainmatch serve`` in a subprocess on 127.0.0.1 with its own data folder."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 1,
        threads: int = 8,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "BRAINMATCH_WEB_DATA": str(data_dir),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.workers = workers
        self.threads = threads
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``brainmatch serve ARGS --data-dir DATA`` with the server's environment."""
        return subprocess.run(
            [sys.executable, "-m", "brainmatch", "serve", *args, "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
        )

    def provision(
        self, users: list[tuple[str, str]], models: list[tuple[Path, str]] = ()
    ) -> list[str]:
        """Create users and deploy models in one process (faster than one CLI call each,
        which imports the whole CLI; the CLI itself is tested in test_web.py and
        test_web_server.py); returns the deployed models' ids."""
        script = (
            "import sys, json\n"
            "from pathlib import Path\n"
            "from brainmatch.web.server import setup, migrate\n"
            "setup(); migrate()\n"
            "from brainmatch.web.services import create_user, deploy_model\n"
            "spec = json.loads(sys.argv[1])\n"
            "for name, role in spec['users']: create_user(name, role, spec['password'])\n"
            "print(json.dumps([str(deploy_model(Path(p), n).pk) for p, n in spec['models']]))\n"
        )
        spec = {
            "users": users,
            "models": [[str(p), n] for p, n in models],
            "password": PASSWORD,
        }
        r = subprocess.run(
            [sys.executable, "-c", script, json.dumps(spec)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        return list(json.loads(r.stdout.strip().splitlines()[-1]))

    def start(self, timeout: float = 120) -> LiveServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "brainmatch",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                lines.append(line)
                m = re.search(r"serving on (http://[\d.]+:\d+)/", line)
                if m:
                    self.url = m.group(1)
                    break
            if self.proc.poll() is not None:
                break
        if not self.url:
            self.stop()
            raise RuntimeError("brainmatch serve did not start:\n" + "".join(lines))
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.proc.pid, signal.SIGKILL)  # server and its workers
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def session(self, username: str, password: str = PASSWORD) -> Any:
        """A signed-in ``requests`` session."""
        import requests

        s = requests.Session()
        page = s.get(self.url + "/login/", timeout=30)
        r = s.post(
            self.url + "/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": csrf_from(page.text),
            },
            headers={"Referer": self.url + "/login/"},
            timeout=30,
        )
        assert r.status_code == 200 and "Sign out" in r.text, r.text[:500]
        return s

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``predicate()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
