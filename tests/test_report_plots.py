"""The report's plot cache (harness/report/plots.py: figure_cache)."""

from __future__ import annotations

from report_fixture import CLAIMS, frames, write_task

from harness.report import plots, render_site

GENERATED_AT = "2025-06-01T12:00:00+00:00"


def _render(out, tmp_path, cache, **over):
    kw = dict(tasks={"toyrep": write_task(tmp_path / "tasks" / "toyrep")}, claims=CLAIMS, scale="small",
              generated_at=GENERATED_AT, run_pages=False, **frames("small"))
    kw.update(over)
    return {p.name: p.read_bytes() for p in render_site(out, figure_cache=cache, **kw)}


def _count_draws(monkeypatch) -> list:
    drawn = []
    real = plots.figure_to_svg
    monkeypatch.setattr(plots, "figure_to_svg", lambda fig: drawn.append(1) or real(fig))
    return drawn


def test_a_cached_render_draws_nothing_and_writes_the_same_bytes(tmp_path, monkeypatch):
    fresh = _render(tmp_path / "fresh", tmp_path, None)
    cache = tmp_path / "cache"
    drawn = _count_draws(monkeypatch)
    first = _render(tmp_path / "a", tmp_path, cache)
    n_first = len(drawn)
    # the effect plot, the curve plots, and one file for the task's own figures
    assert n_first >= 2 and len(list(cache.glob("*.svg"))) == n_first + 1
    second = _render(tmp_path / "b", tmp_path, cache)
    assert len(drawn) == n_first  # nothing drawn again
    assert first == second == fresh


def test_task_figures_are_computed_once_for_the_same_runs_and_task_files(tmp_path, monkeypatch):
    calls = []
    task = write_task(tmp_path / "tasks" / "toyrep")
    real = type(task).figures
    monkeypatch.setattr(type(task), "figures", lambda self, runs, scale: calls.append(len(runs)) or real(self, runs, scale))
    cache = tmp_path / "cache"
    a = _render(tmp_path / "a", tmp_path, cache, tasks={"toyrep": task})
    b = _render(tmp_path / "b", tmp_path, cache, tasks={"toyrep": task})
    assert len(calls) == 1 and a == b
    (tmp_path / "tasks" / "toyrep" / "helper.py").write_text("X = 1\n")  # the task's code changed
    _render(tmp_path / "c", tmp_path, cache, tasks={"toyrep": task})
    assert len(calls) == 2


def test_changed_data_is_drawn_again_and_unused_files_are_removed(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _render(tmp_path / "a", tmp_path, cache)
    before = {p.name for p in cache.glob("*.svg")}
    shifted = ("effect", "ci_low", "ci_high")
    claims = [{k: v + 1.0 if k in shifted and isinstance(v, float) else v for k, v in c.items()} for c in CLAIMS]
    drawn = _count_draws(monkeypatch)
    fresh = _render(tmp_path / "fresh", tmp_path, None, claims=claims)
    n_fresh = len(drawn)
    again = _render(tmp_path / "b", tmp_path, cache, claims=claims)
    assert len(drawn) - n_fresh == 1  # only the effect plot: the curves did not change
    after = {p.name for p in cache.glob("*.svg")}
    assert len(after) == len(before) and len(after - before) == 1  # the old effect plot is gone
    assert again == fresh
