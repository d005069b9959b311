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
