"""End to end in a real browser: Playwright drives Debian's Chromium (headless) against
``brainmatch serve``: sign in, upload a simulated patient, wait for the background job,
check the recommendation page and download the report; a screenshot is written for the
docs (``BRAINMATCH_DOCS_SCREENSHOTS=1`` also copies it to ``docs/images/``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from _webtest import PASSWORD, ROOT, LiveServer, trained_model

pytest.importorskip("django", reason="the web extra (Django) is not installed")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the Python playwright package is not installed"
)
CHROMIUM = os.environ.get("BRAINMATCH_CHROMIUM") or shutil.which("chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does it)",
    ),
]
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def test_clinician_in_a_real_browser(tmp_path):
    trained = trained_model()
    row = trained.new.iloc[[0]]
    pid = row["participant_id"].iloc[0]
    (tmp_path / "patient.csv").write_text(row.to_csv(index=False))
    server = LiveServer(tmp_path / "data")
    server.provision(
        [("dr-lee", "clinician")], [(trained.model, "Depression: CBT vs SSRI (trial A)")]
    )
    shots = tmp_path / "shots"
    shots.mkdir()
    with server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
            page.goto(server.url + "/")
            assert "/login/" in page.url
            page.fill("#id_username", "dr-lee")
            page.fill("#id_password", "wrong password here")
            page.click("button[type=submit]")
            assert "Wrong user name or password" in page.inner_text("main")
            page.fill("#id_username", "dr-lee")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("text=Upload a patient")
            page.set_input_files("#id_features", str(tmp_path / "patient.csv"))
            page.select_option("#id_model", label="Depression: CBT vs SSRI (trial A)")
            page.screenshot(path=str(shots / "web-upload.png"))
            page.click("text=Upload and recommend")
            # the page refreshes itself (no JavaScript) until the worker has finished
            page.wait_for_selector("#recommendation", timeout=180_000)
            main = page.inner_text("main")
            assert f"Treatment recommendation for {pid}" in main
            assert "What drove this recommendation" in main and "How good is this model?" in main
            assert ("The model favours" in main) or ("No reliable preference" in main)
            assert "prediction interval" in main and "CBT" in main and "SSRI" in main
            assert page.locator("svg circle").count() == 2
            page.screenshot(path=str(shots / "web-recommendation.png"), full_page=True)
            with page.expect_download() as info:
                page.click("text=Report (HTML)")
            report = Path(info.value.path()).read_text()
            assert f"Treatment recommendation for {pid}" in report
            # the list shows the patient as done; sign out ends the session
            page.goto(server.url + "/patients/")
            assert "done" in page.inner_text("table")
            page.click("text=Sign out")
            page.goto(server.url + "/patients/")
            assert "/login/" in page.url
        finally:
            browser.close()
    assert (shots / "web-recommendation.png").stat().st_size > 10_000
    if os.environ.get("BRAINMATCH_DOCS_SCREENSHOTS") == "1":
        dest = ROOT / "docs" / "images"
        dest.mkdir(exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copyfile(png, dest / png.name)
