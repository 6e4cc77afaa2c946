# The front door: `make run` and `make test` do all set-up on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA_DIR ?= .fyp-demo
PORT   ?= 8000
# make test runs the suite in this many worker processes (pytest-xdist): much of it waits on
# servers, browsers and subprocesses, so two workers keep two cores busy.
TEST_WORKERS ?= 2

.PHONY: run test test-faults lint typecheck bench bench-models clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: venv
	$(BIN)/fyp demo --data-dir $(DATA_DIR) --port $(PORT)

test: venv
	@if [ ! -d tests/web/node_modules ] && command -v npm >/dev/null; then \
	  npm ci --prefix tests/web --no-audit --no-fund --loglevel=error; fi
	$(BIN)/pytest -q -m "not faults" -n $(TEST_WORKERS) --dist loadfile

test-faults: venv  # the cluster's fault tests under load (tests/cluster/test_faults_under_load.py)
	$(BIN)/pytest -q -m faults

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/feed_latency.py
	$(BIN)/python bench/erasure.py
	$(BIN)/python bench/ratelimit.py
	$(BIN)/python bench/newcomer.py

bench-models: venv  # the learned models: memory, ANN choice, training throughput, freshness
	$(BIN)/python bench/embedding_memory.py
	$(BIN)/python bench/ann.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/serve_learning.py
	$(BIN)/python bench/learner.py
	$(BIN)/python bench/feed_profile.py
	$(BIN)/python bench/freshness.py

clean:
	rm -rf $(VENV) $(DATA_DIR) $(DATA_DIR).secret build *.egg-info src/*.egg-info
