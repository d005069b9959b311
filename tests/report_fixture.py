"""Synthetic inputs for the report tests, and a tiny HTML tree to assert on.

The numbers are chosen so that the expected table is known by hand:

* benchmark ``easy``, metric ``accuracy`` (higher is better), 8 seeds:
  ``strong`` is best; ``twin`` differs from it by +-0.004 noise (tied: two-sided
  sign-flip p >> 0.05); ``weak`` is 0.2 lower on every seed (p = 2/256: not tied);
  ``unstable`` has 6 ok seeds and 2 diverged ones (excluded from its mean, even for
  the loss, which they recorded as a finite 5.0).
* metric ``loss`` (lower is better): ``twin`` is clearly lowest, ``weak`` highest.
* benchmark ``hard``: one failed run (``weak``, seed 3) whose message holds a ``<script>``.
"""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.api import Task

SEEDS = list(range(8))
STRONG = [0.81, 0.83, 0.82, 0.84, 0.80, 0.85, 0.82, 0.83]
TWIN_NOISE = [-0.004, 0.003, -0.002, 0.001, 0.002, -0.003, 0.001, -0.001]
ACCURACY = {
    "strong": STRONG,
    "twin": [a + d for a, d in zip(STRONG, TWIN_NOISE)],
    "weak": [a - 0.2 - 0.01 * (s % 3) for s, a in enumerate(STRONG)],
    "unstable": [0.70, 0.72, 0.69, 0.71, 0.73, 0.70, math.nan, math.nan],
}
LOSS = {
    "strong": [0.50 + 0.01 * (s % 2) for s in SEEDS],
    "twin": [0.30 + 0.01 * (s % 3) for s in SEEDS],
    "weak": [0.90 + 0.01 * (s % 2) for s in SEEDS],
    "unstable": [0.60, 0.62, 0.61, 0.60, 0.63, 0.61, 5.0, 5.0],  # diverged seeds: finite loss, NaN accuracy
}
EVIL = '<script>alert("pwned")</script>'
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FIGURE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="60" height="20" id="toy-own-figure">'
              '<rect width="60" height="20" fill="#0a7"/></svg>')

TASK_YAML: dict[str, Any] = {
    "name": "toyrep",
    "version": 2,
    "description": "A synthetic task for the report tests.",
    "paper": {"title": "Toy results for <b>testing</b>", "authors": ["Ada Lovelace", "Alan Turing"],
              "year": 2023, "venue": "ToyConf", "arxiv": "2301.00001", "code": "https://github.com/example/toy"},
    "datasets": ["digits"],
    "metrics": {"accuracy": "higher", "loss": "lower"},
    "primary_metric": "accuracy",
    "methods": {
        "strong": {"description": "the proposed method"},
        "twin": {"description": "indistinguishable from strong"},
        "weak": {"description": "a much worse baseline"},
        "unstable": {"description": "diverges on some seeds"},
    },
    "scales": {
        "small": {
            "seeds": SEEDS,
            "benchmarks": {"easy": {"dataset": "digits", "noise": 0.2}, "hard": {"dataset": "digits", "noise": 0.5}},
            "methods": {"strong": None, "twin": None, "weak": None, "unstable": None},
        },
        "paper": {
            "seeds": SEEDS,
            "benchmarks": {"easy": {"dataset": "digits", "noise": 0.2}, "hard": {"dataset": "digits", "noise": 0.5}},
            "methods": {"strong": None, "twin": None, "weak": None, "unstable": None},
        },
    },
    "claims": [
        {"id": "strong_beats_weak", "statement": "Strong beats weak by a wide margin.", "source": "Table 2",
         "metric": "accuracy", "treatment": "strong", "control": "weak", "min_effect": 0.05},
        {"id": "twin_differs", "statement": "Twin differs from strong " + EVIL, "source": "Figure 3",
         "metric": "accuracy", "treatment": "strong", "control": "twin", "min_effect": 0.01},
        {"id": "u_shape", "statement": "Loss is U-shaped in width.", "source": "Section 5",
         "function": "u_shape_evidence"},
        {"id": "not_run_yet", "statement": "A claim the claims file does not cover.", "source": "Table 9",
         "metric": "loss", "treatment": "strong", "control": "weak", "direction": "less"},
        {"id": "posthoc", "statement": "Twin beats weak (noticed after the study).", "source": "Figure 4",
         "metric": "accuracy", "treatment": "twin", "control": "weak", "exploratory": True},
    ],
    "published": [
        {"benchmark": "easy", "method": "strong", "metric": "accuracy", "value": 0.931, "std": 0.004, "source": "Table 2"},
        {"benchmark": "easy", "method": "weak", "metric": "accuracy", "value": 0.702, "source": "Table 2"},
        {"benchmark": "cifar10-sym50", "method": "strong", "metric": "accuracy", "value": 0.887,
         "source": "Table 3", "note": "ResNet-34"},
    ],
}

CLAIMS = [
    {"task": "toyrep", "id": "strong_beats_weak", "statement": "Strong beats weak by a wide margin.",
     "source": "Table 2", "verdict": "reproduced", "effect": 0.2075, "ci_low": 0.2025, "ci_high": 0.2125,
     "p_value": 0.0039, "p_adjusted": 0.0117, "p_refute": 0.9999, "p_refute_adjusted": 1.0, "sign_flip_p": 0.0039,
     "fragile": False, "mde": 0.0081, "seeds_needed": 3, "exploratory": False,
     "n_seeds": 8, "n_pairs": 8, "n_missing": 0, "metric": "accuracy",
     "treatment": "strong", "control": "weak", "direction": "greater", "min_effect": 0.05, "kind": "comparison",
     "note": "", "reason": None, "details": None},
    {"task": "toyrep", "id": "twin_differs", "statement": "Twin differs from strong " + EVIL, "source": "Figure 3",
     "verdict": "inconclusive", "effect": 0.0004, "ci_low": -0.0016, "ci_high": 0.0024, "p_value": 0.41,
     "p_adjusted": 0.82, "p_refute": 0.59, "p_refute_adjusted": 1.0, "sign_flip_p": 0.4, "fragile": False,
     "mde": 0.0035, "seeds_needed": None, "exploratory": False, "n_seeds": 8, "n_pairs": 8, "n_missing": 0, "metric": "accuracy", "treatment": "strong",
     "control": "twin", "direction": "greater", "min_effect": 0.01, "kind": "comparison", "note": "",
     "reason": "CI straddles the minimum effect " + EVIL, "details": None},
    {"task": "toyrep", "id": "u_shape", "statement": "Loss is U-shaped in width.", "source": "Section 5",
     "verdict": "refuted", "effect": -0.12, "ci_low": -0.2, "ci_high": -0.05, "p_value": 0.998, "p_adjusted": 1.0,
     "p_refute": 0.002, "p_refute_adjusted": 0.012, "sign_flip_p": 0.0625, "fragile": True, "mde": 0.09,
     "seeds_needed": 4, "exploratory": False, "n_seeds": 5, "n_pairs": None, "n_missing": 0, "metric": None, "treatment": None, "control": None,
     "direction": "greater", "min_effect": 0.0, "kind": "shape", "note": "width sweep", "reason": None,
     "details": {"fitted_minimum": 12}},
    {"task": "toyrep", "id": "posthoc", "statement": "Twin beats weak (noticed after the study).", "source": "Figure 4",
     "verdict": "undecidable", "effect": 0.2, "ci_low": None, "ci_high": None, "p_value": None, "p_adjusted": None,
     "p_refute": None, "p_refute_adjusted": None, "sign_flip_p": 0.25, "fragile": False, "mde": None,
     "seeds_needed": None, "exploratory": True, "n_seeds": 2, "n_pairs": 2, "n_missing": 6, "metric": "accuracy",
     "treatment": "twin", "control": "weak", "direction": "greater", "min_effect": 0.0, "kind": "comparison",
     "note": "", "reason": "fewer than 3 seeds with a finite effect (2 seeds; need 3)", "details": None},
]


def write_task(root: Path, data: dict[str, Any] | None = None, name: str = "ToyReportTask",
               figures: list[tuple[str, str]] | None = None) -> Task:
    root.mkdir(parents=True, exist_ok=True)
    (root / "task.yaml").write_text(yaml.safe_dump(data or TASK_YAML, sort_keys=False))
    figs = [("Own figure of the task", FIGURE_SVG)] if figures is None else figures

    def task_figures(self, runs, scale):
        return list(figs)

    return type(name, (Task,), {"root": root, "figures": task_figures})()


def empty_task(root: Path) -> Task:
    data = {**TASK_YAML, "name": "lonely", "claims": [], "published": []}
    data["paper"] = {"title": "A paper nobody ran", "authors": ["Nobody"], "year": 2020}
    return write_task(root, data, name="LonelyTask", figures=[])


def frames(scale: str = "small") -> dict[str, Any]:
    """runs, metrics, failures and curves frames for ``toyrep`` at ``scale``."""
    runs, metrics, curves = [], [], {}
    for bench in ("easy", "hard"):
        for variant in ACCURACY:
            for s in SEEDS:
                acc, loss = ACCURACY[variant][s], LOSS[variant][s]
                if bench == "hard":
                    acc, loss = acc - 0.1, loss + 0.1
                    if variant == "weak" and s == 3:
                        continue  # this one failed
                status = "ok" if math.isfinite(acc) else "diverged"
                rid = f"{bench[:1]}{variant[:3]}{s:02d}{scale[:1]}".ljust(16, "0")
                prov = {"python": "3.11.2", "torch": "2.13.0", "hostname": "box1", "git_commit": COMMIT,
                        "git_dirty": False, "cpu": "Toy CPU 9000", "executor": "local"}
                runs.append({
                    "run_id": rid, "task": "toyrep", "task_version": "2", "method": variant, "variant": variant,
                    "benchmark": bench, "seed": s, "scale": scale, "status": status,
                    "started_at": "2025-01-01T00:00:00+00:00", "finished_at": "2025-01-01T00:01:00+00:00",
                    "wall_s": 61.5 + s, "cpu_s": 60.0, "peak_rss_mb": 512.0 + s, "peak_gpu_mb": None, "device": "cpu",
                    "git_commit": COMMIT, "git_dirty": False, "hostname": "box1", "executor": "local",
                    "code_hash": "c0de", "config": {"lr": 0.1}, "info": {}, "record_path": f"/r/{rid}.json",
                    "record_json": json.dumps({"run_id": rid, "provenance": prov}),
                })
                for name, value, hib in (("accuracy", acc, True), ("loss", loss, False)):
                    metrics.append({"run_id": rid, "task": "toyrep", "method": variant, "variant": variant,
                                    "benchmark": bench, "seed": s, "scale": scale, "status": status, "name": name,
                                    "value": value if math.isfinite(value) else float("nan"),
                                    "higher_is_better": hib, "git_commit": COMMIT})
                if status == "ok":
                    curves[rid] = {
                        "train": [{"step": k, "loss": loss + 1.0 / (k + 1)} for k in range(4)],
                        "eval": [{"step": k, "accuracy": acc - 0.1 / (k + 1)} for k in range(0, 4, 2)],
                    }
    failures = pd.DataFrame([{
        "failure_id": "f1", "run_id": f"hweak03{scale[:1]}".ljust(16, "0"), "task": "toyrep", "variant": "weak",
        "method": "weak", "benchmark": "hard", "seed": 3, "scale": scale, "error_type": "RuntimeError",
        "message": "ran out of memory " + EVIL,
        "traceback": 'Traceback (most recent call last):\n  File "toy.py", line 3\nRuntimeError: ran out of memory',
        "started_at": "2025-01-01T00:00:00+00:00", "finished_at": "2025-01-01T00:00:10+00:00",
        "git_commit": COMMIT, "record_path": "/r/failed.json",
    }])
    return {"runs": pd.DataFrame(runs), "metrics": pd.DataFrame(metrics), "failures": failures, "curves": curves}


# -- a small HTML tree ----------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: "Node | None" = None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list["Node"]:
        out = []
        for n in self.iter():
            if tag and n.tag != tag:
                continue
            if cls and cls not in n.classes:
                continue
            if any(n.attrs.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            out.append(n)
        return out

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> "Node":
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls} {attrs}> found"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {})
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, dict(attrs), self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str) -> Node:
    b = _TreeBuilder()
    b.feed(html)
    b.close()
    return b.root
