"""The static report: content of the pages rendered from synthetic frames.

Numbers are hand-made in ``report_fixture`` so each expectation (means, CIs, best in
bold, ties, published numbers) is known independently of the rendering code.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pytest

from harness.plugins import BrokenPlugin
from harness.report import render_site
from harness.report.render import read_runs_data
from harness.stats import t_interval
from report_fixture import ACCURACY, CLAIMS, COMMIT, EVIL, LOSS, empty_task, frames, parse, write_task

GENERATED_AT = "2025-06-01T12:00:00+00:00"
BROKEN = BrokenPlugin("busted", "tasks.busted:task", "ImportError: No module named 'busted_dep'")


def _render(out: Path, root: Path, scale: str = "small", generated_at: str = GENERATED_AT) -> dict[str, str]:
    tasks = {"toyrep": write_task(root / "toyrep"), "lonely": empty_task(root / "lonely")}
    paths = render_site(out, tasks=tasks, claims=CLAIMS, scale=scale, broken_plugins=(BROKEN,),
                        generated_at=generated_at, **frames(scale))
    return {p.name: p.read_text(encoding="utf-8") for p in paths}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("report")
    return _render(base / "site", base / "tasks")


@pytest.fixture(scope="module")
def paper_site(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("report_paper")
    return _render(base / "site", base / "tasks", scale="paper")


def _table(html: str, benchmark: str):
    return parse(html).find("table", cls="results", data_benchmark=benchmark)


def _cell(html: str, benchmark: str, variant: str, metric: str):
    row = _table(html, benchmark).find("tr", data_variant=variant)
    return next(td for td in row.find_all("td", cls="cell") if td.attrs.get("data-metric") == metric)


def test_pages_written(site):
    from report_fixture import frames

    run_ids = set(frames("small")["runs"]["run_id"])
    assert set(site) == {"index.html", "runs.html", "task-toyrep.html", "task-lonely.html", "history-toyrep.html",
                         "history-lonely.html"} | {f"run-{r}.html" for r in run_ids}


def test_every_claim_on_index_with_its_verdict(site):
    doc = parse(site["index.html"])
    rows = {r.find("code", cls="claim-id").text(): r for r in doc.find_all("tr", cls="claim")}
    expected = {c["id"]: c["verdict"] for c in CLAIMS}
    expected["not_run_yet"] = "not evaluated"  # declared in task.yaml, absent from the claims file
    assert set(rows) == set(expected)
    for cid, verdict in expected.items():
        badge = rows[cid].find("span", cls="verdict")
        assert badge.text() == verdict
        assert verdict.replace(" ", "-") in badge.classes
    # Effect with its t interval, Holm (raw) p of both tests, seeds, MDE with seeds needed, and reasons.
    cells = [td.text().strip() for td in rows["strong_beats_weak"].find_all("td")]
    assert "+0.207[+0.203, +0.212]" in cells and "0.012(0.0039)" in cells and "1.000(1.000)" in cells
    assert "8" in cells and "0.008103" in cells   # MDE 0.00810, then the seeds needed: 3
    assert "CI straddles the minimum effect" in rows["twin_differs"].text()
    refuted = [td.text().strip() for td in rows["u_shape"].find_all("td")]
    assert "0.012(0.0020)" in refuted and rows["u_shape"].find("div", cls="fragile").text() == "fragile"
    assert not rows["strong_beats_weak"].find_all("div", cls="fragile")
    counts = {d.find("div", cls="label").text(): d.find("div", cls="n").text() for d in doc.find_all("div", cls="stat")}
    assert counts["reproduced"] == "1" and counts["refuted"] == "1" and counts["inconclusive"] == "1"
    assert counts["undecidable"] == "1" and counts["not evaluated"] == "1"
    # The exploratory claim is listed apart, after the pre-registered ones, and the rule is spelled out.
    assert "exploratory" in rows["posthoc"].classes
    assert doc.find("h3", id="exploratory") is not None
    assert "Holm-adjusted together over both directions" in doc.find("p", id="verdict-rule").text()


def test_task_page_claims_and_citation(site):
    doc = parse(site["task-toyrep.html"])
    ids = [c.text() for c in doc.find_all("code", cls="claim-id")]
    assert ids == ["strong_beats_weak", "twin_differs", "u_shape", "not_run_yet", "posthoc"]  # task.yaml order
    citation = doc.find("div", cls="citation")
    assert "Ada Lovelace, Alan Turing" in citation.text() and "2023" in citation.text()
    assert citation.find("a", cls="arxiv").attrs["href"] == "https://arxiv.org/abs/2301.00001"
    assert citation.find("a", cls="code").attrs["href"] == "https://github.com/example/toy"


def test_table_means_and_cis_match_hand_computed(site):
    html = site["task-toyrep.html"]
    for variant in ("strong", "twin", "weak"):
        values = ACCURACY[variant]
        cell = _cell(html, "easy", variant, "accuracy")
        assert float(cell.attrs["data-value"]) == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert cell.find(cls="mean").text() == f"{statistics.fmean(values):.4f}"
        lo, hi = t_interval(values, level=0.95)   # the seed-level Student-t interval
        assert cell.find("span", cls="ci").text() == f"[{lo:.4f}, {hi:.4f}]"
        assert lo < statistics.fmean(values) < hi
    # Diverged seeds are counted, not averaged: the mean is over the 6 finite seeds.
    ok = [v for v in ACCURACY["unstable"] if math.isfinite(v)]
    cell = _cell(html, "easy", "unstable", "accuracy")
    assert float(cell.attrs["data-value"]) == pytest.approx(statistics.fmean(ok))
    row = _table(html, "easy").find("tr", data_variant="unstable")
    seeds_td = row.find_all("td")[1]
    assert seeds_td.attrs["data-value"] == "6" and "diverged (2)" in seeds_td.text()
    loss = _cell(html, "easy", "unstable", "loss")  # finite values of diverged runs are not averaged either
    assert float(loss.attrs["data-value"]) == pytest.approx(statistics.fmean(LOSS["unstable"][:6]))
    # Lower-is-better metric: hand mean of the loss.
    cell = _cell(html, "easy", "weak", "loss")
    assert cell.find(cls="mean").text() == f"{statistics.fmean(LOSS['weak']):.4f}"


def test_best_is_bold_respecting_direction(site):
    html = site["task-toyrep.html"]
    bold = {m: [v for v in ACCURACY if _cell(html, "easy", v, m).find_all("strong")] for m in ("accuracy", "loss")}
    assert bold["accuracy"] == ["strong"]  # highest accuracy
    assert bold["loss"] == ["twin"]  # lowest loss (weak has the highest: direction respected)
    assert "best" in _cell(html, "easy", "strong", "accuracy").classes
    assert "best" not in _cell(html, "easy", "weak", "loss").classes


def test_tie_marked_only_where_indistinguishable(site):
    html = site["task-toyrep.html"]
    tied = {v: bool(_cell(html, "easy", v, "accuracy").find_all("span", cls="tie")) for v in ACCURACY}
    # twin differs from strong by +-0.004 noise; weak is 0.2 lower and unstable ~0.12 lower on every seed.
    assert tied == {"strong": False, "twin": True, "weak": False, "unstable": False}
    legend = parse(html).find("section", id="bench-easy").find("div", cls="legend")
    assert "statistically tied with the best" in legend.text()


def test_failure_listed_with_message_on_runs_and_index(site):
    for page in ("runs.html", "index.html"):
        doc = parse(site[page])
        rows = doc.find_all("tr", cls="failure")
        assert len(rows) == 1
        row = rows[0]
        assert "RuntimeError" in row.text()
        assert row.find("div", cls="message").text() == "ran out of memory " + EVIL
    runs = parse(site["runs.html"])
    tb = runs.find("tr", cls="failure").find("details").find("pre", cls="traceback")
    assert tb.text().endswith("RuntimeError: ran out of memory")
    # The failed run is also a row of the sortable table of every run (its data), linked to its traceback.
    failed = [r for r in read_runs_data(site["runs.html"]) if r["status"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["failure"] == "failure-1" and runs.find("tr", id="failure-1") is not None
    index = parse(site["index.html"])
    assert index.find(id="count-failed").text() == "1"
    assert index.find(id="count-ok").text() == str(63 - 4)  # 64 slots, 1 failed, 4 diverged
    assert index.find(id="count-diverged").text() == "4"


def test_runs_page_lists_every_run(site):
    """Every run is in the page's data, with what its row shows; the rows themselves are drawn by
    the page's script (test_report_browser), so no <tr> per run is in the HTML."""
    doc = parse(site["runs.html"])
    table = doc.find("table", cls="runs")
    assert "sortable" in table.classes and table.attrs["data-rows-from"] == "runs-data"
    assert not table.find_all("tr", cls="run")
    assert [th.attrs["data-key"] for th in table.find("thead").find_all("th")] == [
        "task", "benchmark", "variant", "seed", "status", "metric", "value", "wall", "rss", "commit", "run_id"]
    rows = read_runs_data(site["runs.html"])
    assert len(rows) == 64
    first = rows[0]
    assert [first[k] for k in ("task", "benchmark", "variant", "seed", "status")] == ["toyrep", "easy", "strong", 0, "ok"]
    assert (first["metric"], first["value_text"], first["wall_text"], first["rss_text"]) == (
        "accuracy", "0.8100", "1 min 02 s", "512 MB")
    assert first["commit"] == COMMIT and first["commit_text"] == COMMIT[:10] and first["dirty"] == 0
    assert first["run_page"] == 1 and first["failure"] is None
    # Without JavaScript the page still says how many runs there are, and why the table is empty.
    assert doc.find("p", cls="lead").text().startswith("64 runs at scale small: 59 ok, 4 diverged,")
    assert "64 runs is drawn by JavaScript" in doc.find("noscript").text()


def test_runs_data_round_trips_every_run(site):
    """The embedded data against the frames it came from (not against the rendering code)."""
    fr = frames("small")
    runs = fr["runs"].set_index("run_id")
    acc = fr["metrics"][fr["metrics"]["name"] == "accuracy"].set_index("run_id")["value"]
    rows = read_runs_data(site["runs.html"])
    failed_id = fr["failures"]["run_id"].iloc[0]
    assert sorted(r["run_id"] for r in rows) == sorted([*runs.index, failed_id])
    for r in rows:
        if r["run_id"] == failed_id:
            assert (r["status"], r["variant"], r["benchmark"], r["seed"], r["value_text"], r["failure"]) == (
                "failed", "weak", "hard", 3, "—", "failure-1")
            continue
        want = runs.loc[r["run_id"]]
        for key, col in (("task", "task"), ("benchmark", "benchmark"), ("variant", "variant"), ("method", "method"),
                         ("seed", "seed"), ("status", "status"), ("commit", "git_commit")):
            assert r[key] == want[col], (r["run_id"], key)
        assert r["wall_text"] == f"1 min {round(want['wall_s'] - 60):02d} s" and r["rss_text"] == f"{want['peak_rss_mb']:.0f} MB"
        value = acc[r["run_id"]]
        assert r["value_text"] == (f"{value:.4f}" if math.isfinite(value) else "—"), r["run_id"]
    # The initial order: task, benchmark, variant, seed.
    keys = [(r["benchmark"], r["variant"], r["seed"]) for r in rows]
    assert keys == sorted(keys)
    # A number column's code is its rank: the order of the values, the runs without one last.
    by_rank = sorted(rows, key=lambda r: r["value"])
    values = [acc.get(r["run_id"], math.nan) for r in by_rank]
    finite = [v for v in values if math.isfinite(v)]
    assert finite == sorted(finite) and values[len(finite):] == [v for v in values if not math.isfinite(v)]
    assert len({r["value"] for r in rows}) == len(set(finite)) + 1


def test_runs_data_cannot_break_out_of_its_script(tmp_path):
    """A run field holding </script> or <!-- stays inside the JSON (escaped), and comes back exact."""
    fr = frames("small")
    evil = "</script><b>x</b><!--"
    fr["runs"].loc[0, "variant"] = evil
    fr["runs"].loc[1, "benchmark"] = "</SCRIPT >&amp;"
    render_site(tmp_path, tasks={}, claims=[], scale="small", generated_at=GENERATED_AT, **fr)
    html = (tmp_path / "runs.html").read_text()
    data = html.split('<script type="application/json" id="runs-data">', 1)[1].split("</script>", 1)[0]
    assert not set("<>&") & set(data)  # written as \u003c, \u003e, \u0026
    assert html.count("<script") == 3 and html.count("</script>") == 3
    rows = {r["run_id"]: r for r in read_runs_data(html)}
    assert rows[fr["runs"].loc[0, "run_id"]]["variant"] == evil
    assert rows[fr["runs"].loc[1, "run_id"]]["benchmark"] == "</SCRIPT >&amp;"
    assert evil not in html


def test_runs_page_is_small_and_deterministic(tmp_path):
    """Columns, most dictionary-encoded: well under 100 bytes per run; same input, same bytes."""
    import pandas as pd

    fr = frames("small")
    many = pd.concat([fr["runs"].assign(run_id=fr["runs"]["run_id"].str[:12] + f"{k:04d}") for k in range(40)],
                     ignore_index=True)
    mets = pd.concat([fr["metrics"].assign(run_id=fr["metrics"]["run_id"].str[:12] + f"{k:04d}") for k in range(40)],
                     ignore_index=True)
    for out in ("a", "b"):
        render_site(tmp_path / out, tasks={}, claims=[], scale="small", generated_at=GENERATED_AT, run_pages=False,
                    runs=many, metrics=mets, failures=fr["failures"], curves={})
    page = (tmp_path / "a" / "runs.html").read_bytes()
    assert page == (tmp_path / "b" / "runs.html").read_bytes()
    assert len(read_runs_data(page.decode())) == len(many) + 1
    blob = page.split(b'id="runs-data">')[1].split(b"</script>")[0]
    assert len(blob) / len(many) < 60, len(blob) / len(many)


def test_published_numbers_beside_ours_at_every_scale_where_the_benchmark_matches(site, paper_site):
    # Issue 16: at every scale, a published number of a benchmark we run stands beside ours, labelled paper;
    # one of a benchmark this scale does not run is listed apart as "not comparable".
    for html in (site["task-toyrep.html"], paper_site["task-toyrep.html"]):
        header = _table(html, "easy").find("th", cls="pub")
        assert "source: paper" in header.text()
        strong = _table(html, "easy").find("tr", data_variant="strong").find("td", cls="pub")
        assert strong.find("span", cls="published").text() == "0.9310 ± 0.0040"
        assert strong.find("span", cls="published").attrs["data-source"] == "paper"
        weak = _table(html, "easy").find("tr", data_variant="weak").find("td", cls="pub")
        assert weak.find("span", cls="published").text() == "0.7020"
        assert _table(html, "easy").find("tr", data_variant="twin").find("td", cls="pub").text().strip() == "—"
        assert not _table(html, "hard").find_all("th", cls="pub")
        rest = parse(html).find("table", cls="published-table").find_all("tr", cls="published")
        assert [r.find_all("td")[0].text() for r in rest] == ["cifar10-sym50"]
        assert rest[0].attrs["data-source"] == "paper" and "source: paper" in rest[0].text()
        assert rest[0].find("span", cls="not-comparable").text() == "not comparable"


def test_inline_svg_and_no_network_references(site):
    doc = parse(site["task-toyrep.html"])
    assert doc.find("div", cls="effect-sizes").find_all("svg")
    curves = parse(site["task-toyrep.html"]).find("section", id="bench-easy").find_all("div", cls="curve")
    assert sorted(c.attrs["data-curve"] for c in curves) == ["eval", "train"]
    assert all(c.find_all("svg") for c in curves)
    own = doc.find("div", cls="task-figure")
    assert own.find("svg", id="toy-own-figure")  # the task's SVG is inserted as markup, not text
    assert "Own figure of the task" in own.text()
    for name, html in site.items():
        page = parse(html)
        assert not page.find_all("link"), name
        assert all("src" not in s.attrs for s in page.find_all("script")), name
        assert all("src" not in i.attrs for i in page.find_all("img")), name
        for style in page.find_all("style"):
            assert not re.search(r"url\(|@import", style.text()), name
        for node in page.iter():
            for attr in ("href", "src", "xlink:href"):
                value = node.attrs.get(attr) or ""
                if value.startswith(("http://", "https://", "//")):
                    assert node.tag == "a" and node.parent.parent.attrs.get("class") == "card citation", (name, value)


def test_user_text_is_escaped(site):
    for name in ("index.html", "task-toyrep.html", "runs.html"):
        html = site[name]
        assert EVIL not in html, name
        # only our sortable-table script, and on runs.html the runs data and the script that draws them
        assert html.count("<script") == (3 if name == "runs.html" else 1), name
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in site["index.html"]
    assert "Toy results for &lt;b&gt;testing&lt;/b&gt;" in site["task-toyrep.html"]


def test_task_without_runs_and_broken_plugin(site):
    lonely = parse(site["task-lonely.html"])
    assert "No runs of this task" in lonely.find("div", cls="no-runs").text()
    index = parse(site["index.html"])
    broken = index.find("div", cls="broken-plugins")
    assert "busted" in broken.text() and "No module named" in broken.text()
    assert index.find("tr", cls="broken").find("span", cls="failed").text() == "broken plugin"
    nav = [a.text() for a in index.find("nav").find_all("a")]
    assert nav == ["harness", "Claims", "lonely", "toyrep", "Runs"]


def test_provenance_on_index(site):
    prov = parse(site["index.html"]).find("dl", cls="provenance").text()
    for needle in ("0123456789abcdef0123456789abcdef01234567", "box1", "3.11.2", "2.13.0", "Toy CPU 9000",
                   GENERATED_AT, "63 recorded"):
        assert needle in prov, needle


def test_rendering_is_deterministic(site, tmp_path):
    again = _render(tmp_path / "site", tmp_path / "tasks", generated_at="2030-01-01T00:00:00+00:00")
    assert set(again) == set(site)
    for name in site:
        assert GENERATED_AT in site[name]
        assert again[name] != site[name]  # the timestamp is there ...
        assert again[name].replace("2030-01-01T00:00:00+00:00", GENERATED_AT) == site[name], name  # ... and only it


def test_render_from_registry(tmp_path, monkeypatch):
    from factories import make_record, write_record

    from harness import plugins
    from harness.registry import Registry
    from harness.report import render_from_registry

    results = tmp_path / "results"
    yaml_data = {**__import__("report_fixture").TASK_YAML, "claims": [], "published": []}
    task = write_task(tmp_path / "toyrep", yaml_data)
    for s in range(3):
        write_record(results, make_record(task="toyrep", variant="strong", benchmark="easy", seed=s,
                                          metrics={"accuracy": 0.8 + 0.01 * s}))
    write_record(results, make_record(task="toyrep", variant="weak", benchmark="easy", seed=0, status="failed",
                                      error="disk full " + EVIL))
    reg = Registry(url=f"sqlite:///{tmp_path / 'reg.sqlite'}", results_dir=results)
    reg.ingest_dir(results)
    monkeypatch.setattr(plugins, "discover", lambda: ({"toyrep": task}, (BROKEN,)))
    paths = render_from_registry(reg, tmp_path / "out", "small", tmp_path / "missing-claims.json",
                                 generated_at=GENERATED_AT)
    pages = {p.name: p.read_text() for p in paths}
    cell = _cell(pages["task-toyrep.html"], "easy", "strong", "accuracy")
    assert float(cell.attrs["data-value"]) == pytest.approx(0.81)
    index = parse(pages["index.html"])
    assert index.find("tr", cls="failure").find("div", cls="message").text() == "disk full " + EVIL
    assert "box" in index.find("dl", cls="provenance").text()  # hostname from the record's provenance
    assert "busted" in index.find("div", cls="broken-plugins").text()


def test_empty_registry_and_failing_task_figures(tmp_path):
    empty = __import__("pandas").DataFrame()
    render_site(tmp_path / "none", tasks={}, runs=empty, metrics=empty, failures=empty, claims=[], curves={},
                scale="tiny", generated_at=GENERATED_AT)
    index = parse((tmp_path / "none" / "index.html").read_text())
    assert "No task plugin is installed" in index.find("table", cls="tasks").text()
    assert index.find(id="count-ok").text() == "0"
    assert "No runs recorded" in (tmp_path / "none" / "runs.html").read_text()

    task = empty_task(tmp_path / "lonely")

    def broken_figures(runs, scale):
        raise ValueError("cannot draw <this>")

    task.figures = broken_figures
    (tmp_path / "none" / "task-gone.html").write_text("stale page of a removed task")
    paths = render_site(tmp_path / "none", tasks={"lonely": task}, runs=empty, metrics=empty, failures=empty,
                        claims=[], curves={}, scale="tiny", generated_at=GENERATED_AT)
    assert [p.name for p in paths] == ["index.html", "task-lonely.html", "runs.html", "history-lonely.html"]
    assert not (tmp_path / "none" / "task-gone.html").exists()
    page = (tmp_path / "none" / "task-lonely.html").read_text()
    assert "defines no <strong>tiny</strong> scale" in page
    assert "ValueError: cannot draw &lt;this&gt;" in page


def test_non_http_urls_from_task_yaml_never_become_links(tmp_path):
    """Issue 14.7: a task.yaml's javascript:/data:/other-scheme URLs render as text, not links."""
    import copy

    from report_fixture import TASK_YAML

    empty = __import__("pandas").DataFrame()
    hostile = {"javascript:alert(document.cookie)": "javascript:alert(1)", " JaVaScRiPt:alert(1)": "data:text/html,x",
               "vbscript:msgbox": "file:///etc/passwd", "//evil.example/x": "java\tscript:alert(1)"}
    for i, (arxiv, code) in enumerate(hostile.items()):
        data = copy.deepcopy(TASK_YAML)
        data["paper"].update(arxiv=arxiv, code=code)
        task = write_task(tmp_path / f"t{i}", data)
        render_site(tmp_path / f"site{i}", tasks={"toyrep": task}, runs=empty, metrics=empty, failures=empty,
                    claims=[], curves={}, scale="small", generated_at=GENERATED_AT)
        page = (tmp_path / f"site{i}" / "task-toyrep.html").read_text()
        hrefs = [n.attrs.get("href") or "" for n in parse(page).find_all("a")]
        assert hrefs and all(not h.strip().lower().startswith(("javascript", "data:", "vbscript", "file:", "//"))
                             and "script:" not in h.lower() for h in hrefs), hrefs
        citation = parse(page).find("div", cls="citation")
        assert citation.find_all("a", cls="code") == [] and citation.find_all("a", cls="arxiv") == []
        assert "code:" in citation.text()  # shown, as text
