"""``harness new-task NAME``: a working task plugin a newcomer copies (benchopt's template benchmark).

The scaffold is a real, tiny task: Gaussian blobs, a nearest-class-mean baseline and a
logistic-regression method with a grid and a best-of-sweep selection, one declarative
claim. It passes ``harness validate`` and ships its own test, so a new task starts green.

Two shapes: an in-repo task (``tasks/NAME/`` + ``tests/tasks/NAME/``, registered in this
repo's pyproject.toml, its dataset a line of dvc.yaml) and, with ``--package``, a
pip-installable plugin package (``NAME/pyproject.toml`` with the ``harness.tasks`` entry
point, ``src/NAME/`` with task.yaml, a README and a test) that needs no edit of this repo:
its datasets get DVC stages generated in ``plugins/dvc.yaml`` (:mod:`harness.dvcstages`).
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from harness.config import NAME_RE, ConfigError

INIT = Template('''"""$name: describe the paper this task reproduces in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.api import Metric, RunResult, Task


def build_blobs():
    """Dataset builder: 3 Gaussian blobs in 8-d, fixed seed, train/validation/test splits."""
    import datasets

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 2.0, size=(3, 8))
    splits = {}
    for split, n in (("train", 300), ("validation", 150), ("test", 150)):
        y = np.arange(n) % 3
        x = centers[y] + rng.normal(0, 2.5, size=(n, 8))
        splits[split] = datasets.Dataset.from_dict({"x": x.tolist(), "label": y.tolist()})
    return datasets.DatasetDict(splits)


class ${cls}Task(Task):
    root = Path(__file__).parent

    def datasets(self):
        return {"${name}_blobs": build_blobs}

    def run(self, method, benchmark, config, ctx):
        import torch

        from harness.data import load_dataset

        dd = load_dataset(benchmark.dataset).with_format("numpy")
        xtr, ytr = torch.tensor(dd["train"]["x"], dtype=torch.float32), torch.tensor(dd["train"]["label"])
        evals = {s: (torch.tensor(dd[s]["x"], dtype=torch.float32), torch.tensor(dd[s]["label"]))
                 for s in ("validation", "test")}
        if method.name == "nearest_mean":
            means = torch.stack([xtr[ytr == c].mean(0) for c in range(3)])
            predict = lambda x: torch.cdist(x, means).argmin(1)  # noqa: E731
        else:
            model = torch.nn.Linear(8, 3)
            opt = torch.optim.SGD(model.parameters(), lr=config["lr"], weight_decay=config["wd"])
            for epoch in range(config["epochs"]):
                loss = torch.nn.functional.cross_entropy(model(xtr), ytr)
                opt.zero_grad()
                loss.backward()
                opt.step()
                ctx.log(epoch, curve="train", loss=float(loss))
            predict = lambda x: model(x).argmax(1)  # noqa: E731
        with torch.no_grad():
            acc = {s: 100.0 * float((predict(x) == y).float().mean()) for s, (x, y) in evals.items()}
        return RunResult(metrics=(Metric("val_accuracy", acc["validation"]), Metric("test_accuracy", acc["test"])))


task = ${cls}Task()
''')

YAML = Template('''name: $name
version: 1
description: One line on what this task reproduces.
paper:
  title: "Title of the paper"
  authors: ["First Author", "Second Author"]
  year: 2024
  arxiv: ""
  code: ""
datasets: [${name}_blobs]
metrics: {test_accuracy: higher, val_accuracy: higher}
primary_metric: test_accuracy
methods:
  nearest_mean:
    description: Nearest class mean (the baseline).
  logistic:
    description: Logistic regression trained by full-batch SGD.
    hyperparameters: [lr, wd, epochs]
  logistic_best:
    description: The logistic grid point with the best validation accuracy.
    select: {from: logistic, metric: val_accuracy, mode: max}
scales:
  tiny:
    seeds: [0, 1, 2]
    benchmarks:
      blobs: {dataset: ${name}_blobs}
    defaults: {lr: 0.1, wd: 0.0, epochs: 20}
    methods:
      nearest_mean: {}
      logistic: {grid: {lr: [0.05, 0.2]}}
      logistic_best: {}
  small:
    seeds: [0, 1, 2]
    benchmarks:
      blobs: {dataset: ${name}_blobs}
    defaults: {lr: 0.1, wd: 0.0, epochs: 200}
    methods:
      nearest_mean: {}
      logistic: {grid: {lr: [0.05, 0.2], wd: [0.0, 0.001]}}
      logistic_best: {}
claims:
  - id: logistic_beats_mean
    statement: A tuned logistic regression is more accurate than the nearest-mean baseline.
    source: Table 1
    metric: test_accuracy
    treatment: logistic_best
    control: nearest_mean
    direction: greater
    min_effect: 0.0
published:
  - {benchmark: blobs, method: logistic_best, metric: test_accuracy, value: 80.0, source: Table 1}
''')

README = Template('''# $name

What is reproduced, how the small scale maps to the paper, and the verdicts measured.

| claim | paper | small-scale verdict |
| --- | --- | --- |
| logistic_beats_mean | Table 1 | run `harness claims --scale small --task $name` |
''')

TEST = Template('''"""Tests of the $name task (generated by `harness new-task`)."""

import numpy as np

from $module import build_blobs, task


def test_builder_is_deterministic_and_split():
    a, b = build_blobs(), build_blobs()
    assert {s: a[s].num_rows for s in a} == {"train": 300, "validation": 150, "test": 150}
    assert np.array_equal(np.array(a["test"]["x"]), np.array(b["test"]["x"]))


def test_config_plans_variants_and_selection():
    variants = [v.variant for v in task.config.variants("tiny")]
    assert variants == ["nearest_mean", "logistic[lr=0.05]", "logistic[lr=0.2]", "logistic_best"]
    best = task.config.resolve("tiny", "logistic_best")
    bench = task.config.benchmark("tiny", "blobs")
    assert [r.variant for r in task.requires(best, bench, 0, "tiny")] == ["logistic[lr=0.05]", "logistic[lr=0.2]"]
''')


PYPROJECT = Template('''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "harness task plugin: $name (describe the paper in one line)."
readme = "README.md"
requires-python = ">=3.11"
# The harness itself is the host of this plugin: install it first, in the same environment
# (it is not on PyPI, so it is not listed). Install torch the way the harness's README says.
dependencies = ["numpy", "datasets"]

# The one line that makes this a harness task: `harness tasks` finds it after `pip install`.
[project.entry-points."harness.tasks"]
$name = "$name:task"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
$name = ["task.yaml"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["src"]
''')

PACKAGE_README = Template('''# $name: a harness task plugin

What is reproduced, how the small scale maps to the paper, and the verdicts measured.

```
pip install -e .                 # into the environment that has the harness
harness validate                 # task.yaml, claims, the DAG at every scale
pytest tests                     # this plugin's own tests
snakemake --cores all --config scale=tiny tasks=$name   # from the harness checkout
```

Its dataset (`${name}_blobs`) is built and DVC-tracked by the harness checkout without any edit
there: `harness data stages` (the Snakefile calls it) writes its stage into `plugins/dvc.yaml`.

| claim | paper | small-scale verdict |
| --- | --- | --- |
| logistic_beats_mean | Table 1 | run `harness claims --scale small --task $name` |
''')


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise ConfigError(f"task name {name!r} must be snake_case (a-z, 0-9, _), starting with a letter, "
                          "at most 64 characters")


def new_task(name: str, dest: Path = Path("tasks"), tests_dest: Path | None = None) -> tuple[Path, str]:
    """An in-repo task ``dest/NAME`` and its test; returns (folder, module for the entry point)."""
    _check_name(name)
    folder = Path(dest) / name
    if folder.exists():
        raise ConfigError(f"{folder} already exists: pick another name or delete it")
    pkg = Path(dest).resolve().name
    if not NAME_RE.match(pkg):
        raise ConfigError(f"--dest {dest}: its folder name {pkg!r} must be a Python package name (snake_case)")
    cls = "".join(part.capitalize() for part in name.split("_"))
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(INIT.substitute(name=name, cls=cls))
    (folder / "task.yaml").write_text(YAML.substitute(name=name))
    (folder / "README.md").write_text(README.substitute(name=name))
    tests = Path(tests_dest) if tests_dest else Path(dest).parent / "tests" / "tasks" / name
    tests.mkdir(parents=True, exist_ok=True)
    (tests / f"test_{name}.py").write_text(TEST.substitute(name=name, module=f"{pkg}.{name}"))
    return folder, f"{pkg}.{name}"


def new_package(name: str, dest: Path = Path(".")) -> Path:
    """A pip-installable plugin package ``dest/NAME``: pyproject.toml with the entry point, the
    task in ``src/NAME/`` (task.yaml included as package data), README and a passing test."""
    _check_name(name)
    root = Path(dest) / name
    if root.exists():
        raise ConfigError(f"{root} already exists: pick another name or delete it")
    cls = "".join(part.capitalize() for part in name.split("_"))
    src = root / "src" / name
    src.mkdir(parents=True)
    (src / "__init__.py").write_text(INIT.substitute(name=name, cls=cls))
    (src / "task.yaml").write_text(YAML.substitute(name=name))
    (root / "README.md").write_text(PACKAGE_README.substitute(name=name))
    (root / "pyproject.toml").write_text(PYPROJECT.substitute(name=name, dist=name.replace("_", "-")))
    (root / "tests").mkdir()
    (root / "tests" / f"test_{name}.py").write_text(TEST.substitute(name=name, module=name))
    return root
