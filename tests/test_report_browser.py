"""The report in a real browser: headless Chromium opens it from the file system.

Skips when Chromium is not installed, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import render_site
from report_fixture import CLAIMS, frames, parse, write_task
from services import require_service

pytestmark = pytest.mark.service


def _chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def browser_site(tmp_path_factory) -> tuple[str, Path]:
    binary = _chromium()
    if binary is None:
        require_service("chromium", "no /usr/bin/chromium or chromium on PATH; install it (apt-get install chromium)")
    base = tmp_path_factory.mktemp("report_browser")
    render_site(base / "site", tasks={"toyrep": write_task(base / "tasks" / "toyrep")}, claims=CLAIMS,
                scale="small", generated_at="2025-06-01T12:00:00+00:00", **frames("small"))
    return binary, base


def test_index_renders_in_chromium(browser_site):
    binary, base = browser_site
    index = (base / "site" / "index.html").resolve()
    got = _run(binary, base / "profile-dom", "--dump-dom", index.as_uri())
    assert got.returncode == 0, got.stderr[-2000:]
    doc = parse(got.stdout)
    rows = doc.find_all("tr", cls="claim")
    assert [r.find("code", cls="claim-id").text() for r in rows] == \
        ["strong_beats_weak", "twin_differs", "u_shape", "not_run_yet", "posthoc"]
    assert [r.attrs["data-verdict"] for r in rows] == ["reproduced", "inconclusive", "refuted", "not evaluated",
                                                       "undecidable"]
    # The inline sorting script ran in the page (it makes every sortable header focusable).
    heads = doc.find("table", cls="claims").find("thead").find_all("th")
    assert heads and all(th.attrs.get("tabindex") == "0" for th in heads)


def test_task_page_screenshot(browser_site):
    binary, base = browser_site
    shot = base / "task.png"
    page = (base / "site" / "task-toyrep.html").resolve()
    got = _run(binary, base / "profile-shot", "--hide-scrollbars", "--window-size=1280,2000",
               f"--screenshot={shot}", page.as_uri())
    assert got.returncode == 0, got.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
