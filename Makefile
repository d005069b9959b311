# make reproduce   fresh machine: venv, install, data, every task at `small` scale, report
# make test        fresh machine: venv, install, the whole test suite
# make resume      continue after a killed snakemake (unlock, then rerun incomplete jobs)
# make publish     the committed study: reports/$(SCALE)/ and the task READMEs' verdict tables
# make bench       the harness's own costs at 1k/10k/100k records (~1 h; BENCH_SIZES to change),
#                  written to benchmarks/results/*.json and shown on the report's Performance page
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?= small
CORES ?= all

export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
# Nothing at tiny/small scale may reach a hub: fail fast if something tries.
export HF_DATASETS_OFFLINE := 1
export HF_HUB_OFFLINE := 1

.PHONY: install reproduce resume publish compare test test-fast bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the CPU build on disk; a looser spec would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

reproduce: install
	$(VENV)/bin/snakemake --cores $(CORES) --config scale=$(SCALE)
	$(VENV)/bin/harness publish --scale $(SCALE) --no-ingest
	@echo "open reports/index.html (the published copy: reports/$(SCALE)/index.html)"

# reports/$(SCALE)/ (site, claims.json, runs.parquet) and the README verdict tables, from results/.
publish: install
	$(VENV)/bin/harness publish --scale $(SCALE)

# The regression gate for CI: runs of BASE vs HEAD (both ingested), a Markdown comment, exit 1 on a regression.
BASE ?= HEAD~1
compare: install
	$(VENV)/bin/harness compare $(BASE) HEAD --scale $(SCALE) --format markdown

# After a killed snakemake (README, "After a crash"): drop its stale lock, then continue.
resume: install
	$(VENV)/bin/snakemake --unlock --cores 1 --config scale=$(SCALE)
	$(VENV)/bin/snakemake --cores $(CORES) --config scale=$(SCALE)
	@echo "open reports/index.html"

test: install
	$(PY) -m pytest --durations=40

test-fast: install
	$(PY) -m pytest -m "not slow"

# Run on an idle machine: the numbers are wall and CPU seconds. Kernels: benchmarks/gpu_check.sh on a GPU.
BENCH_SIZES ?= 1000 10000 100000
bench: install
	$(PY) benchmarks/harness_overhead.py
	$(PY) benchmarks/dag_plan.py
	$(PY) benchmarks/registry_scale.py --sizes $(BENCH_SIZES)
	$(PY) benchmarks/report_scale.py --sizes $(BENCH_SIZES)

clean:
	rm -rf results reports .snakemake
