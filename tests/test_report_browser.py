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
    binary = _require_chromium()
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

SHOTS = os.environ.get("HARNESS_SCREENSHOTS")  # a folder to keep the screenshots in (unset: the test's tmp folder)


def _require_chromium() -> str:
    binary = _chromium()
    if binary is None:
        require_service("chromium", "no /usr/bin/chromium or chromium on PATH; install it (apt-get install chromium)")
    return binary


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE(" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def full_site(tmp_path_factory):
    """A site from a real registry (two commits: history, run pages) plus the fixture task's pages."""
    binary = _require_chromium()
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
    shots = Path(SHOTS) if SHOTS else base / "screenshots"  # Path("") would be the working directory
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


# -- issue 15: the runs table is drawn from data, one page at a time --------------------------------

N_BIG = 450  # three pages of 200
EVIL_VARIANT = "</script><b>x"


def _big_frames():
    """450 runs (toyrep and a task without a page), values whose text order is not their numeric
    order, a few without a value, one failure, dirty runs, one variant that is markup."""
    import pandas as pd

    fr = frames("small")
    base = fr["runs"].iloc[0].to_dict()
    runs, metrics = [], []
    for i in range(N_BIG - 1):
        task = "toyrep" if i % 9 else "other"
        variant = EVIL_VARIANT if i == 123 else ("strong", "twin", "weak")[i % 3]
        rid = f"r{i:04d}".ljust(16, "0")
        status = "diverged" if i % 50 == 7 else "ok"
        runs.append({**base, "run_id": rid, "task": task, "method": variant.split("[")[0], "variant": variant,
                     "benchmark": ("easy", "hard")[(i // 3) % 2], "seed": i // 6, "status": status,
                     "wall_s": 30.0 + (i * 7919) % 1000, "peak_rss_mb": 100.0 + i, "git_dirty": i % 10 == 0,
                     "record_json": "{}"})
        value = float("nan") if status == "diverged" else ((i * 37) % 450) / 10 + (0.5 if i % 4 else 0.0)
        metrics.append({"run_id": rid, "task": task, "method": variant, "variant": variant,
                        "benchmark": runs[-1]["benchmark"], "seed": i // 6, "scale": "small", "status": status,
                        "name": "accuracy", "value": value, "higher_is_better": True, "git_commit": base["git_commit"]})
    return {"runs": pd.DataFrame(runs), "metrics": pd.DataFrame(metrics), "failures": fr["failures"], "curves": {}}


@pytest.fixture(scope="module")
def big_runs(tmp_path_factory):
    binary = _require_chromium()
    from harness.report.render import read_runs_data

    base = tmp_path_factory.mktemp("report_browser_runs")
    fr = _big_frames()
    render_site(base / "site", tasks={"toyrep": write_task(base / "tasks" / "toyrep")}, claims=[], scale="small",
                generated_at="2025-06-01T12:00:00+00:00", run_pages=False, **fr)
    page = base / "site" / "runs.html"
    rows = read_runs_data(page.read_text())
    values = fr["metrics"].set_index("run_id")["value"].to_dict()
    for r in rows:
        r["number"] = values.get(r["run_id"], float("nan"))
    return binary, base, page, rows


def _dom(binary: str, base: Path, url: str, profile: str = "profile-runs"):
    got = _run(binary, base / profile, "--enable-logging=stderr", "--v=0", "--dump-dom", url)
    assert got.returncode == 0, got.stderr[-2000:]
    assert _console(got.stderr) == [], _console(got.stderr)
    return parse(got.stdout)


def _with_script(page: Path, name: str, script: str) -> Path:
    """A copy of the page (same folder: same links) that runs ``script`` once it has loaded, as a user's clicks would."""
    html = page.read_text()
    cut = html.rindex("</body>")
    copy = page.with_name(name)
    copy.write_text(html[:cut] + f'<script>window.addEventListener("load", function () {{ {script} }});</script>\n'
                    + html[cut:])
    return copy


def _shown(doc) -> list:
    return doc.find("table", cls="runs").find("tbody").find_all("tr", cls="run")


def _run_ids(doc) -> list[str]:
    return [tr.find_all("td")[10].text() for tr in _shown(doc)]


def _by_value(rows: list[dict], descending: bool = False) -> list[dict]:
    """The order the old table's data-value sort gave: numbers numerically, runs without one
    after them (before them descending), equal keys in their current order."""
    import math

    def key(r):
        return (0, r["number"]) if math.isfinite(r["number"]) else (1, 0.0)
    return sorted(rows, key=key, reverse=descending)


def test_runs_page_draws_the_first_page_sorted_as_asked(big_runs):
    binary, base, page, rows = big_runs
    doc = _dom(binary, base, page.resolve().as_uri())
    assert _run_ids(doc) == [r["run_id"] for r in rows[:200]]  # unsorted: the page's own order
    assert doc.find("span", id="runs-shown").text() == str(N_BIG)
    heads = doc.find("table", cls="runs").find("thead").find_all("th")
    assert all(th.attrs.get("tabindex") == "0" for th in heads) and not any("aria-sort" in th.attrs for th in heads)
    for query, want, sort in (("?sort=value", _by_value(rows), "ascending"),
                              ("?sort=value&order=desc", _by_value(rows, descending=True), "descending")):
        doc = _dom(binary, base, page.resolve().as_uri() + query)
        assert _run_ids(doc) == [r["run_id"] for r in want[:200]], query
        th = doc.find("th", data_key="value")
        assert th.attrs["aria-sort"] == sort and th.attrs["tabindex"] == "0"
    # Numerically, not as text: "10.5" after "9.5" ascending, whatever the text order says.
    texts = [tr.find_all("td")[6].text() for tr in _shown(_dom(binary, base, page.resolve().as_uri() + "?sort=value"))]
    assert [float(t) for t in texts] == sorted(float(t) for t in texts) and texts != sorted(texts)


def test_clicking_a_header_sorts_numerically_and_stably(big_runs):
    binary, base, page, rows = big_runs
    th = 'document.querySelector(\'th[data-key="value"]\')'
    once = _dom(binary, base, _with_script(page, "click1.html", f"{th}.click();").resolve().as_uri())
    assert _run_ids(once) == [r["run_id"] for r in _by_value(rows)[:200]]
    # Enter on the focused header sorts too (the headers are keyboard-operable), the other way now.
    key = f'{th}.click(); {th}.dispatchEvent(new KeyboardEvent("keydown", {{key: "Enter"}}));'
    twice = _dom(binary, base, _with_script(page, "click2.html", key).resolve().as_uri())
    assert _run_ids(twice) == [r["run_id"] for r in _by_value(rows, descending=True)[:200]]
    assert twice.find("th", data_key="value").attrs["aria-sort"] == "descending"
    # wall time: numbers in seconds shown as "1 min 02 s" and "9 min 40 s": sorted on the seconds
    wall = _dom(binary, base, page.resolve().as_uri() + "?sort=wall")
    seconds = {r["run_id"]: r["wall_text"] for r in rows}
    got = _run_ids(wall)
    want = sorted(rows, key=lambda r: r["wall"])  # a number column's code is its rank
    assert got == [r["run_id"] for r in want[:200]] and [seconds[g] for g in got[:2]] == ["30.0 s", "32.0 s"]


def test_text_and_seed_columns_sort_as_the_table_did(big_runs):
    """The order of the old DOM sort: a text that is a number sorts numerically, before texts;
    texts lower-cased; equal keys keep their order (here: the page's initial order)."""
    binary, base, page, rows = big_runs

    def key(text):
        try:
            return (0, float(text), "")
        except ValueError:
            return (1, 0.0, text.lower())
    def commit_cell(r):  # "0123456789" (a number), or "0123456789 dirty" (a text)
        return r["commit_text"] + (" dirty" if r["dirty"] else "")
    for query, text in (("?sort=seed", lambda r: r["seed_text"]), ("?sort=run_id", lambda r: r["run_id"]),
                        ("?sort=variant", lambda r: r["variant"]), ("?sort=commit", commit_cell)):
        want = sorted(rows, key=lambda r, text=text: key(text(r)))
        assert _run_ids(_dom(binary, base, page.resolve().as_uri() + query)) == [r["run_id"] for r in want[:200]], query
    seeds = [r["seed_text"] for r in sorted(rows, key=lambda r: key(r["seed_text"]))]
    assert seeds.index("10") > seeds.index("9")  # numerically, not "10" < "9"


def test_page_controls_reach_the_last_run(big_runs):
    binary, base, page, rows = big_runs
    last = 'document.querySelector(\'nav.pager button[data-go="last"]\').click();'
    doc = _dom(binary, base, _with_script(page, "last.html", last).resolve().as_uri())
    assert _run_ids(doc) == [r["run_id"] for r in rows[400:]] and _run_ids(doc)[-1] == rows[-1]["run_id"]
    nav = doc.find("nav", cls="pager", data_where="top")
    assert nav.find("span", cls="page-status").text() == f"of 3 (rows 401–{N_BIG} of {N_BIG})"
    assert "disabled" in nav.find("button", data_go="next").attrs and "disabled" not in nav.find(
        "button", data_go="previous").attrs
    # previous from there, and the page number in the address
    prev = _with_script(page, "prev.html", last + ' document.querySelector(\'nav.pager[data-where="bottom"] '
                                                  'button[data-go="previous"]\').click();')
    assert _run_ids(_dom(binary, base, prev.resolve().as_uri())) == [r["run_id"] for r in rows[200:400]]
    assert _run_ids(_dom(binary, base, page.resolve().as_uri() + "?page=2")) == [r["run_id"] for r in rows[200:400]]
    # 50 rows a page: nine pages
    per = _with_script(page, "per.html", 'var s = document.querySelector(\'select[data-go="per-page"]\'); '
                                         's.value = "50"; s.dispatchEvent(new Event("change", {bubbles: true}));')
    doc = _dom(binary, base, per.resolve().as_uri())
    assert _run_ids(doc) == [r["run_id"] for r in rows[:50]]
    assert doc.find("span", cls="page-status").text() == f"of 9 (rows 1–50 of {N_BIG})"


def test_filters_count_every_matching_run_across_pages(big_runs):
    binary, base, page, rows = big_runs
    for query in ("?task=toyrep", "?task=toyrep&status=ok&benchmark=hard", "?status=diverged", "?method=twin",
                  "?status=failed", "?commit=0123456789&task=other"):
        want = [r for r in rows if all(
            (r["commit_text"] if k == "commit" else r[k]) == v for k, v in (kv.split("=") for kv in query[1:].split("&")))]
        doc = _dom(binary, base, page.resolve().as_uri() + query)
        assert doc.find("span", id="runs-shown").text() == str(len(want)), query
        assert _run_ids(doc) == [r["run_id"] for r in want[:200]], query
    failed = _shown(_dom(binary, base, page.resolve().as_uri() + "?status=failed"))[0]
    badge = failed.find_all("td")[4]
    assert badge.find("a").attrs["href"] == "#failure-1" and badge.find("span", cls="badge").text() == "failed"


def test_links_badges_and_titles_of_drawn_rows(big_runs):
    binary, base, page, rows = big_runs
    shown = _shown(_dom(binary, base, page.resolve().as_uri()))
    for tr, r in zip(shown, rows):
        cells = tr.find_all("td")
        links = [a.attrs["href"] for a in cells[0].find_all("a")]
        assert links == (["task-toyrep.html"] if r["task"] == "toyrep" else []), r["run_id"]
        assert cells[4].find("span", cls="badge").classes == {"badge", "status", r["status"]}
        commit = cells[9]
        assert commit.attrs["title"] == r["commit"] and commit.text().startswith(r["commit_text"])
        dirty = commit.find_all("span", cls="badge")
        assert [(d.text(), d.attrs["title"]) for d in dirty] == ([("dirty", "uncommitted changes")] if r["dirty"] else [])
        assert not cells[10].find_all("a")  # rendered without run pages: nothing to link
        assert tr.attrs["data-status"] == r["status"] and tr.attrs["data-commit"] == r["commit_text"]


def test_markup_in_a_run_field_shows_as_text(big_runs):
    binary, base, page, _ = big_runs
    assert EVIL_VARIANT not in page.read_text()
    doc = _dom(binary, base, page.resolve().as_uri() + "?sort=variant")
    first = _shown(doc)[0]
    assert first.find("code").text() == EVIL_VARIANT  # "<" sorts before the letters
    assert not doc.find("table", cls="runs").find_all("b")
    assert doc.find("script", id="runs-data") is not None
