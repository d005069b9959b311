"""``harness publish``: the committed study of a scale, ``reports/<scale>/``, and the verdict
tables of the task READMEs, all generated from one claims file.

What is written (deterministic: the same registry and claims give the same bytes, so a
regeneration changes only what changed):

* ``reports/<scale>/index.html``, ``task-*.html``, ``history-*.html``, ``runs.html``: the
  rendered site, stamped with the time the study's last run finished (not "now"), without the
  per-run pages (a few kB each, thousands of them: past the 20 MB a committed study may take;
  ``harness report`` writes them locally and ``runs.parquet`` holds every run's numbers);
* ``reports/<scale>/claims.json``: the claims file the site and the READMEs were made from;
* ``reports/<scale>/runs.parquet``: every current run of the scale, one row each (the
  registry's index columns, config and info as JSON text; full records stay in results/);
* in each task's README, the table between ``<!-- verdicts:<scale>:start -->`` and
  ``<!-- verdicts:<scale>:end -->`` (:func:`verdict_markdown`). A README without the markers
  is left alone; ``tests/test_publish.py`` fails when a committed README and the published
  claims file disagree.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from harness.config import ConfigError

START = "<!-- verdicts:{scale}:start -->"
END = "<!-- verdicts:{scale}:end -->"
PENDING = "Not published yet: run the study, then `make publish` (or `harness publish --scale {scale}`)."


def _num(x: Any, fmt: str = "{:+.3g}") -> str:
    return fmt.format(float(x)) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else "—"


def _p(x: Any) -> str:
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "—"
    return "<0.0001" if x < 1e-4 else f"{x:.4f}" if x < 0.01 else f"{x:.3f}"


def verdict_markdown(claims: Iterable[Mapping[str, Any]], task: str, scale: str = "small") -> str:
    """The verdict table of one task as Markdown, claims in the order of the claims file (the
    pending note when the file has none of the task's claims)."""
    rows = [c for c in claims if c.get("task") == task]
    head = ("| claim | verdict | effect [95% CI] | p reproduce (Holm) | p refute (Holm) | seeds | MDE | seeds needed |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for c in rows:
        verdict = str(c.get("verdict") or "not evaluated")
        if c.get("fragile"):
            verdict += " (fragile)"
        cid = f"`{c.get('id')}`" + (" (exploratory)" if c.get("exploratory") else "")
        effect = _num(c.get("effect"))
        if effect != "—" and _num(c.get("ci_low")) != "—":
            effect += f" [{_num(c.get('ci_low'))}, {_num(c.get('ci_high'))}]"
        need = c.get("seeds_needed")
        need_txt = (f"{int(need)}" if isinstance(need, (int, float)) and math.isfinite(need)
                    else "never" if verdict.startswith("inconclusive") and c.get("mde") is not None else "—")
        lines.append(f"| {cid} | {verdict} | {effect} | {_p(c.get('p_adjusted'))} | {_p(c.get('p_refute_adjusted'))} "
                     f"| {c.get('n_seeds') if c.get('n_seeds') is not None else '—'} | {_num(c.get('mde'), '{:.3g}')} "
                     f"| {need_txt} |")
    if len(lines) == 1:
        return PENDING.format(scale=scale)
    return "\n".join(lines)


def _block(text: str, scale: str) -> tuple[int, int] | None:
    """(start, end) offsets of the text between the markers, or None without markers."""
    start, end = START.format(scale=scale), END.format(scale=scale)
    i, j = text.find(start), text.find(end)
    if i < 0 and j < 0:
        return None
    if i < 0 or j < i:
        raise ConfigError(f"README: unbalanced {start} / {end} markers: put the start marker before the end one")
    return i + len(start), j


def readme_table(path: str | Path, scale: str) -> str | None:
    """The generated table currently in a README (stripped), or None when it has no markers."""
    text = Path(path).read_text(encoding="utf-8")
    span = _block(text, scale)
    return None if span is None else text[span[0]:span[1]].strip()


def update_readme(path: str | Path, scale: str, table: str) -> bool:
    """Replace the README's generated table; True when the file changed (False: no markers or same)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    span = _block(text, scale)
    if span is None:
        return False
    new = text[:span[0]] + "\n" + table.strip() + "\n" + text[span[1]:]
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def study_time(runs) -> str | None:
    """When the study's last run finished (ISO text): the deterministic stamp of the site."""
    if runs is None or not len(runs) or "finished_at" not in runs:
        return None
    done = [str(t) for t in runs["finished_at"] if isinstance(t, str) and t]
    return max(done) if done else None


def export_runs(runs, path: Path) -> Path:
    """One row per run as Parquet; dict columns as sorted JSON text, no full record bodies."""
    frame = runs.drop(columns=[c for c in ("record_json", "record_path") if c in runs.columns]).copy()
    for col in ("config", "info"):
        if col in frame.columns:
            frame[col] = [json.dumps(v, sort_keys=True, default=str) for v in frame[col]]
    frame = frame.sort_values(["task", "benchmark", "variant", "seed"], kind="stable").reset_index(drop=True)
    frame.to_parquet(path, index=False)
    return path


def publish(registry: Any, scale: str, claims_path: str | Path, out_dir: str | Path,
            readmes: Mapping[str, Path] | None = None) -> dict[str, Any]:
    """Render the site of ``scale`` into ``out_dir`` with its claims and runs, and refresh the
    README verdict tables (``readmes``: task name -> README path; default: every installed
    task's ``README.md`` beside its task.yaml). Returns what was written."""
    from harness.claims import read_claims
    from harness.report.render import default_benchmarks, render_from_registry

    claims = read_claims(claims_path)  # a missing or corrupt file is one clear error
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = registry.runs(scale=scale)
    pages = render_from_registry(registry, out, scale, claims_path, generated_at=study_time(runs), run_pages=False,
                                 benchmarks=default_benchmarks())
    shutil.copyfile(claims_path, out / "claims.json")
    export = export_runs(runs, out / "runs.parquet") if len(runs) else None
    if readmes is None:
        from harness.plugins import discover

        readmes = {name: Path(task.root) / "README.md" for name, task in discover()[0].items()}
    changed = [name for name, path in sorted(readmes.items())
               if Path(path).exists() and update_readme(path, scale, verdict_markdown(claims, name, scale))]
    return {"pages": pages, "claims": out / "claims.json", "runs": export, "readmes_changed": changed,
            "n_runs": int(len(runs)), "n_claims": len(claims)}


def readme_problems(readmes: Mapping[str, Path], scale: str, claims: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Where a README's generated table disagrees with the published claims file (or, with no
    published file, where a README shows a table at all)."""
    problems = []
    for name, path in sorted(readmes.items()):
        if not Path(path).exists():
            continue
        got = readme_table(path, scale)
        if got is None:
            continue
        want = PENDING.format(scale=scale) if claims is None else verdict_markdown(claims, name, scale)
        if got != want.strip():
            problems.append(f"{path}: the {scale} verdict table is not the one reports/{scale}/claims.json gives: "
                            f"run `harness publish --scale {scale}`")
    return problems
