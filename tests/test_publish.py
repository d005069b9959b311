"""harness.publish: the committed study (reports/<scale>/) and the README verdict tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from factories import make_record
from harness.claims import evaluate_claims, read_claims, write_claims
from harness.config import ConfigError
from harness.plugins import discover, get_task
from harness.publish import (PENDING, publish, readme_problems, readme_table, update_readme,
                             verdict_markdown)
from harness.registry import Registry

REPO = Path(__file__).parent.parent
CLAIMS = [
    {"task": "t", "id": "a", "verdict": "reproduced", "effect": 0.2075, "ci_low": 0.2025, "ci_high": 0.2125,
     "p_adjusted": 0.0117, "p_refute_adjusted": 1.0, "n_seeds": 8, "mde": 0.0081, "seeds_needed": 3,
     "fragile": False, "exploratory": False},
    {"task": "t", "id": "b", "verdict": "inconclusive", "effect": 0.01, "ci_low": -0.02, "ci_high": 0.04,
     "p_adjusted": 0.9, "p_refute_adjusted": 1.0, "n_seeds": 5, "mde": 0.05, "seeds_needed": None,
     "fragile": False, "exploratory": True},
    {"task": "t", "id": "c", "verdict": "refuted", "effect": -1.5, "ci_low": -2.0, "ci_high": -1.0,
     "p_adjusted": 1.0, "p_refute_adjusted": 0.00002, "n_seeds": 3, "mde": 0.4, "seeds_needed": 3,
     "fragile": True, "exploratory": False},
    {"task": "t", "id": "d", "verdict": "undecidable", "effect": None, "ci_low": None, "ci_high": None,
     "p_adjusted": None, "p_refute_adjusted": None, "n_seeds": 1, "mde": None, "seeds_needed": None},
    {"task": "other", "id": "z", "verdict": "reproduced"},
]


def test_verdict_markdown_rows():
    lines = verdict_markdown(CLAIMS, "t").splitlines()
    assert lines[0].startswith("| claim | verdict | effect [95% CI] | p reproduce (Holm) | p refute (Holm)")
    assert lines[2] == "| `a` | reproduced | +0.207 [+0.203, +0.212] | 0.012 | 1.000 | 8 | 0.0081 | 3 |"
    assert lines[3] == "| `b` (exploratory) | inconclusive | +0.01 [-0.02, +0.04] | 0.900 | 1.000 | 5 | 0.05 | never |"
    assert lines[4] == "| `c` | refuted (fragile) | -1.5 [-2, -1] | 1.000 | <0.0001 | 3 | 0.4 | 3 |"
    assert lines[5] == "| `d` | undecidable | — | — | — | 1 | — | — |"
    assert len(lines) == 6   # the other task's claim is not in this table
    assert verdict_markdown(CLAIMS, "absent", "paper") == PENDING.format(scale="paper")


def test_update_readme_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# t\nintro\n<!-- verdicts:small:start -->\nold table\n<!-- verdicts:small:end -->\nafter\n")
    assert update_readme(readme, "small", "| new |") is True
    assert readme.read_text() == "# t\nintro\n<!-- verdicts:small:start -->\n| new |\n<!-- verdicts:small:end -->\nafter\n"
    assert update_readme(readme, "small", "| new |") is False          # idempotent
    assert readme_table(readme, "small") == "| new |"
    assert update_readme(readme, "paper", "| x |") is False            # no paper markers: left alone
    assert readme_table(readme, "paper") is None
    readme.write_text("<!-- verdicts:small:end -->\n<!-- verdicts:small:start -->\n")
    with pytest.raises(ConfigError, match="unbalanced"):
        update_readme(readme, "small", "| x |")


@pytest.fixture
def toy_study(tmp_path):
    """A registry with toy runs at small scale (3 seeds) and its claims file."""
    results = tmp_path / "results"
    reg = Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    for s in range(3):
        reg.ingest_record(make_record(task="toy", variant="sgd_best", benchmark="toy-a", seed=s,
                                      metrics={"test_accuracy": 90.0 + s}, finished=10 + s))
        reg.ingest_record(make_record(task="toy", variant="sgd[lr=0.1]", benchmark="toy-a", seed=s,
                                      metrics={"test_accuracy": 80.0 + 0.5 * s}, finished=20 + s))
    claims = evaluate_claims(get_task("toy"), reg.metrics(), "small")
    path = write_claims(claims, results / "claims-small.json")
    return reg, path, tmp_path


def test_publish_writes_site_claims_runs_and_readme_deterministically(toy_study):
    reg, claims_path, tmp = toy_study
    readme = tmp / "README.md"
    readme.write_text("# toy\n<!-- verdicts:small:start -->\npending\n<!-- verdicts:small:end -->\n")
    out = tmp / "reports" / "small"
    done = publish(reg, "small", claims_path, out, readmes={"toy": readme})
    assert done["n_runs"] == 6 and done["readmes_changed"] == ["toy"]
    assert json.loads((out / "claims.json").read_text()) == read_claims(claims_path)
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 6 and set(runs["variant"]) == {"sgd_best", "sgd[lr=0.1]"}
    assert "record_json" not in runs.columns and isinstance(runs["config"].iloc[0], str)
    index = (out / "index.html").read_text()
    # Stamped with the study's last finish, not the time of publishing; the study span is shown.
    last = max(pd.read_parquet(out / "runs.parquet")["finished_at"])
    assert last in index and "run time, summed" in index
    table = readme_table(readme, "small")
    assert table == verdict_markdown(read_claims(claims_path), "toy")
    assert "`best_beats_fixed` | reproduced" in table
    # Again: the same bytes everywhere, nothing to update.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = publish(reg, "small", claims_path, out, readmes={"toy": readme})
    assert again["readmes_changed"] == [] and {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert readme_problems({"toy": readme}, "small", read_claims(claims_path)) == []


def test_publish_without_claims_is_one_clear_error(toy_study):
    reg, _, tmp = toy_study
    with pytest.raises(ConfigError, match="run `harness claims --scale SCALE` first"):
        publish(reg, "small", tmp / "missing.json", tmp / "out", readmes={})


def test_committed_readmes_agree_with_the_published_claims():
    """Each task README's generated table is the one reports/small/claims.json gives (or says it is
    pending while nothing is published)."""
    tasks, _ = discover()
    readmes = {name: Path(t.root) / "README.md" for name, t in tasks.items()
               if Path(t.root).resolve().is_relative_to(REPO) and (Path(t.root) / "README.md").exists()}
    published = REPO / "reports" / "small" / "claims.json"
    claims = read_claims(published) if published.exists() else None
    assert readme_problems(readmes, "small", claims) == []
    assert any(readme_table(p, "small") is not None for p in readmes.values())   # the markers are there


def test_readme_problems_catch_a_stale_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- verdicts:small:start -->\n| stale |\n<!-- verdicts:small:end -->\n")
    assert readme_problems({"t": readme}, "small", CLAIMS) != []
    assert readme_problems({"t": readme}, "small", None) != []   # a table with nothing published
