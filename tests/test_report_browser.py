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


# -- issue 16: every page type, the runs filter, no console error, 1366 px, screenshots ------------

SHOTS = Path(os.environ.get("HARNESS_SCREENSHOTS") or "")


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE(" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def full_site(tmp_path_factory):
    """A site from a real registry (two commits: history, run pages) plus the fixture task's pages."""
    binary = _chromium()
    if binary is None:
        require_service("chromium", "no /usr/bin/chromium or chromium on PATH; install it (apt-get install chromium)")
    from factories import make_record, make_task, write_record

    from harness.registry import Registry
    from harness.report.render import render_from_registry

    base = tmp_path_factory.mktemp("report_browser_full")
    results = base / "results"
    for seed in range(3):
        for commit, acc, fin in (("a" * 40, 0.9 + seed / 100, seed), ("b" * 40, 0.8 + seed / 100, 10 + seed)):
            for variant in ("base", "better"):
                rec = make_record(seed=seed, variant=variant, commit=commit, metrics={"acc": acc, "loss": 0.5},
                                  higher_is_better={"loss": False}, finished=fin)
                write_record(results, rec, history=commit == "a" * 40)
    write_record(results, make_record(seed=3, variant="worse", status="failed", commit="b" * 40, finished=30))
    with Registry(results_dir=results) as reg:
        reg.ingest_dir()
        site = base / "site"
        site.mkdir()
        (site / "snakemake-report.html").write_text("<!DOCTYPE html><title>snakemake</title><p>report</p>")
        render_from_registry(reg, site, "small", None, generated_at="2025-06-01T12:00:00+00:00",
                             tasks={"toy": make_task(base, [])})
        run_id = reg.runs()["run_id"].iloc[0]
    render_site(base / "fixture", tasks={"toyrep": write_task(base / "tasks" / "toyrep")}, claims=CLAIMS,
                scale="small", generated_at="2025-06-01T12:00:00+00:00", **frames("small"))
    pages = {"index": base / "fixture" / "index.html", "task": base / "fixture" / "task-toyrep.html",
             "runs": site / "runs.html", "history": site / "history-toy.html", "run": site / f"run-{run_id}.html",
             "task-registry": site / "task-toy.html"}
    return binary, base, pages


def test_the_console_check_sees_a_page_error(full_site, tmp_path):
    """The check below is real: a page that throws shows up on Chromium's console log."""
    binary, _base, _ = full_site
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><title>x</title><script>throw new Error('deliberate-16')</script>")
    got = _run(binary, tmp_path / "profile", "--enable-logging=stderr", "--v=0", "--dump-dom", bad.as_uri())
    assert any("deliberate-16" in line for line in _console(got.stderr)), got.stderr[-2000:]


def test_every_page_type_loads_without_console_errors_and_fits_1366(full_site):
    binary, base, pages = full_site
    shots = SHOTS if str(SHOTS) else base / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for kind, page in pages.items():
        got = _run(binary, base / f"profile-{kind}", "--enable-logging=stderr", "--v=0", "--window-size=1366,900",
                   "--dump-dom", page.resolve().as_uri())
        assert got.returncode == 0, got.stderr[-2000:]
        assert _console(got.stderr) == [], (kind, _console(got.stderr))
        doc = parse(got.stdout)
        html = doc.find("html")
        if kind == "index":  # the index fits a 1366-px screen: no horizontal scrolling
            assert html.attrs.get("data-overflow-x") == "false", kind
        else:
            assert html.attrs.get("data-overflow-x") in ("true", "false"), kind  # the page's script ran
        shot = shots / f"{kind}.png"
        got = _run(binary, base / f"profile-shot-{kind}", "--hide-scrollbars", "--window-size=1366,1200",
                   f"--screenshot={shot}", page.resolve().as_uri())
        assert got.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", kind
    print("screenshots:", *sorted(str(p) for p in shots.glob("*.png")))


def test_runs_page_filters_in_the_browser(full_site):
    binary, base, pages = full_site
    url = pages["runs"].resolve().as_uri()
    all_rows = parse(_run(binary, base / "profile-f0", "--dump-dom", url).stdout).find_all("tr", cls="run")
    assert len(all_rows) == 7 and not any("hidden" in r.attrs for r in all_rows)
    for query, want in (("?status=failed", 1), ("?method=better", 3), ("?method=base&benchmark=b1", 3),
                        ("?task=toy&commit=" + "b" * 10, 7), ("?method=better&status=failed", 0)):
        got = _run(binary, base / "profile-f1", "--enable-logging=stderr", "--v=0", "--dump-dom", url + query)
        assert _console(got.stderr) == []
        doc = parse(got.stdout)
        shown = [r for r in doc.find_all("tr", cls="run") if "hidden" not in r.attrs]
        assert len(shown) == want, query
        assert doc.find("span", id="runs-shown").text() == str(want)
        for key, value in (kv.split("=") for kv in query[1:].split("&")):
            assert all(r.attrs[f"data-{key}"] == value for r in shown)
