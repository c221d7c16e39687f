# CLM: two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME := $(CURDIR)/.dagster_home
export CLM_LAKE ?= $(CURDIR)/data_lake
export CLM_SOURCE ?= synthetic

.PHONY: run test ui bench clean venv home demo-loop

venv: $(STAMP)

# torch first, pinned to the CPU build on this machine's disk; a range that 2.13.0 satisfies then
# installs nothing more (an unpinned torch pulls a multi-GB CUDA build).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

home: $(DAGSTER_HOME)/dagster.yaml

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml | $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@
	$(BIN)/dagster instance concurrency set duckdb_writer 1 >/dev/null

run: $(STAMP) home
	$(BIN)/clm run --source "$(CLM_SOURCE)"

test: $(STAMP) home
	$(BIN)/python -m pytest -q

ui: $(STAMP) home
	set -m; $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The live replay (docs/demo.md): a synthetic market with a planted regime shift released day by day into
# a fresh lake's landing folder while `dagster dev` runs; prints the timeline, stops what it started.
# Its lake and Dagster home are a temp folder of their own (printed, kept for the UI), not the ones above.
demo-loop: $(STAMP) home
	$(BIN)/python scripts/demo_loop.py

# the bench extra (TA-Lib, ta) is installed only here, never by `make test`
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

# neuralforecast, the peer of benchmarks/train.py, in a venv of its own (bench only, git-ignored):
# torch first, pinned to the CPU build, then neuralforecast (it adds lightning, ray, optuna)
NF_VENV := .venv-nf
NF_STAMP := $(NF_VENV)/.installed

$(NF_STAMP):
	@test -x $(NF_VENV)/bin/python || $(PYTHON) -m venv $(NF_VENV)
	$(NF_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(NF_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(NF_VENV)/bin/python -m pip install --quiet neuralforecast==3.3.0
	@touch $@

# every benchmark runs even when an earlier one misses a target; the target fails if any did.
# A failed neuralforecast install does not stop the others: train.py then reports its peer
# targets as skipped.
bench: $(STAMP) $(BENCH_STAMP) home
	@$(MAKE) --no-print-directory $(NF_STAMP) || echo "$(NF_VENV): install FAILED; the neuralforecast peer is skipped"
	@status=0; \
	$(BIN)/python benchmarks/ingest.py || { echo "benchmarks/ingest.py: FAILED (a target missed or an error)"; status=1; }; \
	$(BIN)/python benchmarks/features.py || { echo "benchmarks/features.py: FAILED (a target missed or an error)"; status=1; }; \
	$(BIN)/python benchmarks/train.py || { echo "benchmarks/train.py: FAILED (a target missed or an error)"; status=1; }; \
	$(BIN)/python benchmarks/serving.py || { echo "benchmarks/serving.py: FAILED (a target missed or an error)"; status=1; }; \
	$(BIN)/python benchmarks/drift.py || { echo "benchmarks/drift.py: FAILED (a target missed or an error)"; status=1; }; \
	$(BIN)/python benchmarks/rl.py || { echo "benchmarks/rl.py: FAILED (a target missed or an error)"; status=1; }; \
	$(BIN)/python benchmarks/torch_devices.py || { echo "benchmarks/torch_devices.py: FAILED (a target missed or an error)"; status=1; }; \
	exit $$status

clean:
	rm -rf $(DAGSTER_HOME) .pytest_cache .hypothesis
	find data_lake -mindepth 1 ! -name README.md -exec rm -rf {} +
