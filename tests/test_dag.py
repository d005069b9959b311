"""harness.dag: the plan the Snakefile expands, with requires() as edges."""

from __future__ import annotations

from harness.dag import datasets_of, plan


def test_plan_expands_grid_seeds_and_closes_over_requires():
    runs = plan("tiny", ["toy"])
    by = {(r.variant, r.seed) for r in runs.values()}
    assert len(runs) == 2 * 3 + 3 + 3 + 3 + 3 + 3  # sgd grid, best, pair, explode, crash, extra members
    assert {("sgd[lr=0.1]", s) for s in (1000, 1001, 1002)} <= by
    pair = runs["results/runs/tiny/toy/toy-a/pair/seed1.json"]
    assert pair.requires == ("results/runs/tiny/toy/toy-a/sgd__lr=0.1/seed1.json",
                             "results/runs/tiny/toy/toy-a/sgd__lr=0.1/seed1001.json")
    best = runs["results/runs/tiny/toy/toy-a/sgd_best/seed0.json"]
    assert len(best.requires) == 2 and all(p in runs for p in best.requires)
    assert datasets_of(runs) == ["toy_blobs"]


def test_small_scale_plans_only_its_methods():
    runs = plan("small", ["toy"])
    assert {r.variant for r in runs.values()} == {"sgd[lr=0.1]", "sgd[lr=0.5]", "sgd_best"}


def test_planning_caches_variants_and_values_but_hands_out_copies(tmp_path, monkeypatch):
    import harness.config as hc
    from factories import make_task

    cfg = make_task(tmp_path, []).config
    first = cfg.variants("small")
    first[0].hyperparameters["extra"] = 1
    first[-1].grid_point["wd"] = 9
    again = cfg.variants("small")
    assert [v.variant for v in again] == [v.variant for v in first]
    assert "extra" not in again[0].hyperparameters and again[-1].grid_point == {"wd": 0.2}
    r = cfg.resolve("small", "grid[wd=0.1]")
    r.hyperparameters["wd"] = 5
    assert cfg.resolve("small", "grid[wd=0.1]").hyperparameters["wd"] == 0.1
    assert cfg.resolve("small", "grid[wd=0.3]").grid_point == {"wd": 0.3}  # off the grid: an override
    calls = []
    real = hc.yaml.safe_load
    monkeypatch.setattr(hc.yaml, "safe_load", lambda text: calls.append(text) or real(text))
    values = [hc.parse_value("0.125"), hc.parse_value("0.125"), hc.parse_value("[1, 2]")]
    assert values[:2] == [0.125, 0.125] and calls.count("0.125") <= 1  # parsed once, then cached
    values[2].append(3)
    assert hc.parse_value("[1, 2]") == [1, 2]
