"""The Performance page's reading of benchmarks/results/*.json (harness/report/performance.py)."""

from __future__ import annotations

import json

from report_fixture import frames

from harness.report import render_site
from harness.report.performance import growth_svg, load_results, performance_context


def _write(folder, name, obj):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(obj))


GROWTH = {
    "benchmark": "registry_scale", "label": "after", "machine": {"cpus": 2, "load_avg_1m": 1.5},
    "results": [
        {"n_records": 10000, "ingest_s": 12.0, "reingest_s": 0.5, "ingest_all_s": [12.0, 13.0], "note": "x"},
        {"n_records": 1000, "ingest_s": 1.5, "reingest_s": 0.04},
        {"n_records": 100000, "ingest_s": 150.0},
    ],
    "goals": {"ingest_s": {"at": 100000, "max": 15}, "reingest_s": {"at": 100000, "max": 2},
              "runs_task_s": {"at": 1000, "max": 0.05}},
}
SCALAR = {"task": "toy", "repeats": 3, "process_s": {"bare": 4.0, "harness": 4.1, "overhead": 0.1},
          "same_metrics": True, "raw": {"bare": [1, 2, 3]}, "goals": {"process_s.overhead": {"max": 0.2}}}


def test_growth_series_sizes_sorted_lists_and_text_ignored(tmp_path):
    _write(tmp_path, "registry_scale", GROWTH)
    (r,) = load_results(tmp_path)
    assert r.size_key == "n_records" and r.label == "after" and "cpus 2" in r.machine
    series = {s.name: s.points for s in r.series}
    assert series == {"ingest_s": ((1000.0, 1.5), (10000.0, 12.0), (100000.0, 150.0)),
                      "reingest_s": ((1000.0, 0.04), (10000.0, 0.5))}


def test_goals_are_checked_at_their_size_and_unmeasured_ones_say_so(tmp_path):
    _write(tmp_path, "registry_scale", GROWTH)
    _write(tmp_path, "overhead", SCALAR)
    by_name = {r.name: r for r in load_results(tmp_path)}
    checks = {g.metric: (g.at, g.measured, g.bound, g.met) for g in by_name["registry_scale"].goals}
    assert checks == {"ingest_s": (100000.0, 150.0, 15.0, False),
                      "reingest_s": (100000.0, None, 2.0, None),      # not measured at 100k
                      "runs_task_s": (1000.0, None, 0.05, None)}      # no such series
    (g,) = by_name["overhead"].goals
    assert (g.metric, g.at, g.measured, g.met) == ("process_s.overhead", None, 0.1, True)
    # Scalars: nested numbers flattened with dots; booleans, strings and the raw lists are left out.
    assert dict(by_name["overhead"].scalars) == {"repeats": 3.0, "process_s.bare": 4.0, "process_s.harness": 4.1,
                                                 "process_s.overhead": 0.1}


def test_a_goal_at_every_size_is_decided_by_the_worst_size(tmp_path):
    _write(tmp_path, "dag_plan", {"results": [{"n_jobs": 700, "dry_run_s": 1.2}, {"n_jobs": 1000, "dry_run_s": 1.9}],
                                  "goals": {"dry_run_s": {"at": "all", "max": 1.5}}})
    (g,) = load_results(tmp_path)[0].goals
    assert (g.at, g.measured, g.met) == (None, 1.9, False)


def test_a_list_of_goals_bounds_one_field_at_several_sizes(tmp_path):
    _write(tmp_path, "report_scale", {"results": [{"n_records": 10000, "report_cpu_s": 5.2},
                                                  {"n_records": 100000, "report_cpu_s": 28.0}],
                                      "goals": {"report_cpu_s": [{"at": 10000, "max": 5}, {"at": 100000, "max": 30}]}})
    checks = [(g.metric, g.at, g.measured, g.met) for g in load_results(tmp_path)[0].goals]
    assert checks == [("report_cpu_s", 10000.0, 5.2, False), ("report_cpu_s", 100000.0, 28.0, True)]


def test_non_object_and_broken_files_are_skipped(tmp_path):
    _write(tmp_path, "a_list", [1, 2])
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "table.md").write_text("| a |")
    assert load_results(tmp_path) == []
    assert performance_context(tmp_path / "missing") == {"sections": [], "goals": []}


def test_growth_svg_is_log_log_escaped_and_deterministic(tmp_path):
    _write(tmp_path, "registry_scale", {**GROWTH, "results": GROWTH["results"] + [{"n_records": 10, "<b>x_s": 0.01}]})
    (r,) = load_results(tmp_path)
    svg = str(growth_svg(r.series, "t<script>", "n_records"))
    assert "<script>" not in svg and "t&lt;script&gt;" in svg and "&lt;b&gt;x_s" in svg
    # Decade ticks from 10 to 1e5 records and from 0.01 to 1000 s.
    for tick in (">10<", ">100000<", ">0.01<", ">1000<"):
        assert tick in svg, tick
    assert svg == str(growth_svg(r.series, "t<script>", "n_records"))
    assert str(growth_svg([], "empty", "n")) == ""


def test_the_site_links_a_performance_page_only_when_results_exist_and_removes_a_stale_one(tmp_path):
    bench = tmp_path / "bench"
    _write(bench, "registry_scale", GROWTH)
    site = tmp_path / "site"
    kw = dict(tasks={}, claims=[], scale="small", generated_at="2025-06-01T12:00:00+00:00", run_pages=False,
              **frames("small"))
    names = {p.name for p in render_site(site, benchmarks=bench, **kw)}
    assert "performance.html" in names
    page = (site / "performance.html").read_text()
    assert "registry_scale" in page and "not met" in page and "<svg" in page
    assert 'href="performance.html"' in (site / "runs.html").read_text()
    # No results folder (an installed harness): no page, no link, and the old page is gone.
    names = {p.name for p in render_site(site, benchmarks=tmp_path / "missing", **kw)}
    assert "performance.html" not in names and not (site / "performance.html").exists()
    assert 'href="performance.html"' not in (site / "index.html").read_text()
