"""Issue 16.6: the per-run pages and the per-task history pages, rendered from a real registry."""

from __future__ import annotations

import pytest
from factories import make_record, make_task, write_record
from report_fixture import parse

from harness.registry import Registry
from harness.report.render import read_runs_data, render_from_registry

A, B = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def history_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("pages")
    results = base / "results"
    for seed, (acc_a, acc_b) in enumerate([(0.90, 0.80), (0.92, 0.81), (0.91, 0.80)]):
        write_record(results, make_record(seed=seed, commit=A, metrics={"acc": acc_a, "loss": 0.5}, finished=seed,
                                          higher_is_better={"loss": False}), history=True)
        cur = make_record(seed=seed, commit=B, metrics={"acc": acc_b, "loss": 0.5}, finished=10 + seed,
                          higher_is_better={"loss": False},
                          curves={"train": [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.6}, {"step": 2, "loss": 0.4}]})
        cur["artifacts"] = [{"name": "model", "path": "model.pt", "sha256": "f" * 64}]
        cur["threads"] = 2
        write_record(results, cur)
        # an unchanged variant: same values at both commits
        write_record(results, make_record(variant="worse", seed=seed, commit=A, metrics={"acc": 0.5}, finished=seed),
                     history=True)
        write_record(results, make_record(variant="worse", seed=seed, commit=B, metrics={"acc": 0.5},
                                          finished=10 + seed))
    reg = Registry(results_dir=results)
    reg.ingest_dir()
    (base / "site").mkdir()
    (base / "site" / "snakemake-report.html").write_text("<html></html>")
    task = make_task(base, [])
    paths = render_from_registry(reg, base / "site", "small", None, generated_at="2025-06-01T12:00:00+00:00",
                                 tasks={"toy": task})
    reg.close()
    return {p.name: p.read_text() for p in paths}, cur


def test_history_page_marks_the_regression_as_compare_does(history_site):
    pages, _ = history_site
    doc = parse(pages["history-toy.html"])
    heads = [th.text().strip() for th in doc.find("table", cls="history").find("thead").find_all("th")]
    assert heads == ["benchmark", "variant", A[:10], B[:10]]  # oldest commit first
    rows = {r.attrs["data-variant"]: r for r in doc.find_all("tr", cls="history-row")}
    base_cells = rows["base"].find_all("td")[2:]
    assert [c.attrs.get("data-mark") for c in base_cells] == [None, "regression"]
    assert base_cells[0].text().startswith("0.91") and base_cells[1].text().startswith("0.8033")
    assert [c.attrs.get("data-mark") for c in rows["worse"].find_all("td")[2:]] == [None, None]
    assert "1 regression(s) marked" in doc.text()
    assert "history-toy.html" in pages["task-toy.html"]


def test_run_page_has_config_provenance_hashes_curves_artifacts_and_commands(history_site):
    pages, old = history_site
    html = pages[f"run-{old['run_id']}.html"]
    doc = parse(html)
    cmds = doc.find("pre", cls="commands").text()
    assert f"git checkout {B}" in cmds
    assert "harness run toy --method base --benchmark b1 --seed 2 --scale small --threads 2" in cmds
    assert f"harness reproduce {old['run_id']}" in cmds
    assert "d" * 16 in doc.find("tr", cls="data-hash").text() and old["code_hash"] in html
    assert [c.attrs["data-key"] for c in doc.find_all("div", cls="curve")] == ["loss"]
    assert doc.find("div", cls="curve").find_all("svg") and "<polyline" in html
    assert "f" * 64 in doc.find("table", cls="artifacts").text()
    assert "lr" in doc.find("section", cls="run-config").text()
    assert "box" in doc.find("table", cls="provenance").text()  # hostname
    metrics = {r.attrs["data-metric"]: r.find_all("td")[1].text() for r in doc.find_all("tr")
               if r.attrs.get("data-metric")}
    assert metrics == {"acc": "0.8", "loss": "0.5"}


def test_runs_page_filters_and_links_and_snakemake_report(history_site):
    pages, _ = history_site
    doc = parse(pages["runs.html"])
    selects = {s.attrs["data-filter"]: [o.attrs["value"] for o in s.find_all("option")]
               for s in doc.find("form", id="run-filters").find_all("select")}
    assert set(selects) == {"task", "method", "benchmark", "status", "commit"}
    assert selects["method"] == ["", "base", "worse"] and selects["commit"] == ["", B[:10]]
    rows = read_runs_data(pages["runs.html"])  # the page's script draws its rows from these (test_report_browser)
    assert len(rows) == 6 and all(r["commit_text"] == B[:10] and r["commit"] == B for r in rows)
    assert all(r["run_page"] == 1 and f"run-{r['run_id']}.html" in pages for r in rows)
    for name in ("index.html", "runs.html", "history-toy.html"):
        assert 'href="snakemake-report.html"' in pages[name]
